//! One lookup per kind per plan pass: when several resources find what they need in the same
//! listing (every API Gateway resource starts from `GetRestApis`, the usage plan and the key
//! from `GetApiKeys`), the first reader makes the call and the others share its answer.
//!
//! Sharing is limited to one plan pass (the [`crate::aws::Scope`] the engine runs reads in), so
//! an apply never sees a listing from before its own creates; outside a plan pass every lookup
//! is made afresh.

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

/// Drops what a finished plan pass looked up.
pub fn forget(stage: u64) {
    table()
        .lock()
        .expect("lookup table poisoned")
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
}
