//! `plan`, `apply` and `destroy` with `--engine cloudformation`: the commands' flows on top of
//! [`deploy`], with the same plan rendering, `--json` document and exit codes as the direct
//! engine.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use stacks::names::{MANAGED_BY_CLOUDFORMATION, TAG_MANAGED_BY};
use stacks::{Code, Spec, Stack};

use super::deploy::{self, ChangeSet};
use crate::cmd::exit;
use crate::engine::plan::{Action, Plan};
use crate::engine::render;
use crate::providers::{self, error_code};
use crate::session::{Global, Output, Session, confirm};

/// The stack's name and tags, and the template, of a session.
pub struct Prepared {
    pub stack_name: String,
    pub tags: BTreeMap<String, String>,
    pub template: super::template::Template,
}

/// The code map a session's stack was built with (the template references the same zips).
fn code_of(stack: &Stack) -> BTreeMap<String, Code> {
    let mut out = BTreeMap::new();
    for f in stacks::invoice_app::FUNCTIONS {
        let Some(Spec::Function(spec)) = stack
            .get(&stacks::invoice_app::function_id(f))
            .map(|r| &r.spec)
        else {
            continue;
        };
        let zip_path = match stack
            .get(&stacks::invoice_app::artifact_id(f))
            .map(|r| &r.spec)
        {
            Some(Spec::Object(o)) => o.source.clone(),
            _ => Default::default(),
        };
        out.insert(
            f.to_string(),
            Code {
                size_bytes: std::fs::metadata(&zip_path).map(|m| m.len()).unwrap_or(0),
                zip_path,
                sha256_hex: spec.code_sha256_hex.clone(),
                sha256_b64: spec.code_sha256_b64.clone(),
            },
        );
    }
    out
}

pub fn prepare(session: &Session) -> Prepared {
    let names = &session.names;
    let mut tags = session.stack.ownership_tags.clone();
    tags.insert(TAG_MANAGED_BY.into(), MANAGED_BY_CLOUDFORMATION.into());
    Prepared {
        stack_name: names.cloudformation_stack(),
        tags,
        template: super::synth(&session.config, &session.env, &code_of(&session.stack)),
    }
}

/// Refuses an environment the direct engine deployed: its artifacts bucket (which both
/// engines always create) carries the direct engine's ownership tags. One GetBucketTagging.
pub async fn refuse_direct_owned(session: &Session) -> Result<()> {
    let Some(Spec::Bucket(bucket)) = session
        .stack
        .get(stacks::invoice_app::ARTIFACTS_BUCKET)
        .map(|r| &r.spec)
    else {
        return Ok(());
    };
    let tags = match session
        .ctx
        .aws
        .s3
        .get_bucket_tagging()
        .bucket(&bucket.name)
        .send()
        .await
    {
        Ok(t) => t,
        // No bucket, or a bucket without tags: not the direct engine's.
        Err(e) if matches!(error_code(&e), Some("NoSuchBucket" | "NoSuchTagSet")) => {
            return Ok(());
        }
        Err(e) => return Err(e).context("GetBucketTagging (which engine owns the environment)"),
    };
    let live: BTreeMap<String, String> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    if crate::engine::owns(&session.stack.ownership_tags, &live) {
        bail!(
            "env `{}` is deployed by the direct engine (bucket {} is tagged {TAG_MANAGED_BY}={}); \
             refusing to take it over with CloudFormation. Destroy it with `cargo xtask destroy \
             --env {}` first, or keep using the direct engine",
            session.env,
            bucket.name,
            stacks::names::MANAGED_BY,
            session.env
        );
    }
    Ok(())
}

/// Refuses an environment the CloudFormation engine deployed: its stack exists.
pub async fn refuse_cloudformation_owned(session: &Session) -> Result<()> {
    let names = &session.names;
    let stack = names.cloudformation_stack();
    if let Some(live) = deploy::read(&session.ctx, &stack).await? {
        bail!(
            "env `{}` is deployed by the CloudFormation engine (stack {stack}, {}); refusing to \
             take it over with the direct engine. Use `--engine cloudformation`, or destroy it \
             with `cargo xtask destroy --env {} --engine cloudformation` first",
            session.env,
            live.status.as_str(),
            session.env
        );
    }
    Ok(())
}

fn show(g: &Global, plan: &Plan, title: &str, command: &str, session: &Session, to_stdout: bool) {
    let out = Output::of(g);
    out.text(&render::plan_text(plan, title));
    if to_stdout {
        out.document(render::json(
            plan,
            command,
            None,
            session.ctx.aws.log.counts(),
        ));
    }
}

/// Uploads the function zips the template references (content-addressed: present ones are
/// left alone). The artifacts bucket must exist.
pub async fn upload(session: &Session) -> Result<usize> {
    let mut uploaded = 0;
    for r in super::artifacts(&session.stack) {
        let node = providers::bind(r);
        let seen = node
            .observe(
                &session.ctx,
                &session.stack.ownership_tags,
                crate::engine::Pass::Plan,
            )
            .await
            .with_context(|| format!("looking for {}", node.name()))?;
        if !seen.exists {
            node.create(&session.ctx)
                .await
                .with_context(|| format!("uploading {}", node.name()))?;
            uploaded += 1;
        }
    }
    Ok(uploaded)
}

/// `plan --engine cloudformation`: a change set, shown and discarded.
pub async fn plan(g: &Global, session: &Session, detailed_exitcode: bool) -> Result<u8> {
    refuse_direct_owned(session).await?;
    let p = prepare(session);
    let (cs, plan) = deploy::plan(
        &session.ctx,
        &session.env,
        &p.stack_name,
        &p.template.body,
        &p.tags,
    )
    .await?;
    if let Some(cs) = &cs {
        deploy::discard(&session.ctx, cs).await?;
    }
    show(g, &plan, "Change set", "plan", session, true);
    Ok(if detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

async fn run_change_set(
    g: &Global,
    session: &Session,
    p: &Prepared,
    template: &Value,
    title: &str,
    yes: bool,
) -> Result<Option<deploy::LiveStack>> {
    let ctx = &session.ctx;
    let (cs, plan) = deploy::plan(ctx, &session.env, &p.stack_name, template, &p.tags).await?;
    let Some(cs) = cs else {
        show(g, &plan, title, "apply", session, false);
        return deploy::read(ctx, &p.stack_name).await;
    };
    show(g, &plan, title, "apply", session, false);
    let question = format!(
        "Execute this change set on stack {} (env `{}`, account {})?",
        p.stack_name, session.env, ctx.account_id
    );
    if let Err(e) = confirm(&question, "yes", yes) {
        discard_quietly(session, &cs).await;
        return Err(e);
    }
    eprintln!("executing change set {}...", cs.id);
    deploy::execute(ctx, &cs).await.map(Some)
}

async fn discard_quietly(session: &Session, cs: &ChangeSet) {
    if let Err(e) = deploy::discard(&session.ctx, cs).await {
        eprintln!("warning: could not delete change set {}: {e:#}", cs.id);
    }
}

/// `apply --engine cloudformation`: bootstrap (artifacts bucket) when the stack is new, upload
/// the code, then the whole template's change set; prints the outputs. Holds the environment's
/// lock, the same one the direct engine takes: CloudFormation refuses a second update of a stack
/// in progress, but not a second bootstrap, upload or purge.
pub async fn apply(g: &Global, session: &Session, yes: bool, break_lock: bool) -> Result<u8> {
    refuse_direct_owned(session).await?;
    // A stack that runs this very template needs no lock: a second apply writes nothing.
    let p = prepare(session);
    let live = deploy::read(&session.ctx, &p.stack_name).await?;
    if deploy::runs(
        &session.ctx,
        live.as_ref(),
        &p.stack_name,
        &p.template.body,
        &p.tags,
    )
    .await?
    {
        return apply_locked(g, session, yes).await;
    }
    locked(session, "apply", break_lock, apply_locked(g, session, yes)).await
}

/// Runs `work` under the environment's lock.
async fn locked(
    session: &Session,
    command: &str,
    break_lock: bool,
    work: impl std::future::Future<Output = Result<u8>>,
) -> Result<u8> {
    crate::lock::Lock::hold(
        &session.ctx,
        &crate::lock::Place::of(&session.names),
        command,
        &prepare(session).tags,
        break_lock,
        None,
        work,
    )
    .await
}

async fn apply_locked(g: &Global, session: &Session, yes: bool) -> Result<u8> {
    let ctx = &session.ctx;
    let p = prepare(session);
    let live = deploy::read(ctx, &p.stack_name).await?;
    if live.as_ref().is_none_or(deploy::LiveStack::is_review_only) {
        eprintln!(
            "stack {} does not exist yet: creating it with the artifacts bucket alone first, so \
             the functions' code can be uploaded before CloudFormation needs it",
            p.stack_name
        );
        let boot = super::bootstrap(&super::portable_stack(
            &session.config,
            &session.env,
            &code_of(&session.stack),
        ));
        run_change_set(g, session, &p, &boot.body, "Bootstrap change set", yes).await?;
    }
    let uploaded = upload(session).await?;
    eprintln!("artifacts: {uploaded} uploaded");
    let live = run_change_set(g, session, &p, &p.template.body, "Change set", yes).await?;
    let outputs = live.map(|l| l.outputs).unwrap_or_default();
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "format_version": render::FORMAT_VERSION,
                "command": "apply",
                "engine": "cloudformation",
                "stack": p.stack_name,
                "outputs": outputs,
                "api_calls": ctx.aws.log.counts(),
            }))
            .expect("the document serialises")
        );
    } else if outputs.is_empty() {
        println!("Stack {} reports no outputs.", p.stack_name);
    } else {
        println!("Outputs of stack {}:", p.stack_name);
        for (k, v) in &outputs {
            println!("  {k} = {v}");
        }
    }
    Ok(exit::OK)
}

/// `destroy --engine cloudformation`: purge the buckets' versions, then delete the stack.
pub async fn destroy(g: &Global, session: &Session, yes: bool, break_lock: bool) -> Result<u8> {
    // Destroying what is gone takes no lock: a second destroy writes nothing.
    let stack_name = prepare(session).stack_name;
    if deploy::read(&session.ctx, &stack_name).await?.is_none() {
        eprintln!("stack {stack_name} does not exist: nothing to destroy");
        return Ok(exit::OK);
    }
    locked(
        session,
        "destroy",
        break_lock,
        destroy_locked(g, session, yes),
    )
    .await
}

async fn destroy_locked(g: &Global, session: &Session, yes: bool) -> Result<u8> {
    let ctx = &session.ctx;
    let p = prepare(session);
    let Some(live) = deploy::read(ctx, &p.stack_name).await? else {
        eprintln!("stack {} does not exist: nothing to destroy", p.stack_name);
        return Ok(exit::OK);
    };
    if live.tags.get(TAG_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_CLOUDFORMATION) {
        bail!(
            "stack {} is not tagged {TAG_MANAGED_BY}={MANAGED_BY_CLOUDFORMATION}: not ours, left alone",
            p.stack_name
        );
    }
    let current = deploy::current_template(ctx, &p.stack_name)
        .await?
        .unwrap_or_default();
    let mut plan = Plan {
        env: session.env.clone(),
        account_id: ctx.account_id.clone(),
        region: ctx.region.clone(),
        resources: Vec::new(),
        nodes: Vec::new(),
    };
    let buckets: Vec<String> = session
        .stack
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Bucket(b) => Some(b.name.clone()),
            _ => None,
        })
        .collect();
    if let Some(rs) = current["Resources"].as_object() {
        for (logical, r) in rs {
            let mut planned = crate::engine::plan::Planned {
                id: r
                    .pointer("/Metadata/Xtask/ResourceId")
                    .and_then(Value::as_str)
                    .map_or_else(|| logical.clone(), |id| format!("{id} ({logical})")),
                kind: "cloudformation",
                name: r["Type"].as_str().unwrap_or_default().to_string(),
                action: Action::Delete,
                changes: Vec::new(),
                details: Vec::new(),
                blocked: None,
                depends_on: Vec::new(),
            };
            if r.get("DeletionPolicy").and_then(Value::as_str) == Some("Retain") {
                planned.action = Action::NoOp;
            }
            plan.resources.push(planned);
        }
    }
    for b in &buckets {
        if let Ok((versions, markers)) = providers::s3_bucket::count_versions(ctx, b).await {
            eprintln!(
                "bucket {b}: {versions} object versions and {markers} delete markers to purge"
            );
        }
    }
    show(g, &plan, "Destroy plan", "destroy", session, false);
    confirm(
        &format!(
            "Delete stack {} of env `{}` in account {}?",
            p.stack_name, session.env, ctx.account_id
        ),
        &session.env,
        yes,
    )?;
    // CloudFormation cannot delete a bucket that holds versions: empty them first.
    for b in &buckets {
        providers::s3_bucket::purge(ctx, b)
            .await
            .with_context(|| format!("purging bucket {b}"))?;
    }
    deploy::delete(ctx, &p.stack_name).await?;
    if g.json {
        println!(
            "{}",
            render::json(&plan, "destroy", None, ctx.aws.log.counts())
        );
    }
    eprintln!("Destroy complete: stack {} deleted", p.stack_name);
    Ok(exit::OK)
}
