//! Executing a plan: deletions first (dependents before what they depend on), then creates,
//! updates and replacements in dependency order, each group as concurrent as the graph allows.
//!
//! Nothing is remembered between runs: after a crash the next plan reads what exists and
//! finishes the job, which is why every provider operation is idempotent.
//!
//! The environment lock keeps another run's writes from interleaving with this one's. A write
//! AWS refuses when what it changes moved since the plan read it (a compare-and-swap on a
//! revision: a Lambda alias's RevisionId) cannot overwrite another run's change, lock or not.
//! So once every action still in flight has said that all it still writes is guarded
//! ([`rest_is_guarded`]) and no action waits to start, [`apply_freeing`] says the lock may go:
//! its release then travels beside the last writes instead of after them, one round-trip off
//! the end of a code change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use super::plan::{Action, Plan, Planned};
use super::{Ctx, Node};

/// How one action ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub action: Action,
    pub status: Status,
    pub millis: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the write reported of its result beyond its action (see [`report`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

tokio::task_local! {
    /// What the write running in this task reported (see [`report`]).
    static REPORTED: std::sync::Mutex<Option<serde_json::Value>>;
}

tokio::task_local! {
    /// The action running in this task, and where it says the rest of its writes are guarded.
    static TAIL: (Arc<Guarded>, String);
}

/// Which actions in flight said that every write they still make is guarded.
#[derive(Default)]
struct Guarded {
    said: std::sync::Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

/// Says that every write the action running in this task still makes is guarded: AWS refuses
/// it if what it changes moved since the plan read it, so it cannot overwrite another run's
/// change even without the lock (see the module's docs). Outside an apply it does nothing.
pub fn rest_is_guarded() {
    let _ = TAIL.try_with(|(guarded, id)| {
        guarded
            .said
            .lock()
            .expect("guarded poisoned")
            .insert(id.clone());
        guarded.changed.notify_one();
    });
}

/// Sets the result the write running in this task reports beyond its action (a seed's counts),
/// which `--json` shows as its outcome's `report`. Outside an apply it does nothing.
pub fn report(value: serde_json::Value) {
    let _ = REPORTED.try_with(|r| *r.lock().expect("report poisoned") = Some(value));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Done,
    Failed,
    /// Not attempted because something it waits for failed.
    Skipped,
}

/// Refuses plans that contain something apply must not do.
pub fn check_runnable(plan: &Plan) -> Result<()> {
    let conflicts: Vec<String> = plan
        .conflicts()
        .map(|c| format!("{} ({})", c.id, c.name))
        .collect();
    if !conflicts.is_empty()
        && plan
            .resources
            .iter()
            .any(|r| r.action != Action::Delete && r.action.writes())
    {
        bail!(
            "refusing to apply: {} exist{} without this stack's ownership tags: {}; rename the stack (name_prefix) or remove them",
            conflicts.len(),
            if conflicts.len() == 1 { "s" } else { "" },
            conflicts.join(", ")
        );
    }
    let blocked: Vec<String> = plan
        .blocked()
        .map(|b| format!("{} {}", b.id, b.blocked.as_deref().unwrap_or_default()))
        .collect();
    if !blocked.is_empty() {
        bail!("refusing to apply: {}", blocked.join("; "));
    }
    Ok(())
}

/// Runs every write action of `plan` with at most `concurrency` in flight.
pub async fn apply(ctx: &Ctx, plan: &Plan, concurrency: usize) -> Vec<Outcome> {
    apply_freeing(ctx, plan, concurrency, &tokio::sync::Notify::new()).await
}

/// [`apply`], telling `free` (once, with `notify_one`) when the lock need no longer be held:
/// no action waits to start and every one in flight said the rest of its writes are guarded
/// ([`rest_is_guarded`]).
pub async fn apply_freeing(
    ctx: &Ctx,
    plan: &Plan,
    concurrency: usize,
    free: &tokio::sync::Notify,
) -> Vec<Outcome> {
    let total = plan.resources.iter().filter(|r| r.action.writes()).count();
    let mut progress = Progress { done: 0, total };
    let nodes: HashMap<&str, &Arc<dyn Node>> = plan.nodes.iter().map(|n| (n.id(), n)).collect();
    let mut outcomes = Vec::new();

    let deletes: Vec<&Planned> = plan
        .resources
        .iter()
        .filter(|r| r.action == Action::Delete)
        .collect();
    let delete_ids: HashSet<&str> = deletes.iter().map(|r| r.id.as_str()).collect();
    // A deletion waits for the deletion of everything that depends on it.
    let delete_waits: Vec<(&Planned, Vec<String>)> = deletes
        .iter()
        .map(|r| {
            let dependents = plan
                .resources
                .iter()
                .filter(|o| delete_ids.contains(o.id.as_str()) && o.depends_on.contains(&r.id))
                .map(|o| o.id.clone())
                .collect();
            (*r, dependents)
        })
        .collect();
    run_group(
        ctx,
        &nodes,
        delete_waits,
        concurrency,
        None,
        &mut progress,
        &mut outcomes,
    )
    .await;

    let failed_deletes = outcomes.iter().any(|o| o.status != Status::Done);
    let rest: Vec<(&Planned, Vec<String>)> = plan
        .resources
        .iter()
        .filter(|r| r.action.writes() && r.action != Action::Delete)
        .map(|r| {
            let deps = r
                .depends_on
                .iter()
                .filter(|d| {
                    plan.resources
                        .iter()
                        .any(|o| &o.id == *d && o.action.writes())
                })
                .cloned()
                .collect();
            (r, deps)
        })
        .collect();
    if failed_deletes {
        // Creating next to a half-deleted set risks name clashes; the next run finishes both.
        for (r, _) in rest {
            outcomes.push(skipped(r, "an earlier deletion failed"));
        }
    } else {
        let free = Some(free);
        run_group(
            ctx,
            &nodes,
            rest,
            concurrency,
            free,
            &mut progress,
            &mut outcomes,
        )
        .await;
    }
    outcomes
}

struct Progress {
    done: usize,
    total: usize,
}

fn skipped(r: &Planned, why: &str) -> Outcome {
    eprintln!("  skipped {} ({why})", r.id);
    Outcome {
        id: r.id.clone(),
        action: r.action,
        status: Status::Skipped,
        millis: 0,
        error: Some(why.to_string()),
        report: None,
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Replace => "replacing",
        Action::Delete => "deleting",
        Action::NoOp | Action::Conflict => "checking",
    }
}

/// Runs a group of actions, each after the ids it waits for; a failure skips what waits on it.
/// `free`: told when only guarded writes remain (see [`apply_freeing`]).
async fn run_group(
    ctx: &Ctx,
    nodes: &HashMap<&str, &Arc<dyn Node>>,
    mut pending: Vec<(&Planned, Vec<String>)>,
    concurrency: usize,
    free: Option<&tokio::sync::Notify>,
    progress: &mut Progress,
    outcomes: &mut Vec<Outcome>,
) {
    let stage = crate::aws::next_stage();
    longest_chains_first(nodes, &mut pending);
    let mut finished: HashMap<String, Status> = HashMap::new();
    let mut running = FuturesUnordered::new();
    let guarded = Arc::new(Guarded::default());
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut told = free.is_none();
    loop {
        // Skip whatever waits on a failure, start whatever is ready.
        let mut i = 0;
        while i < pending.len() {
            let (r, waits) = &pending[i];
            if waits
                .iter()
                .any(|w| matches!(finished.get(w), Some(Status::Failed | Status::Skipped)))
            {
                let o = skipped(r, "a dependency failed");
                finished.insert(r.id.clone(), Status::Skipped);
                outcomes.push(o);
                pending.remove(i);
                continue;
            }
            let ready = waits.iter().all(|w| finished.get(w) == Some(&Status::Done));
            if ready && running.len() < concurrency.max(1) {
                let (r, _) = pending.remove(i);
                let node = Arc::clone(nodes[r.id.as_str()]);
                eprintln!(
                    "  {} {} {} ({})",
                    r.action.symbol(),
                    verb(r.action),
                    r.id,
                    r.name
                );
                in_flight.insert(r.id.clone());
                let tail = (Arc::clone(&guarded), r.id.clone());
                running.push(async move {
                    let start = Instant::now();
                    let scope = crate::aws::Scope {
                        stage,
                        kind: "apply",
                        node: r.id.clone(),
                    };
                    let run = async {
                        let result = crate::aws::scoped(scope, execute(ctx, &node, r)).await;
                        let report = REPORTED.with(|v| v.lock().expect("report poisoned").take());
                        (result, report)
                    };
                    let run = REPORTED.scope(Default::default(), run);
                    let (result, report) = TAIL.scope(tail, run).await;
                    (r, result, report, start.elapsed())
                });
                continue;
            }
            i += 1;
        }
        if !told && pending.is_empty() && !in_flight.is_empty() {
            let said = guarded.said.lock().expect("guarded poisoned");
            if in_flight.iter().all(|id| said.contains(id)) {
                told = true;
                if let Some(free) = free {
                    free.notify_one();
                }
            }
        }
        let next = tokio::select! {
            next = running.next() => next,
            () = guarded.changed.notified(), if !told => continue,
        };
        let Some((r, result, report, elapsed)) = next else {
            break;
        };
        in_flight.remove(&r.id);
        progress.done += 1;
        let millis = elapsed.as_millis() as u64;
        let (status, error) = match result {
            Ok(()) => {
                eprintln!(
                    "  [{}/{}] {} {} done in {:.1}s",
                    progress.done,
                    progress.total,
                    r.action.symbol(),
                    r.id,
                    elapsed.as_secs_f64()
                );
                (Status::Done, None)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!(
                    "  [{}/{}] {} {} FAILED: {msg}",
                    progress.done,
                    progress.total,
                    r.action.symbol(),
                    r.id
                );
                (Status::Failed, Some(msg))
            }
        };
        finished.insert(r.id.clone(), status);
        outcomes.push(Outcome {
            id: r.id.clone(),
            action: r.action,
            status,
            millis,
            error,
            report,
        });
    }
    super::lookup::forget(stage);
    // Anything left waits on something that never ran (cannot happen with a valid graph).
    for (r, _) in pending {
        outcomes.push(skipped(r, "its dependencies did not complete"));
    }
}

/// Orders `pending` so that, of the actions ready at any moment, the one heading the longest
/// chain of waiting actions (weighted by [`Node::round_trips`]) starts first: with a
/// concurrency limit, starting a quick leaf before the head of the critical path delays the
/// whole apply by the head's length.
fn longest_chains_first(
    nodes: &HashMap<&str, &Arc<dyn Node>>,
    pending: &mut [(&Planned, Vec<String>)],
) {
    let weight = |id: &str| nodes.get(id).map_or(1, |n| n.round_trips().max(1)) as u64;
    // Who waits on whom, within this group.
    let mut waiters: HashMap<&str, Vec<&str>> = HashMap::new();
    for (r, waits) in pending.iter() {
        for w in waits {
            waiters.entry(w.as_str()).or_default().push(r.id.as_str());
        }
    }
    fn chain<'a>(
        id: &'a str,
        waiters: &HashMap<&'a str, Vec<&'a str>>,
        weight: &dyn Fn(&str) -> u64,
        memo: &mut HashMap<&'a str, u64>,
        depth: usize,
    ) -> u64 {
        if let Some(v) = memo.get(id) {
            return *v;
        }
        // A cycle cannot come from a valid graph; the bound only keeps a bad one finite.
        let below = if depth > 256 {
            0
        } else {
            waiters
                .get(id)
                .into_iter()
                .flatten()
                .map(|w| chain(w, waiters, weight, memo, depth + 1))
                .max()
                .unwrap_or(0)
        };
        let v = weight(id) + below;
        memo.insert(id, v);
        v
    }
    let mut memo = HashMap::new();
    let lengths: HashMap<String, u64> = pending
        .iter()
        .map(|(r, _)| {
            (
                r.id.clone(),
                chain(r.id.as_str(), &waiters, &weight, &mut memo, 0),
            )
        })
        .collect();
    pending.sort_by_key(|(r, _)| std::cmp::Reverse(lengths[&r.id]));
}

async fn execute(ctx: &Ctx, node: &Arc<dyn Node>, r: &Planned) -> Result<()> {
    use anyhow::Context as _;
    let what = || format!("{} {} ({})", verb(r.action), r.id, r.name);
    match r.action {
        Action::Create => node.create(ctx).await.with_context(what),
        Action::Update => node.update(ctx, &r.changes).await.with_context(what),
        Action::Replace => {
            node.delete(ctx).await.with_context(what)?;
            node.create(ctx).await.with_context(what)
        }
        Action::Delete => node.delete(ctx).await.with_context(what),
        Action::NoOp | Action::Conflict => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::FutureExt as _;
    use tokio::sync::{Notify, Semaphore};

    use super::*;
    use crate::engine::{Change, Observation, Pass};

    /// An action that says (or not) that the rest of its writes are guarded, then waits for its
    /// gate: the test decides when each one finishes.
    struct Gated {
        id: String,
        depends_on: Vec<String>,
        says_guarded: bool,
        gate: Semaphore,
    }

    impl Gated {
        fn new(id: &str, depends_on: &[&str], says_guarded: bool) -> Arc<Gated> {
            Arc::new(Gated {
                id: id.into(),
                depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
                says_guarded,
                gate: Semaphore::new(0),
            })
        }

        fn open(&self) {
            self.gate.add_permits(1);
        }
    }

    #[async_trait]
    impl Node for Gated {
        fn id(&self) -> &str {
            &self.id
        }
        fn kind(&self) -> &'static str {
            "gated"
        }
        fn name(&self) -> &str {
            &self.id
        }
        fn depends_on(&self) -> &[String] {
            &self.depends_on
        }
        fn ensure(&self) -> stacks::Ensure {
            stacks::Ensure::Present
        }
        fn round_trips(&self) -> u32 {
            1
        }
        fn read_round_trips(&self) -> u32 {
            1
        }
        fn create_converges(&self) -> bool {
            false
        }
        fn update_guarded(&self, _: &[Change]) -> bool {
            false
        }
        async fn observe(
            &self,
            _: &Ctx,
            _: &BTreeMap<String, String>,
            _: Pass,
        ) -> Result<Observation> {
            unreachable!("apply does not read")
        }
        async fn deletion_details(&self, _: &Ctx) -> Result<Vec<String>> {
            unreachable!("apply does not read")
        }
        async fn holds_data(&self, _: &Ctx) -> Result<bool> {
            unreachable!("apply does not read")
        }
        async fn create(&self, _: &Ctx) -> Result<()> {
            unreachable!("the plans here only update")
        }
        async fn update(&self, _: &Ctx, _: &[Change]) -> Result<()> {
            if self.says_guarded {
                rest_is_guarded();
            }
            self.gate.acquire().await?.forget();
            Ok(())
        }
        async fn delete(&self, _: &Ctx) -> Result<()> {
            unreachable!("the plans here only update")
        }
    }

    async fn ctx() -> Ctx {
        // The actions above make no AWS call.
        Ctx::offline(Duration::from_secs(5)).await
    }

    /// Every node updated, in the order given.
    fn plan(nodes: &[Arc<Gated>]) -> Plan {
        Plan {
            env: "test".into(),
            account_id: "1".into(),
            region: "us-east-1".into(),
            resources: nodes
                .iter()
                .map(|n| Planned {
                    id: n.id.clone(),
                    kind: "gated",
                    name: n.id.clone(),
                    action: Action::Update,
                    changes: Vec::new(),
                    details: Vec::new(),
                    blocked: None,
                    depends_on: n.depends_on.clone(),
                })
                .collect(),
            nodes: nodes
                .iter()
                .map(|n| Arc::clone(n) as Arc<dyn Node>)
                .collect(),
        }
    }

    /// Whether `free` was told (it keeps `notify_one`'s permit until taken).
    fn told(free: &Notify) -> bool {
        free.notified().now_or_never().is_some()
    }

    /// Lets the apply run until every action in flight waits at its gate.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_lock_is_freed_once_only_guarded_writes_are_in_flight() {
        let ctx = ctx().await;
        let guarded = Gated::new("guarded", &[], true);
        let unguarded = Gated::new("unguarded", &[], false);
        let plan = plan(&[guarded.clone(), unguarded.clone()]);
        let free = Notify::new();
        let apply = apply_freeing(&ctx, &plan, 4, &free);
        let test = async {
            settle().await;
            assert!(!told(&free), "an unguarded write is still in flight");
            unguarded.open();
            settle().await;
            assert!(told(&free), "only the guarded write is left in flight");
            guarded.open();
        };
        let (outcomes, ()) = tokio::join!(apply, test);
        assert!(outcomes.iter().all(|o| o.status == Status::Done));
    }

    #[tokio::test]
    async fn an_action_waiting_to_start_keeps_the_lock() {
        let ctx = ctx().await;
        let first = Gated::new("first", &[], true);
        let next = Gated::new("next", &["first"], false);
        let plan = plan(&[first.clone(), next.clone()]);
        let free = Notify::new();
        let apply = apply_freeing(&ctx, &plan, 4, &free);
        let test = async {
            settle().await;
            assert!(!told(&free), "`next` waits to start");
            first.open();
            settle().await;
            next.open();
        };
        let (outcomes, ()) = tokio::join!(apply, test);
        assert!(outcomes.iter().all(|o| o.status == Status::Done));
        assert!(!told(&free), "`next` was not guarded");
    }
}
