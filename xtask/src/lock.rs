//! One apply or destroy per environment at a time, across machines.
//!
//! There is no state file to lock, so the lock lives in AWS: an SSM parameter created with
//! `Overwrite=false`, which fails atomically when another run holds it. Its value says who
//! holds it and since when, so a refused run can tell the user; a lock left by a killed run
//! is broken explicitly with `--break-lock`.
//!
//! Run tickets let a scripted apply skip reading the stack twice. Apply reads the live state,
//! then takes the lock; something another run changed in between would make its plan stale, so
//! by default it reads again under the lock. A run that looked at the lock and the newest ticket
//! (`n`) *before* reading anything takes ticket `n + 1` (another parameter created with
//! `Overwrite=false`) beside the lock: every run that holds the lock first takes a ticket, so if
//! the lock was free when it looked and ticket `n + 1` was still free when it took the lock, no
//! run has changed anything since its reads began, and its plan stands ([`Acquired::undisturbed`]).
//! Tickets only ever skip a re-read; the lock alone keeps runs apart. The last three tickets are
//! kept (a stale view of an older number then finds it taken); destroy removes them all.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::delete_parameter::DeleteParameterError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_sdk_ssm::types::{ParameterType, Tag};
use serde::{Deserialize, Serialize};

use crate::engine::Ctx;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub who: String,
    pub command: String,
    pub pid: u32,
    pub since_unix: u64,
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
        }
    }
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

/// Where an environment's lock and run tickets live.
#[derive(Debug, Clone)]
pub struct Place {
    /// The lock parameter.
    pub lock: String,
    /// The path under which run tickets are numbered (`<path>/<n>`).
    pub tickets: String,
}

impl Place {
    pub fn of(names: &stacks::names::Names) -> Place {
        Place {
            lock: names.lock_parameter(),
            tickets: names.run_tickets_path(),
        }
    }

    fn ticket(&self, n: u64) -> String {
        format!("{}/{n:012}", self.tickets)
    }
}

/// What a run saw before it read the stack: whether another run held the lock, and the newest
/// run ticket (0 when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Before {
    pub held: bool,
    pub newest_ticket: u64,
}

impl Before {
    /// Looks at the lock and the tickets (two reads side by side).
    pub async fn observe(ctx: &Ctx, place: &Place) -> Result<Before> {
        let (held, tickets) = tokio::join!(current_raw(ctx, &place.lock), tickets(ctx, place));
        Ok(Before {
            held: held?,
            newest_ticket: tickets?.into_iter().max().unwrap_or(0),
        })
    }
}

/// How the lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// No run has held the lock since the [`Before`] this run observed: what it read before
    /// taking the lock is still what its own writes start from.
    pub undisturbed: bool,
}

/// A held lock; [`Lock::release`] it when done.
pub struct Lock {
    name: String,
    /// The ticket this run took, if it took one.
    ticket: Option<u64>,
}

impl Lock {
    /// Takes the lock; with `before` (what this run saw before it read the stack), also the next
    /// run ticket, to learn whether another run has been at work since.
    pub async fn acquire(
        ctx: &Ctx,
        place: &Place,
        command: &str,
        tags: &std::collections::BTreeMap<String, String>,
        break_lock: bool,
        before: Option<Before>,
    ) -> Result<(Lock, Acquired)> {
        let me = Holder::me(command);
        let value = serde_json::to_string(&me)?;
        let tags = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()?;
        // A ticket is worth taking only if the lock was free when this run looked.
        let want_ticket = before.filter(|b| !b.held && !break_lock);
        for attempt in 0..2 {
            let lock = create(
                ctx,
                &place.lock,
                &value,
                &tags,
                "taking the environment lock",
            );
            let ticket = async {
                match want_ticket {
                    Some(b) if attempt == 0 => {
                        let n = b.newest_ticket + 1;
                        let name = place.ticket(n);
                        let taken =
                            create(ctx, &name, &value, &tags, "taking a run ticket").await?;
                        Ok::<_, anyhow::Error>(taken.then_some(n))
                    }
                    _ => Ok(None),
                }
            };
            let (lock, ticket) = tokio::join!(lock, ticket);
            if lock? {
                // A ticket that could not be taken only costs the re-read it would have saved.
                let ticket = ticket.unwrap_or_else(|e| {
                    eprintln!("warning: {e:#}; the plan will be read again under the lock");
                    None
                });
                return Ok((
                    Lock {
                        name: place.lock.clone(),
                        ticket,
                    },
                    Acquired {
                        undisturbed: ticket.is_some(),
                    },
                ));
            }
            let holder = current(ctx, &place.lock).await?;
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

    /// Releases the lock; beside it, forgets the ticket three before this run's (see the
    /// module docs for why three are kept).
    pub async fn release(self, ctx: &Ctx, place: &Place) -> Result<()> {
        let old = self
            .ticket
            .and_then(|n| n.checked_sub(3))
            .filter(|n| *n > 0)
            .map(|n| place.ticket(n));
        let (released, forgotten) = tokio::join!(delete(ctx, &self.name), async {
            match &old {
                Some(name) => delete(ctx, name).await,
                None => Ok(()),
            }
        });
        if let Err(e) = forgotten {
            eprintln!("warning: removing an old run ticket: {e:#}");
        }
        released
    }

    /// Runs `work` holding the lock, and releases it whatever `work` returns; the work's error
    /// wins over a failed release, which is only reported then. `work` learns how the lock was
    /// taken (see [`Lock::acquire`]).
    pub async fn hold<T, F, Fut>(
        ctx: &Ctx,
        place: &Place,
        command: &str,
        tags: &std::collections::BTreeMap<String, String>,
        break_lock: bool,
        before: Option<Before>,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(Acquired) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let (lock, acquired) = Lock::acquire(ctx, place, command, tags, break_lock, before).await?;
        let result = work(acquired).await;
        let released = lock.release(ctx, place).await;
        match (result, released) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), released) => {
                if let Err(r) = released {
                    eprintln!("warning: releasing the lock {}: {r:#}", place.lock);
                }
                Err(e)
            }
        }
    }
}

/// Removes every run ticket of the environment (destroy: it leaves nothing it owns behind).
pub async fn forget_tickets(ctx: &Ctx, place: &Place) -> Result<()> {
    let numbers = tickets(ctx, place).await?;
    futures::future::try_join_all(numbers.into_iter().map(|n| {
        let name = place.ticket(n);
        async move { delete(ctx, &name).await }
    }))
    .await?;
    Ok(())
}

/// Creates parameter `name` unless it exists: `Ok(false)` when it does.
async fn create(ctx: &Ctx, name: &str, value: &str, tags: &[Tag], what: &str) -> Result<bool> {
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
        Err(e) => Err(e).with_context(|| format!("PutParameter ({what})")),
    }
}

/// The numbers of the environment's run tickets.
async fn tickets(ctx: &Ctx, place: &Place) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    let mut pages = ctx
        .aws
        .ssm
        .get_parameters_by_path()
        .path(&place.tickets)
        .recursive(false)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.context("GetParametersByPath (reading the run tickets)")?;
        numbers.extend(
            page.parameters()
                .iter()
                .filter_map(|p| p.name()?.rsplit('/').next()?.parse::<u64>().ok()),
        );
    }
    Ok(numbers)
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

/// Whether the lock parameter exists (another run holds it).
async fn current_raw(ctx: &Ctx, name: &str) -> Result<bool> {
    match ctx.aws.ssm.get_parameter().name(name).send().await {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), GetParameterError::ParameterNotFound(_)) =>
        {
            Ok(false)
        }
        Err(e) => Err(e).context("GetParameter (looking at the environment lock)"),
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
