//! One lookup per kind per plan pass: when several resources find what they need in the same
//! listing (every API Gateway resource starts from `GetRestApis`, the usage plan and the key
//! from `GetApiKeys`), the first reader makes the call and the others share its answer.
//!
//! A kind that AWS can describe several at a time by name (log groups) also needs to know
//! which names the pass will ask for: [`peers`] gives the names of every resource of a kind
//! that the pass reads, so the first reader can ask for all of them in one call.
//!
//! Sharing is limited to one plan pass (the [`crate::aws::Scope`] the engine runs reads in), so
//! an apply never sees a listing from before its own creates; outside a plan pass every lookup
//! is made afresh. An apply pass keeps only what its own writes learned ([`remember`]: a new
//! REST API's id), for the resources waiting on them.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;
use tokio::sync::OnceCell;

type Shared = Arc<OnceCell<Arc<dyn Any + Send + Sync>>>;

fn table() -> &'static Mutex<HashMap<(u64, String), Shared>> {
    static TABLE: OnceLock<Mutex<HashMap<(u64, String), Shared>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Names read per (plan pass, kind).
type Peers = Mutex<HashMap<(u64, &'static str), Vec<String>>>;

fn peer_table() -> &'static Peers {
    static TABLE: OnceLock<Peers> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Records, for the plan pass `stage`, the names of the resources it reads by kind.
pub fn set_peers<'a>(stage: u64, reads: impl IntoIterator<Item = (&'static str, &'a str)>) {
    let mut table = peer_table().lock().expect("peer table poisoned");
    for (kind, name) in reads {
        table
            .entry((stage, kind))
            .or_default()
            .push(name.to_string());
    }
}

/// The names of every resource of `kind` this plan pass reads, sorted, with `own` among them;
/// outside a plan pass just `own`.
pub fn peers(kind: &'static str, own: &str) -> Vec<String> {
    let mut names = crate::aws::current_plan_stage()
        .and_then(|stage| {
            let table = peer_table().lock().expect("peer table poisoned");
            table.get(&(stage, kind)).cloned()
        })
        .unwrap_or_default();
    if !names.iter().any(|n| n == own) {
        names.push(own.to_string());
    }
    names.sort();
    names.dedup();
    names
}

/// `fetch()`'s answer, shared with every other `once` of the same `key` in this plan pass.
/// A failed fetch is not shared: the next caller tries again.
pub async fn once<T, F, Fut>(key: &str, fetch: F) -> Result<T>
where
    T: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let Some(stage) = crate::aws::current_plan_stage() else {
        return fetch().await;
    };
    let cell = table()
        .lock()
        .expect("lookup table poisoned")
        .entry((stage, key.to_string()))
        .or_default()
        .clone();
    let value = cell
        .get_or_try_init(|| async {
            fetch()
                .await
                .map(|v| Arc::new(v) as Arc<dyn Any + Send + Sync>)
        })
        .await?;
    Ok(value
        .downcast_ref::<T>()
        .expect("one type per lookup key")
        .clone())
}

/// Records, for the rest of this apply pass, what a write learned (a new REST API's id), so
/// the resources that wait for it need not list their kind again to find it. Outside an apply
/// pass it does nothing.
pub fn remember(key: &str, value: &str) {
    if let Some(stage) = crate::aws::current_apply_stage() {
        let cell = Shared::default();
        let value: Arc<dyn Any + Send + Sync> = Arc::new(value.to_string());
        cell.set(value).expect("a fresh cell is empty");
        table()
            .lock()
            .expect("lookup table poisoned")
            .insert((stage, key.to_string()), cell);
    }
}

/// What this apply pass [`remember`]ed under `key`.
pub fn recall(key: &str) -> Option<String> {
    let stage = crate::aws::current_apply_stage()?;
    let table = table().lock().expect("lookup table poisoned");
    let value = table.get(&(stage, key.to_string()))?.get()?;
    value.downcast_ref::<String>().cloned()
}

/// Drops what a finished plan or apply pass looked up or remembered.
pub fn forget(stage: u64) {
    table()
        .lock()
        .expect("lookup table poisoned")
        .retain(|(s, _), _| *s != stage);
    peer_table()
        .lock()
        .expect("peer table poisoned")
        .retain(|(s, _), _| *s != stage);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::{Scope, scoped};
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn lookups(calls: &AtomicUsize) -> Vec<u32> {
        let one = || async {
            once("GetRestApis", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(7u32)
            })
            .await
            .unwrap()
        };
        let (a, b, c) = tokio::join!(one(), one(), one());
        vec![a, b, c]
    }

    #[tokio::test]
    async fn a_plan_pass_looks_a_kind_up_once() {
        let calls = AtomicUsize::new(0);
        let stage = crate::aws::next_stage();
        let scope = Scope {
            stage,
            kind: "plan",
            node: "n".into(),
        };
        assert_eq!(scoped(scope, lookups(&calls)).await, vec![7, 7, 7]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        forget(stage);
    }

    #[tokio::test]
    async fn a_plan_pass_knows_the_names_it_reads_of_a_kind() {
        let stage = crate::aws::next_stage();
        set_peers(
            stage,
            [("log_group", "/b"), ("log_group", "/a"), ("role", "r")],
        );
        let scope = |node: &str| Scope {
            stage,
            kind: "plan",
            node: node.into(),
        };
        let seen = scoped(scope("x"), async { peers("log_group", "/b") }).await;
        assert_eq!(seen, ["/a", "/b"]);
        // A reader the pass did not announce still finds itself.
        let seen = scoped(scope("y"), async { peers("log_group", "/c") }).await;
        assert_eq!(seen, ["/a", "/b", "/c"]);
        forget(stage);
        let seen = scoped(scope("x"), async { peers("log_group", "/b") }).await;
        assert_eq!(seen, ["/b"], "forgotten with the pass");
        assert_eq!(peers("log_group", "/b"), ["/b"], "outside a pass: itself");
    }

    #[tokio::test]
    async fn outside_a_plan_every_lookup_is_fresh() {
        let calls = AtomicUsize::new(0);
        let scope = Scope {
            stage: crate::aws::next_stage(),
            kind: "apply",
            node: "n".into(),
        };
        scoped(scope, lookups(&calls)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        lookups(&calls).await;
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn an_apply_pass_recalls_what_its_writes_remembered() {
        let stage = crate::aws::next_stage();
        let scope = |stage, node: &str| Scope {
            stage,
            kind: "apply",
            node: node.into(),
        };
        scoped(scope(stage, "rest_api.x"), async {
            remember("id.x", "abc")
        })
        .await;
        // Another node of the same pass sees it; another pass, or no pass, does not.
        let seen = scoped(scope(stage, "api_stage.x"), async { recall("id.x") }).await;
        assert_eq!(seen.as_deref(), Some("abc"));
        let other = crate::aws::next_stage();
        assert_eq!(
            scoped(scope(other, "n"), async { recall("id.x") }).await,
            None
        );
        assert_eq!(recall("id.x"), None);
        // Outside a pass there is nowhere to keep it.
        remember("id.y", "def");
        assert_eq!(
            scoped(scope(stage, "n"), async { recall("id.y") }).await,
            None
        );
        forget(stage);
        let seen = scoped(scope(stage, "api_stage.x"), async { recall("id.x") }).await;
        assert_eq!(seen, None, "forgotten with the pass");
    }
}
