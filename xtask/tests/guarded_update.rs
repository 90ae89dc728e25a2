//! A function's update guards itself with the RevisionId its plan read, instead of reading the
//! function again under the lock. Against the emulator (whose fixes give functions AWS's
//! RevisionId and its check): a change made between plan and apply refuses the update and
//! writes nothing over it; a revision that moved while nothing the plan compared did is sent
//! again; a guarded write whose answer was lost is not mistaken for someone else's; and the
//! alias, guarded by its own RevisionId, is not moved once someone else changed it. Being the
//! last write, and guarded, the alias's move lets the lock go beside it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use common::faults::{DropFirstAnswer, Rule};
use stacks::config::Config;
use stacks::{Resource, Target};
use tokio::sync::Notify;
use xtask::emulator::TestEmulator;
use xtask::engine::apply::{Outcome, Status};
use xtask::engine::plan::{self, Action, Plan};
use xtask::engine::{Ctx, Node};

const ENV: &str = "test";
const FUNCTION: &str = "lambda_function.insert_invoice";
const NAME: &str = "insert-invoice-test";

/// Writes a stand-in zip for every function into `dir`; `variant` changes their bytes.
fn zips(dir: &Path, variant: &str) {
    for f in stacks::invoice_app::FUNCTIONS {
        let body = format!("#!/bin/sh\n# {f}, variant {variant}\n");
        let zip = xtask::build::zip_bootstrap(Path::new("bootstrap"), body.as_bytes()).unwrap();
        std::fs::write(dir.join(format!("{f}.zip")), zip).unwrap();
    }
}

/// insert-invoice and what it depends on, with the zips of `dir`.
fn stack(dir: &Path) -> (Vec<Resource>, BTreeMap<String, String>) {
    let code = xtask::artifacts::read_zips(dir).unwrap();
    let target = Target {
        env: ENV,
        account_id: "123456789012",
        region: "us-east-1",
    };
    let stack = stacks::invoice_app(&Config::default(), &target, &code).without_seed();
    let mut wanted = BTreeSet::from([FUNCTION.to_string()]);
    loop {
        let more: BTreeSet<String> = stack
            .resources
            .iter()
            .filter(|r| wanted.contains(&r.id))
            .flat_map(|r| r.depends_on.iter().cloned())
            .collect();
        if more.is_subset(&wanted) {
            break;
        }
        wanted.extend(more);
    }
    let picked = stack
        .resources
        .into_iter()
        .filter(|r| wanted.contains(&r.id))
        .collect();
    (picked, stack.ownership_tags)
}

fn nodes(resources: &[Resource]) -> Vec<Arc<dyn Node>> {
    resources.iter().map(xtask::providers::bind).collect()
}

fn outcome<'a>(outcomes: &'a [Outcome], id: &str) -> &'a Outcome {
    outcomes
        .iter()
        .find(|o| o.id == id)
        .unwrap_or_else(|| panic!("{id} in {outcomes:?}"))
}

/// Plans and applies `resources` to the end; panics unless every write succeeded.
async fn apply(ctx: &Ctx, resources: &[Resource], tags: &BTreeMap<String, String>) {
    let planned = plan::plan(ctx, ENV, nodes(resources), tags, 4)
        .await
        .unwrap();
    let outcomes = xtask::engine::apply::apply(ctx, &planned, 4).await;
    assert!(
        outcomes.iter().all(|o| o.status == Status::Done),
        "{outcomes:?}"
    );
}

/// The deployed function, and the plan (shown) of its new code from `variant`'s zips.
struct Shown {
    resources: Vec<Resource>,
    tags: BTreeMap<String, String>,
    plan: Plan,
    new_sha: String,
    _dirs: [tempfile::TempDir; 2],
}

async fn deployed_then_planned(ctx: &Ctx) -> Shown {
    let old = tempfile::tempdir().unwrap();
    zips(old.path(), "old");
    let (resources, tags) = stack(old.path());
    apply(ctx, &resources, &tags).await;
    let new = tempfile::tempdir().unwrap();
    zips(new.path(), "new");
    let (resources, tags) = stack(new.path());
    let plan = plan::plan(ctx, ENV, nodes(&resources), &tags, 4)
        .await
        .unwrap();
    let planned = plan.resources.iter().find(|r| r.id == FUNCTION).unwrap();
    assert_eq!(planned.action, Action::Update, "{:?}", planned.changes);
    let new_sha = code_sha(&new.path().join("insert-invoice.zip"));
    Shown {
        resources,
        tags,
        plan,
        new_sha,
        _dirs: [old, new],
    }
}

fn code_sha(zip: &Path) -> String {
    xtask::build::sha256_hex_and_b64(&std::fs::read(zip).unwrap()).1
}

/// What apply does under the lock: the re-plan (which must not read the function again),
/// then the writes.
async fn apply_shown(ctx: &Ctx, shown: &Shown) -> Vec<Outcome> {
    apply_shown_freeing(ctx, shown, &Notify::new()).await
}

/// [`apply_shown`], telling `free` when the lock may go.
async fn apply_shown_freeing(ctx: &Ctx, shown: &Shown, free: &Notify) -> Vec<Outcome> {
    let before = ctx.aws.log.calls().len();
    let again = plan::replan(
        ctx,
        ENV,
        nodes(&shown.resources),
        &shown.tags,
        4,
        &shown.plan,
    )
    .await
    .unwrap();
    let reads: Vec<String> = ctx.aws.log.calls()[before..]
        .iter()
        .map(|c| format!("{}.{}", c.service, c.operation))
        .collect();
    assert!(
        !reads.iter().any(|c| c.starts_with("Lambda.")),
        "the guarded function was read again: {reads:?}"
    );
    xtask::engine::apply::apply_freeing(ctx, &again, 4, free).await
}

/// `$LATEST`'s code, and the code of the version the alias serves.
async fn live(ctx: &Ctx) -> (String, String, usize) {
    let latest = ctx
        .aws
        .lambda
        .get_function()
        .function_name(NAME)
        .send()
        .await
        .unwrap();
    let served = ctx
        .aws
        .lambda
        .get_function()
        .function_name(NAME)
        .qualifier("live")
        .send()
        .await
        .unwrap();
    let versions = ctx
        .aws
        .lambda
        .list_versions_by_function()
        .function_name(NAME)
        .send()
        .await
        .unwrap();
    let sha = |f: &aws_sdk_lambda::operation::get_function::GetFunctionOutput| {
        f.configuration()
            .unwrap()
            .code_sha256()
            .unwrap()
            .to_string()
    };
    (
        sha(&latest),
        sha(&served),
        // `$LATEST` is listed too.
        versions.versions().len() - 1,
    )
}

/// The update went through: `$LATEST` and the alias hold the new code, in exactly one version
/// more than the `versions` there were.
async fn assert_new_code_served(ctx: &Ctx, shown: &Shown, outcomes: &[Outcome], versions: usize) {
    assert_eq!(
        outcome(outcomes, FUNCTION).status,
        Status::Done,
        "{outcomes:?}"
    );
    let (latest, served, after) = live(ctx).await;
    assert_eq!(latest, shown.new_sha);
    assert_eq!(served, shown.new_sha, "the alias serves the new code");
    assert_eq!(after, versions + 1, "exactly one version published");
}

#[tokio::test(flavor = "multi_thread")]
async fn code_changed_between_plan_and_apply_refuses_the_update() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let shown = deployed_then_planned(&ctx).await;
    let (_, _, versions) = live(&ctx).await;

    // Another run deploys other code between this run's plan and its lock.
    let theirs = tempfile::tempdir().unwrap();
    zips(theirs.path(), "theirs");
    let zip = std::fs::read(theirs.path().join("insert-invoice.zip")).unwrap();
    ctx.aws
        .lambda
        .update_function_code()
        .function_name(NAME)
        .zip_file(zip.into())
        .send()
        .await
        .unwrap();

    let outcomes = apply_shown(&ctx, &shown).await;
    let f = outcome(&outcomes, FUNCTION);
    assert_eq!(f.status, Status::Failed, "{outcomes:?}");
    let error = f.error.as_deref().unwrap_or_default();
    assert!(error.contains("changed since the plan read it"), "{error}");
    let (latest, _, after) = live(&ctx).await;
    assert_eq!(
        latest,
        code_sha(&theirs.path().join("insert-invoice.zip")),
        "their code is left in place"
    );
    assert_ne!(latest, shown.new_sha);
    assert_eq!(after, versions, "nothing was published");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revision_that_moved_alone_is_sent_again() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let shown = deployed_then_planned(&ctx).await;
    let (_, _, versions) = live(&ctx).await;

    // A change to something the plan does not compare moves the revision only.
    ctx.aws
        .lambda
        .update_function_configuration()
        .function_name(NAME)
        .description("touched")
        .send()
        .await
        .unwrap();

    let outcomes = apply_shown(&ctx, &shown).await;
    assert_new_code_served(&ctx, &shown, &outcomes, versions).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_the_guarded_write_is_taken_as_ours() {
    let emu = TestEmulator::start().await;
    let direct = common::emulator_ctx(&emu).await;
    let shown = deployed_then_planned(&direct).await;
    let (_, _, versions) = live(&direct).await;

    // The first UpdateFunctionCode is executed, its answer lost; the SDK sends it again with
    // the same (now stale) RevisionId.
    let proxy = DropFirstAnswer::start(
        emu.port(),
        vec![Rule::new("UpdateFunctionCode", |r| {
            r.method == "PUT" && r.path.ends_with("/code")
        })],
    );
    let ctx = common::ctx_with(common::clients_at(proxy.endpoint()).await);
    let outcomes = apply_shown(&ctx, &shown).await;
    assert_eq!(proxy.dropped(), [("UpdateFunctionCode", 1)]);
    assert_new_code_served(&direct, &shown, &outcomes, versions).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_changed_between_plan_and_apply_is_not_moved() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let shown = deployed_then_planned(&ctx).await;
    let (old, _, _) = live(&ctx).await;

    // Someone changes the alias (not `$LATEST`) between this run's plan and its lock.
    ctx.aws
        .lambda
        .update_alias()
        .function_name(NAME)
        .name("live")
        .description("touched")
        .send()
        .await
        .unwrap();

    let outcomes = apply_shown(&ctx, &shown).await;
    let f = outcome(&outcomes, FUNCTION);
    assert_eq!(f.status, Status::Failed, "{outcomes:?}");
    let error = f.error.as_deref().unwrap_or_default();
    assert!(error.contains("alias live"), "{error}");
    assert!(error.contains("changed since the plan read it"), "{error}");
    let (latest, served, _) = live(&ctx).await;
    assert_eq!(latest, shown.new_sha, "the new code is published");
    assert_eq!(served, old, "the alias still serves the old code");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_may_go_while_the_guarded_alias_moves() {
    let emu = TestEmulator::start().await;
    let direct = common::emulator_ctx(&emu).await;
    let shown = deployed_then_planned(&direct).await;

    // The alias's move hangs: whatever happens while it is in flight happens before its end.
    let proxy = DropFirstAnswer::start(
        emu.port(),
        vec![Rule::hold("UpdateAlias", |r| {
            r.method == "PUT" && r.path.contains("/aliases/")
        })],
    );
    let ctx = common::ctx_with(common::clients_at(proxy.endpoint()).await);
    let free = Notify::new();
    let apply = apply_shown_freeing(&ctx, &shown, &free);
    tokio::pin!(apply);
    let minute = || tokio::time::sleep(std::time::Duration::from_secs(60));
    tokio::select! {
        outcomes = &mut apply => panic!("the held UpdateAlias answered: {outcomes:?}"),
        () = free.notified() => {}
        () = minute() => panic!("the lock was not freed"),
    }
    // Told after the code update...
    let (latest, _, _) = live(&direct).await;
    assert_eq!(latest, shown.new_sha, "told before the code was updated");
    // ...and the alias's move is what is left in flight: it hangs, and the apply with it.
    let held = async {
        while proxy.dropped() != [("UpdateAlias", 1)] {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        outcomes = &mut apply => panic!("the held UpdateAlias answered: {outcomes:?}"),
        () = held => {}
        () = minute() => panic!("the alias was never moved"),
    }
}
