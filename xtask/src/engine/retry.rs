//! The one retry/wait helper every provider uses for AWS's eventual consistency.
//!
//! Throttling and transport errors are retried inside the SDK. What is left are domain
//! conditions only the caller can recognise from a typed error (a role not yet assumable, a
//! function update in progress) or a state to wait for (a table becoming ACTIVE). Both are
//! bounded by a deadline (and optionally by a number of attempts), back off exponentially with
//! jitter, and log each attempt. (Spacing calls to a per-account quota is the transport's job:
//! `aws::transport`'s pacer sees every attempt of every caller.)

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long and how often to try.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Total time after which the last error is returned.
    pub deadline: Duration,
}

impl Backoff {
    /// Polling for a state change: start quick, settle at a few seconds.
    pub fn wait(deadline: Duration) -> Backoff {
        Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
            deadline,
        }
    }

    /// The pause before retry number `attempt + 1`: exponential from `first`, capped at `max`,
    /// jittered. Public for loops whose attempts are bounded by count rather than by a deadline
    /// (the stream poller's batch retries), so there is still one backoff formula.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .first
            .saturating_mul(2u32.saturating_pow(attempt.min(16)));
        let capped = exp.min(self.max);
        // Up to 20% jitter so concurrent waiters do not poll in lockstep.
        let jitter = capped.mul_f64(fastrand::f64() * 0.2);
        capped.saturating_sub(jitter)
    }
}

/// Runs `op` until it succeeds, `retryable` says an error is final, or the deadline passes.
/// `retryable` returns why an error is worth retrying (for the log), or `None`.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    policy: Backoff,
    op: F,
    retryable: impl Fn(&E) -> Option<&'static str>,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_at_most(what, policy, u32::MAX, op, retryable).await
}

/// [`retry`] that also stops after `max_attempts` calls of `op`: for quota-limited calls, where
/// each retry costs a whole quota interval and a few attempts are all that are worth making.
pub async fn retry_at_most<T, E, F, Fut>(
    what: &str,
    policy: Backoff,
    max_attempts: u32,
    mut op: F,
    retryable: impl Fn(&E) -> Option<&'static str>,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let Some(reason) = retryable(&e) else {
                    return Err(e);
                };
                let delay = policy.delay(attempt);
                if attempt + 1 >= max_attempts || start.elapsed() + delay > policy.deadline {
                    tracing::warn!(what, reason, attempts = attempt + 1, "giving up");
                    return Err(e);
                }
                tracing::info!(what, reason, attempt = attempt + 1, ?delay, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// A wait that ran out of time; callers may downcast to it.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}")]
pub struct Timeout {
    pub after: Duration,
    pub what: String,
}

/// Polls `probe` until it returns `Some`, with backoff, up to the deadline.
pub async fn wait_until<T, F, Fut>(what: &str, policy: Backoff, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        if let Some(v) = probe().await? {
            if attempt > 0 {
                tracing::info!(what, waited = ?start.elapsed(), "ready");
            }
            return Ok(v);
        }
        let delay = policy.delay(attempt);
        if start.elapsed() + delay > policy.deadline {
            return Err(Timeout {
                after: policy.deadline,
                what: what.to_string(),
            }
            .into());
        }
        tracing::debug!(what, attempt = attempt + 1, ?delay, "not ready yet");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const POLICY: Backoff = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(2),
        deadline: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let calls = Cell::new(0);
        let out: Result<u32, &str> = retry(
            "op",
            POLICY,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 3 { Err("conflict") } else { Ok(n) } }
            },
            |_| Some("conflict"),
        )
        .await;
        assert_eq!(out, Ok(3));
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_not_retried() {
        let calls = Cell::new(0);
        let out: Result<(), &str> = retry(
            "op",
            POLICY,
            || {
                calls.set(calls.get() + 1);
                async { Err("access denied") }
            },
            |_| None,
        )
        .await;
        assert_eq!(out, Err("access denied"));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_at_the_deadline() {
        let start = Instant::now();
        let calls = Cell::new(0);
        let out: Result<(), &str> = retry(
            "op",
            POLICY,
            || {
                calls.set(calls.get() + 1);
                async { Err("throttled") }
            },
            |_| Some("throttled"),
        )
        .await;
        assert_eq!(out, Err("throttled"));
        assert!(start.elapsed() <= POLICY.deadline);
        assert!(calls.get() > 3, "backoff should allow several attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_at_most_stops_at_the_attempt_bound() {
        let calls = Cell::new(0);
        let out: Result<(), &str> = retry_at_most(
            "op",
            POLICY,
            3,
            || {
                calls.set(calls.get() + 1);
                async { Err("throttled") }
            },
            |_| Some("throttled"),
        )
        .await;
        assert_eq!(out, Err("throttled"));
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_times_out_with_what_it_waited_for() {
        let out: anyhow::Result<()> =
            wait_until("table ACTIVE", POLICY, || async { Ok(None) }).await;
        let err = out.expect_err("never ready");
        let t = err.downcast_ref::<Timeout>().expect("a Timeout");
        assert_eq!(t.after, POLICY.deadline);
        assert_eq!(t.what, "table ACTIVE");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_the_ready_value() {
        let polls = Cell::new(0);
        let out: anyhow::Result<&str> = wait_until("x", POLICY, || {
            polls.set(polls.get() + 1);
            let n = polls.get();
            async move { Ok((n == 4).then_some("ACTIVE")) }
        })
        .await;
        assert_eq!(out.unwrap(), "ACTIVE");
        assert_eq!(polls.get(), 4);
    }
}
