//! One apply or destroy per environment at a time, across machines.
//!
//! There is no state file to lock, so the lock lives in AWS: an SSM parameter created with
//! `Overwrite=false`, which fails atomically when another run holds it. Its value says who
//! holds it and since when, so a refused run can tell the user; a lock left by a killed run
//! is broken explicitly with `--break-lock`.
//!
//! What a run planned before taking the lock is read again under it (`plan::replan`): the lock
//! keeps runs apart, but says nothing about what another run changed between this run's reads
//! and its taking the lock. That includes `apply --yes`, which takes the lock beside its plan
//! (its reads began before the lock was held); `destroy --yes` takes it before reading.
//!
//! The lock goes as soon as the work says only guarded writes remain in flight
//! ([`crate::engine::apply::rest_is_guarded`]): their release travels beside them.
//!
//! Each run writes a random `run` id into the lock's value. If the answer to the create is lost
//! after SSM made the parameter, the SDK's retry is refused with `ParameterAlreadyExists`; the
//! holder then read back is this very run, which carries on instead of blaming itself.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::delete_parameter::DeleteParameterError;
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_sdk_ssm::types::{ParameterType, Tag};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::engine::Ctx;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub who: String,
    pub command: String,
    pub pid: u32,
    pub since_unix: u64,
    /// Unique per run: tells this run's own lock from another's (older locks have none).
    #[serde(default)]
    pub run: String,
}

impl Holder {
    fn me(command: &str) -> Holder {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown-host".into());
        Holder {
            who: format!("{user}@{host}"),
            command: command.into(),
            pid: std::process::id(),
            since_unix: now(),
            run: run_id(),
        }
    }
}

/// A run id no other run shares: host, process and the clock to the nanosecond, hashed.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // RandomState is seeded from the OS per process: two runs never share it.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:016x}{:08x}", h.finish(), std::process::id())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Renders an age like `3m12s`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Where an environment's lock lives.
#[derive(Debug, Clone)]
pub struct Place {
    /// The lock parameter.
    pub lock: String,
}

impl Place {
    pub fn of(names: &stacks::names::Names) -> Place {
        Place {
            lock: names.lock_parameter(),
        }
    }
}

/// A held lock; [`Lock::release`] it when done.
pub struct Lock {
    name: String,
}

impl Lock {
    /// Takes the lock, or says who holds it.
    pub async fn acquire(
        ctx: &Ctx,
        place: &Place,
        command: &str,
        tags: &std::collections::BTreeMap<String, String>,
        break_lock: bool,
    ) -> Result<Lock> {
        let me = Holder::me(command);
        let value = serde_json::to_string(&me)?;
        let tags = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()?;
        let held = || Lock {
            name: place.lock.clone(),
        };
        for attempt in 0..2 {
            if create(ctx, &place.lock, &value, &tags).await? {
                return Ok(held());
            }
            let holder = current(ctx, &place.lock).await?;
            if holder.as_ref().is_some_and(|h| h.run == me.run) {
                // The create's answer was lost and the SDK's retry found what it had made.
                return Ok(held());
            }
            if break_lock && attempt == 0 {
                eprintln!(
                    "breaking the lock held by {}",
                    holder
                        .as_ref()
                        .map(describe)
                        .unwrap_or_else(|| "an unknown holder".into())
                );
                delete(ctx, &place.lock).await?;
                continue;
            }
            match holder {
                Some(h) => bail!(
                    "environment is locked by {}; wait for it to finish, or if that run is dead pass --break-lock",
                    describe(&h)
                ),
                None => bail!(
                    "environment is locked (parameter {}); if no run is active pass --break-lock",
                    place.lock
                ),
            }
        }
        bail!("could not take the lock {}", place.lock)
    }

    pub async fn release(self, ctx: &Ctx) -> Result<()> {
        delete(ctx, &self.name).await
    }

    /// Takes the lock and [`run`](Lock::run)s `work` holding it.
    pub async fn hold<T, Fut>(
        ctx: &Ctx,
        place: &Place,
        command: &str,
        tags: &std::collections::BTreeMap<String, String>,
        break_lock: bool,
        free: Option<&Notify>,
        work: Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let lock = Lock::acquire(ctx, place, command, tags, break_lock).await?;
        lock.run(ctx, free, work).await
    }

    /// Runs `work` holding this lock, and releases it whatever `work` returns; the work's
    /// error wins over a failed release, which is only reported then. Told `free` first (only
    /// guarded writes are left in flight: [`crate::engine::apply::apply_freeing`]), the
    /// release goes out beside the rest of the work instead of after it.
    pub async fn run<T, Fut>(self, ctx: &Ctx, free: Option<&Notify>, work: Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let name = self.name.clone();
        let release = self.release(ctx);
        tokio::pin!(work, release);
        let told = async {
            match free {
                Some(free) => free.notified().await,
                None => std::future::pending().await,
            }
        };
        let (result, released) = tokio::select! {
            result = &mut work => (result, release.await),
            () = told => {
                eprintln!("  releasing the lock: the writes still in flight are guarded");
                tokio::join!(work, release)
            }
        };
        match (result, released) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), released) => {
                if let Err(r) = released {
                    eprintln!("warning: releasing the lock {name}: {r:#}");
                }
                Err(e)
            }
        }
    }
}

/// Creates parameter `name` unless it exists: `Ok(false)` when it does.
async fn create(ctx: &Ctx, name: &str, value: &str, tags: &[Tag]) -> Result<bool> {
    let result = ctx
        .aws
        .ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::String)
        .overwrite(false)
        .description("held by xtask while it changes this environment")
        .set_tags(Some(tags.to_vec()))
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), PutParameterError::ParameterAlreadyExists(_)) =>
        {
            Ok(false)
        }
        Err(e) => Err(e).context("PutParameter (taking the environment lock)"),
    }
}

fn describe(h: &Holder) -> String {
    format!(
        "{} (`{}`, pid {}) for {}",
        h.who,
        h.command,
        h.pid,
        age(now().saturating_sub(h.since_unix))
    )
}

async fn current(ctx: &Ctx, name: &str) -> Result<Option<Holder>> {
    let out = ctx.aws.ssm.get_parameter().name(name).send().await;
    match out {
        Ok(o) => Ok(o
            .parameter()
            .and_then(|p| p.value())
            .and_then(|v| serde_json::from_str(v).ok())),
        Err(_) => Ok(None),
    }
}

async fn delete(ctx: &Ctx, name: &str) -> Result<()> {
    match ctx.aws.ssm.delete_parameter().name(name).send().await {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), DeleteParameterError::ParameterNotFound(_)) =>
        {
            Ok(())
        }
        Err(e) => Err(e).context("DeleteParameter (releasing the environment lock)"),
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_are_short() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(7260), "2h01m");
    }
}
