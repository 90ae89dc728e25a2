//! What apply reads again under the lock, against the emulator: what the shown plan acts on,
//! except creates that converge whatever another run made meanwhile (named creates that fail
//! with "already exists", upserts). An unnamed create is read again, so that a resource another
//! run made meanwhile changes the plan instead of being made twice.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use stacks::config::Config;
use stacks::{Resource, Target};
use xtask::emulator::TestEmulator;
use xtask::engine::plan::{self, Action, Plan};
use xtask::engine::{Ctx, Node};

const ENV: &str = "test";
const LOG_GROUP: &str = "log_group.api_access";
const API_KEY: &str = "api_key.default";

/// A log group (a named create) and the API key (an unnamed one) of the invoice app.
fn stack() -> (Vec<Resource>, BTreeMap<String, String>) {
    let target = Target {
        env: ENV,
        account_id: "123456789012",
        region: "us-east-1",
    };
    let stack = stacks::invoice_app(&Config::default(), &target, &BTreeMap::new());
    let picked = stack
        .resources
        .into_iter()
        .filter(|r| r.id == LOG_GROUP || r.id == API_KEY)
        .map(|mut r| {
            r.depends_on.clear();
            r
        })
        .collect::<Vec<_>>();
    assert_eq!(picked.len(), 2);
    (picked, stack.ownership_tags)
}

fn nodes(resources: &[Resource]) -> Vec<Arc<dyn Node>> {
    resources.iter().map(xtask::providers::bind).collect()
}

/// The plan shown before the lock: both resources to create.
async fn shown(ctx: &Ctx, resources: &[Resource], tags: &BTreeMap<String, String>) -> Plan {
    let shown = plan::plan(ctx, ENV, nodes(resources), tags, 4)
        .await
        .unwrap();
    assert_eq!(action(&shown, LOG_GROUP), Action::Create);
    assert_eq!(action(&shown, API_KEY), Action::Create);
    shown
}

fn action(plan: &Plan, id: &str) -> Action {
    plan.resources
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("{id} in the plan"))
        .action
}

fn calls_since(ctx: &Ctx, before: usize) -> Vec<String> {
    ctx.aws.log.calls()[before..]
        .iter()
        .map(|c| format!("{}.{}", c.service, c.operation))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_unnamed_create_is_read_again() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let (resources, tags) = stack();
    let shown = shown(&ctx, &resources, &tags).await;

    let before = ctx.aws.log.calls().len();
    let again = plan::replan(&ctx, ENV, nodes(&resources), &tags, 4, &shown)
        .await
        .unwrap();
    assert_eq!(calls_since(&ctx, before), ["API Gateway.GetApiKeys"]);
    assert_eq!(action(&again, LOG_GROUP), Action::Create);
    assert_eq!(action(&again, API_KEY), Action::Create);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_another_run_made_meanwhile_changes_the_plan() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let (resources, tags) = stack();
    let shown = shown(&ctx, &resources, &tags).await;
    // Another run of the same stack creates the key between this run's plan and its lock.
    let key = nodes(&resources)
        .into_iter()
        .find(|n| n.id() == API_KEY)
        .unwrap();
    key.create(&ctx).await.unwrap();
    let again = plan::replan(&ctx, ENV, nodes(&resources), &tags, 4, &shown)
        .await
        .unwrap();
    assert_eq!(
        action(&again, API_KEY),
        Action::NoOp,
        "the re-read sees the key: apply stops instead of making a second one"
    );
    let keys = ctx.aws.apigateway.get_api_keys().send().await.unwrap();
    assert_eq!(keys.items().len(), 1);
}

/// `apply --yes` takes the lock beside the plan once a read makes a change certain: the plan
/// tells it for a create, and never for a plan without changes (a no-op apply writes nothing,
/// not even the lock).
#[tokio::test(flavor = "multi_thread")]
async fn the_plan_tells_of_a_certain_change_and_of_nothing_else() {
    use futures::FutureExt;
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let (resources, tags) = stack();
    let told = |changes: &tokio::sync::Notify| changes.notified().now_or_never().is_some();

    let changes = tokio::sync::Notify::new();
    let first = plan::plan_noting(&ctx, ENV, nodes(&resources), &tags, 4, &changes)
        .await
        .unwrap();
    assert!(first.has_changes());
    assert!(told(&changes), "two creates: the lock is asked for");

    for n in nodes(&resources) {
        n.create(&ctx).await.unwrap();
    }
    let changes = tokio::sync::Notify::new();
    let second = plan::plan_noting(&ctx, ENV, nodes(&resources), &tags, 4, &changes)
        .await
        .unwrap();
    assert!(!second.has_changes());
    assert!(!told(&changes), "nothing to change: no lock");
}
