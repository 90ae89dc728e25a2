//! A plan starts its deepest reads first (`Provider::READ_ROUND_TRIPS`): against the emulator,
//! every resource read in two steps (a lookup, then details) sends its first call before any
//! resource read in one does, so its second step does not queue behind the whole burst.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use stacks::Target;
use stacks::config::Config;
use xtask::emulator::TestEmulator;
use xtask::engine::plan;

#[tokio::test(flavor = "multi_thread")]
async fn two_step_reads_are_sent_first() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let target = Target {
        env: "test",
        account_id: "123456789012",
        region: "us-east-1",
    };
    let stack = stacks::invoice_app(&Config::default(), &target, &BTreeMap::new()).without_seed();
    let nodes: Vec<_> = stack.resources.iter().map(xtask::providers::bind).collect();
    let depth: HashMap<String, u32> = nodes
        .iter()
        .map(|n| (n.id().to_string(), n.read_round_trips()))
        .collect();

    let before = ctx.aws.log.calls().len();
    plan::plan(&ctx, "test", nodes, &stack.ownership_tags, 4)
        .await
        .unwrap();
    let calls = ctx.aws.log.calls()[before..].to_vec();

    // Each resource's first call, among those sent before any answer came back (a resource
    // whose first call waits for another's lookup is not one the plan started).
    let first_answer = calls
        .iter()
        .filter_map(|c| c.answered.first().copied())
        .min()
        .expect("the plan made calls");
    let mut first: HashMap<String, Instant> = HashMap::new();
    for c in &calls {
        let (Some(scope), Some(started)) = (&c.scope, c.started) else {
            continue;
        };
        if started < first_answer {
            let at = first.entry(scope.node.clone()).or_insert(started);
            *at = (*at).min(started);
        }
    }
    let (deep, shallow): (Vec<_>, Vec<_>) = first.iter().partition(|(id, _)| depth[*id] > 1);
    for id in [
        "rest_api.invoice",
        "usage_plan.default",
        "lambda_function.insert_invoice",
    ] {
        assert!(
            deep.iter().any(|(d, _)| d.as_str() == id),
            "{id} sent a first call: {deep:?}"
        );
    }
    assert!(shallow.len() > 10, "{shallow:?}");
    let last_deep = deep.iter().map(|(_, t)| **t).max().unwrap();
    let first_shallow = shallow.iter().map(|(_, t)| **t).min().unwrap();
    assert!(
        last_deep <= first_shallow,
        "a one-step read went before a two-step one: {:?}",
        {
            let mut order: Vec<_> = first.iter().collect();
            order.sort_by_key(|(_, t)| **t);
            order.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
        }
    );
}
