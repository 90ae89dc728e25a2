//! The change-set flow: validate the template, create a change set, show it as a plan (the
//! direct engine's [`Plan`], so the same renderer and JSON), execute it, follow the stack's
//! events until it settles, read the outputs, and delete the stack.
//!
//! Every call goes through the shared clients (so it is counted and logged) and every wait
//! through `engine::retry`. Nothing here knows the invoice app: it deploys any template.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aws_sdk_cloudformation::types::{
    Capability, ChangeAction, ChangeSetStatus, ChangeSetType, Replacement, RequiresRecreation,
    StackStatus, Tag,
};
use serde_json::{Value, json};

use crate::engine::plan::{Action, Plan, Planned};
use crate::engine::retry::{Backoff, wait_until};
use crate::engine::{Change, Ctx};
use crate::providers::error_code;

/// The plan `kind` of a template resource: its CloudFormation type.
const KIND: &str = "cloudformation";

/// A stack as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveStack {
    pub id: String,
    pub status: StackStatus,
    pub tags: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
}

impl LiveStack {
    /// A stack that only holds a change set never executed: nothing was deployed yet.
    pub fn is_review_only(&self) -> bool {
        self.status == StackStatus::ReviewInProgress
    }
}

/// The live stack, or `None` when there is none (or only a deleted one).
pub async fn read(ctx: &Ctx, stack: &str) -> Result<Option<LiveStack>> {
    let out = match ctx
        .aws
        .cloudformation
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
    {
        Ok(o) => o,
        // A missing stack is a plain ValidationError (no typed variant exists for it).
        Err(e) if error_code(&e) == Some("ValidationError") => return Ok(None),
        Err(e) => return Err(e).context("DescribeStacks"),
    };
    let Some(s) = out.stacks().first() else {
        return Ok(None);
    };
    let status = s
        .stack_status()
        .cloned()
        .unwrap_or(StackStatus::DeleteComplete);
    if status == StackStatus::DeleteComplete {
        return Ok(None);
    }
    Ok(Some(LiveStack {
        id: s.stack_id().unwrap_or_default().to_string(),
        status,
        tags: s
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        outputs: s
            .outputs()
            .iter()
            .map(|o| {
                (
                    o.output_key().unwrap_or_default().to_string(),
                    o.output_value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    }))
}

/// The template the stack runs now, as JSON.
pub async fn current_template(ctx: &Ctx, stack: &str) -> Result<Option<Value>> {
    let out = ctx
        .aws
        .cloudformation
        .get_template()
        .stack_name(stack)
        .send()
        .await
        .context("GetTemplate")?;
    Ok(out
        .template_body()
        .and_then(|b| serde_json::from_str(b).ok()))
}

/// Whether `stack` exists (not merely under review) and runs exactly `template` with `tags`:
/// then there is nothing to change.
pub async fn runs(
    ctx: &Ctx,
    live: Option<&LiveStack>,
    stack: &str,
    template: &Value,
    tags: &BTreeMap<String, String>,
) -> Result<bool> {
    let Some(l) = live.filter(|l| !l.is_review_only()) else {
        return Ok(false);
    };
    Ok(&l.tags == tags && current_template(ctx, stack).await?.as_ref() == Some(template))
}

/// A change set created and described, ready to show and execute.
#[derive(Debug)]
pub struct ChangeSet {
    pub stack: String,
    pub id: String,
    /// The stack did not exist: executing creates it, discarding must delete it too.
    pub creates_stack: bool,
}

/// Creates a change set of `template` against `stack` (ValidateTemplate first) and describes
/// it as a [`Plan`]. `None` when the stack already runs exactly this template and tags: no
/// change set is created then (an empty one would only fail).
pub async fn plan(
    ctx: &Ctx,
    env: &str,
    stack: &str,
    template: &Value,
    tags: &BTreeMap<String, String>,
) -> Result<(Option<ChangeSet>, Plan)> {
    let cf = &ctx.aws.cloudformation;
    let body = serde_json::to_string(template).context("serialising the template")?;
    cf.validate_template()
        .template_body(&body)
        .send()
        .await
        .context("ValidateTemplate")?;
    let live = read(ctx, stack).await?;
    let empty = |resources| Plan {
        env: env.to_string(),
        account_id: ctx.account_id.clone(),
        region: ctx.region.clone(),
        resources,
        nodes: Vec::new(),
    };
    let creates_stack = live.as_ref().is_none_or(LiveStack::is_review_only);
    if runs(ctx, live.as_ref(), stack, template, tags).await? {
        let unchanged = template["Resources"]
            .as_object()
            .map(|rs| {
                rs.iter()
                    .map(|(id, r)| planned(id, r, Action::NoOp, Vec::new()))
                    .collect()
            })
            .unwrap_or_default();
        return Ok((None, empty(unchanged)));
    }
    let name = format!(
        "xtask-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let created = cf
        .create_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .change_set_type(if creates_stack {
            ChangeSetType::Create
        } else {
            ChangeSetType::Update
        })
        .template_body(&body)
        .capabilities(Capability::CapabilityNamedIam)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .send()
        .await
        .context("CreateChangeSet")?;
    let id = created.id().unwrap_or(&name).to_string();
    let resources = describe(ctx, stack, &id, template).await?;
    let plan = empty(resources);
    Ok((
        Some(ChangeSet {
            stack: stack.to_string(),
            id,
            creates_stack,
        }),
        plan,
    ))
}

fn planned(logical: &str, r: &Value, action: Action, changes: Vec<Change>) -> Planned {
    Planned {
        id: r
            .pointer("/Metadata/Xtask/ResourceId")
            .and_then(Value::as_str)
            .map_or_else(|| logical.to_string(), |id| format!("{id} ({logical})")),
        kind: KIND,
        name: r["Type"].as_str().unwrap_or_default().to_string(),
        action,
        changes,
        details: Vec::new(),
        blocked: None,
        depends_on: Vec::new(),
    }
}

/// Waits for the change set to be computed and turns its changes into planned actions.
async fn describe(ctx: &Ctx, stack: &str, id: &str, template: &Value) -> Result<Vec<Planned>> {
    let cf = &ctx.aws.cloudformation;
    wait_until(
        "the change set to be computed",
        Backoff::wait(ctx.wait_timeout),
        || async {
            let d = cf
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(id)
                .send()
                .await
                .context("DescribeChangeSet")?;
            match d.status() {
                Some(ChangeSetStatus::CreateComplete) => Ok(Some(())),
                Some(ChangeSetStatus::Failed) => bail!(
                    "change set failed: {}",
                    d.status_reason().unwrap_or("no reason given")
                ),
                _ => Ok(None),
            }
        },
    )
    .await?;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let d = cf
            .describe_change_set()
            .stack_name(stack)
            .change_set_name(id)
            .include_property_values(true)
            .set_next_token(token.clone())
            .send()
            .await
            .context("DescribeChangeSet")?;
        for c in d.changes() {
            let Some(rc) = c.resource_change() else {
                continue;
            };
            let logical = rc.logical_resource_id().unwrap_or_default();
            let resource = template["Resources"]
                .get(logical)
                .cloned()
                .unwrap_or_else(|| json!({"Type": rc.resource_type().unwrap_or_default()}));
            let action = match rc.action() {
                Some(ChangeAction::Add) => Action::Create,
                Some(ChangeAction::Remove) => Action::Delete,
                _ if rc.replacement() == Some(&Replacement::True) => Action::Replace,
                _ => Action::Update,
            };
            let changes = match action {
                // What a created resource will be: its properties, as the direct engine
                // shows the fields of a create.
                Action::Create => resource["Properties"]
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| Change {
                                field: k.clone(),
                                old: Value::Null,
                                new: v.clone(),
                                forces_replacement: false,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                Action::Delete => Vec::new(),
                _ => rc
                    .details()
                    .iter()
                    .filter_map(|d| d.target())
                    .map(|t| Change {
                        field: t
                            .path()
                            .or(t.name())
                            .map(|p| p.trim_start_matches('/').to_string())
                            .or_else(|| t.attribute().map(|a| a.as_str().to_string()))
                            .unwrap_or_default(),
                        old: t.before_value().map_or(Value::Null, |v| json!(v)),
                        new: t.after_value().map_or(json!("(changed)"), |v| json!(v)),
                        forces_replacement: t.requires_recreation()
                            == Some(&RequiresRecreation::Always),
                    })
                    .collect(),
            };
            let mut p = planned(logical, &resource, action, changes);
            if let Some(phys) = rc.physical_resource_id() {
                p.details.push(format!("physical id {phys}"));
            }
            out.push(p);
        }
        token = d.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // Everything in the template that the change set leaves alone.
    let touched: BTreeSet<String> = out.iter().map(|p| p.id.clone()).collect();
    if let Some(rs) = template["Resources"].as_object() {
        for (logical, r) in rs {
            let p = planned(logical, r, Action::NoOp, Vec::new());
            if !touched.contains(&p.id) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Drops a change set that will not be executed (and the empty stack a create left).
pub async fn discard(ctx: &Ctx, cs: &ChangeSet) -> Result<()> {
    let cf = &ctx.aws.cloudformation;
    cf.delete_change_set()
        .stack_name(&cs.stack)
        .change_set_name(&cs.id)
        .send()
        .await
        .context("DeleteChangeSet")?;
    if cs.creates_stack {
        cf.delete_stack()
            .stack_name(&cs.stack)
            .send()
            .await
            .context("DeleteStack (the review-only stack of a discarded change set)")?;
    }
    Ok(())
}

/// Executes the change set and follows the stack's events until it settles.
pub async fn execute(ctx: &Ctx, cs: &ChangeSet) -> Result<LiveStack> {
    let since = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    ctx.aws
        .cloudformation
        .execute_change_set()
        .stack_name(&cs.stack)
        .change_set_name(&cs.id)
        .send()
        .await
        .context("ExecuteChangeSet")?;
    settle(ctx, &cs.stack, since, "deploying").await
}

/// Deletes the stack and follows its events until it is gone. Deleting what is gone succeeds.
pub async fn delete(ctx: &Ctx, stack: &str) -> Result<()> {
    if read(ctx, stack).await?.is_none() {
        return Ok(());
    }
    let since = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    ctx.aws
        .cloudformation
        .delete_stack()
        .stack_name(stack)
        .send()
        .await
        .context("DeleteStack")?;
    match settle(ctx, stack, since, "deleting").await {
        Ok(_) => Ok(()),
        Err(e) if e.downcast_ref::<Gone>().is_some() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The stack disappeared while we followed it (a finished delete).
#[derive(Debug, thiserror::Error)]
#[error("the stack is gone")]
struct Gone;

/// Polls the stack (printing each new event to stderr) until its status is final.
async fn settle(
    ctx: &Ctx,
    stack: &str,
    since: aws_smithy_types::DateTime,
    what: &str,
) -> Result<LiveStack> {
    let seen = std::sync::Mutex::new(BTreeSet::<String>::new());
    let policy = Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(5),
        deadline: ctx.wait_timeout,
    };
    let last = wait_until(&format!("stack {stack} {what}"), policy, || async {
        print_events(ctx, stack, since, &seen).await?;
        let Some(live) = read(ctx, stack).await? else {
            return Err(Gone.into());
        };
        Ok(is_final(&live.status).then_some(live))
    })
    .await?;
    if !is_success(&last.status) {
        bail!(
            "stack {stack} ended {}: see the events above",
            last.status.as_str()
        );
    }
    Ok(last)
}

fn is_final(s: &StackStatus) -> bool {
    let s = s.as_str();
    (s.ends_with("_COMPLETE") || s.ends_with("_FAILED")) && !s.ends_with("CLEANUP_IN_PROGRESS")
}

fn is_success(s: &StackStatus) -> bool {
    matches!(
        s,
        StackStatus::CreateComplete
            | StackStatus::UpdateComplete
            | StackStatus::DeleteComplete
            | StackStatus::ImportComplete
    )
}

async fn print_events(
    ctx: &Ctx,
    stack: &str,
    since: aws_smithy_types::DateTime,
    seen: &std::sync::Mutex<BTreeSet<String>>,
) -> Result<()> {
    let out = match ctx
        .aws
        .cloudformation
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if error_code(&e) == Some("ValidationError") => return Ok(()),
        Err(e) => return Err(e).context("DescribeStackEvents"),
    };
    // Newest first from the API; shown oldest first.
    let mut fresh: Vec<_> = out
        .stack_events()
        .iter()
        .filter(|e| e.timestamp().is_some_and(|t| t.secs() >= since.secs()))
        .filter(|e| {
            seen.lock()
                .expect("event set poisoned")
                .insert(e.event_id().unwrap_or_default().to_string())
        })
        .collect();
    fresh.reverse();
    for e in fresh {
        eprintln!(
            "  {} {:<28} {:<40} {}{}",
            e.timestamp()
                .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
                .unwrap_or_default(),
            e.resource_status().map(|s| s.as_str()).unwrap_or_default(),
            e.resource_type().unwrap_or_default(),
            e.logical_resource_id().unwrap_or_default(),
            e.resource_status_reason()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
