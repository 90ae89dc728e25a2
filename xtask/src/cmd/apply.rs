//! `cargo xtask apply`: plan, confirm, lock, re-plan under the lock, execute, summarise.
//!
//! A plan without changes returns before the lock is taken, so a no-op apply makes no write
//! call at all. `destroy --yes` takes the lock first and reads only under it ([`locks_first`]). What the plan acts on is read again under the lock ([`plan::replan`]): another
//! run may have changed it between the first read and the confirmation (or, with `--yes`,
//! between the first read and the lock). Creates of named resources are not read again: if
//! another run made one meanwhile, the create fails with "already exists" and finishes what it
//! finds, when it carries this stack's tags ([`plan::replan`]). Nor are updates whose first
//! write carries the revision the plan read (a Lambda function's RevisionId), which AWS refuses
//! if the resource changed since.

use std::time::Instant;

use anyhow::{Result, bail};
use stacks::Stack;

use super::{Engine, exit, nodes};
use crate::artifacts::{CodeArgs, CodeSource};
use crate::engine::apply::{Outcome, Status, apply_freeing, check_runnable};
use crate::engine::plan::{Action, Plan};
use crate::engine::{Options, plan, render};
use crate::lock::{Lock, Place};
use crate::session::{Global, Output, SeedArgs, Session, confirm};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not ask for confirmation (for scripts and CI).
    #[arg(long, short)]
    pub yes: bool,
    /// Allow replacing resources that hold data (a table with items, a bucket with objects).
    #[arg(long)]
    pub allow_data_loss: bool,
    /// Take the environment lock even if another run holds it (only when that run is dead).
    #[arg(long)]
    pub break_lock: bool,
    /// The deployment engine: `direct` (default) or `cloudformation` (a change set).
    #[arg(long, value_enum, default_value_t = Engine::Direct)]
    pub engine: Engine,
    #[command(flatten)]
    pub code: CodeArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    let options = Options {
        allow_data_loss: args.allow_data_loss,
        override_deletion_protection: false,
    };
    let mut session = Session::open(g, options, &CodeSource::Deploy(args.code.clone())).await?;
    session.seed_args(args.seed);
    if args.engine == Engine::Cloudformation {
        return crate::cfn::flow::apply(g, &session, args.yes, args.break_lock).await;
    }
    let stack = session.stack.clone();
    let out = Output::of(g);
    reconcile(
        out,
        &session,
        &stack,
        Mode::Apply,
        args.yes,
        args.break_lock,
    )
    .await
}

fn fingerprint(plan: &Plan) -> Vec<(String, String, String)> {
    plan.resources
        .iter()
        .filter(|r| r.action.writes())
        .map(|r| {
            (
                r.id.clone(),
                format!("{:?}", r.action),
                serde_json::to_string(&r.changes).unwrap_or_default(),
            )
        })
        .collect()
}

/// Which of the two commands that change an environment is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Destroy,
}

impl Mode {
    /// The command's name, as typed and as recorded in the lock.
    pub fn command(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::Destroy => "destroy",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Mode::Apply => "Plan",
            Mode::Destroy => "Destroy plan",
        }
    }

    /// The capitalised verb of the progress and summary lines.
    fn verb(self) -> &'static str {
        match self {
            Mode::Apply => "Apply",
            Mode::Destroy => "Destroy",
        }
    }

    /// The confirmation question and the answer that confirms it: destroying asks for the
    /// environment's name, so a reflexive "yes" cannot delete it.
    fn question(self, env: &str, account: &str) -> (String, String) {
        match self {
            Mode::Apply => (
                format!("Apply these changes to env `{env}` in account {account}?"),
                "yes".into(),
            ),
            Mode::Destroy => (
                format!("Destroy the resources above in env `{env}` in account {account}?"),
                env.into(),
            ),
        }
    }
}

/// What one apply or destroy came to.
enum Ran {
    /// The plan had no changes: nothing was written.
    Nothing(Plan),
    /// Ctrl-C: operations in flight may still complete.
    Interrupted,
    Done(Plan, Vec<Outcome>),
}

/// Whether the run takes the lock before its only read. A destroy acts on every resource, so
/// reading them all before the lock and again under it would cost a whole plan; without a
/// question to ask (`--yes`) nothing is lost by holding the lock while reading. An apply reads
/// first so that a no-op apply writes nothing (not even the lock), and an interactive run does
/// not hold the lock while a person reads the plan.
fn locks_first(mode: Mode, yes: bool) -> bool {
    mode == Mode::Destroy && yes
}

/// The shared flow of apply and destroy.
pub async fn reconcile(
    out: Output,
    session: &Session,
    stack: &Stack,
    mode: Mode,
    yes: bool,
    break_lock: bool,
) -> Result<u8> {
    let ctx = &session.ctx;
    let started = Instant::now();
    let ran = match plan_and_run(out, session, stack, mode, yes, break_lock).await {
        Ok(ran) => ran,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("{e}");
            return Ok(exit::INTERRUPTED);
        }
        Err(e) => return Err(e),
    };
    match ran {
        Ran::Nothing(plan) => {
            out.document(render::json(
                &plan,
                mode.command(),
                Some(&[]),
                ctx.aws.log.counts(),
            ));
            Ok(exit::OK)
        }
        Ran::Interrupted => Ok(exit::INTERRUPTED),
        Ran::Done(plan, outcomes) => summarise(out, ctx, &plan, &outcomes, mode, started),
    }
}

/// Ctrl-C while reading, before any write: the lock, if held, is released on the way out.
#[derive(Debug, thiserror::Error)]
#[error("interrupted before any change: nothing was changed")]
struct Interrupted;

/// `work`, unless Ctrl-C comes first.
async fn interruptible<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        done = work => done,
        _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
    }
}

/// Plans, takes the lock (when and how `mode` and `yes` say), and runs the plan under it.
async fn plan_and_run(
    out: Output,
    session: &Session,
    stack: &Stack,
    mode: Mode,
    yes: bool,
    break_lock: bool,
) -> Result<Ran> {
    let ctx = &session.ctx;
    let place = &Place::of(&session.names);
    // Told by the apply when only guarded writes are left in flight: the lock may go then.
    let free = &tokio::sync::Notify::new();
    Ok(if locks_first(mode, yes) {
        let work = async {
            let plan = interruptible(first_plan(session, stack, None)).await?;
            out.text(&render::plan_text(&plan, mode.title()));
            if !to_run(&plan)? {
                return Ok(Ran::Nothing(plan));
            }
            execute(session, plan, mode, free).await
        };
        locked(session, stack, place, mode, break_lock, free, work).await?
    } else if mode == Mode::Apply && yes {
        let (first, lock) = plan_beside_lock(session, stack, place, break_lock).await?;
        out.text(&render::plan_text(&first, mode.title()));
        // Refused (another run holds the lock): after the plan, as when the lock comes later.
        let lock = lock.transpose()?;
        match (to_run(&first), lock) {
            (Ok(true), Some(lock)) => {
                let work = reread_and_execute(session, stack, &first, mode, free);
                lock.run(ctx, Some(free), work).await?
            }
            // A change no single read made certain (one that ownership inherited from a
            // dependency decides): the lock is taken now.
            (Ok(true), None) => {
                let work = reread_and_execute(session, stack, &first, mode, free);
                locked(session, stack, place, mode, break_lock, free, work).await?
            }
            // Nothing to do (a read's certain change did not survive classifying), or refused:
            // the lock a read asked for goes, and the refusal is the error.
            (nothing_or_refused, lock) => {
                let ran = nothing_or_refused.map(|_| Ran::Nothing(first));
                match lock {
                    Some(lock) => lock.run(ctx, None, std::future::ready(ran)).await?,
                    None => ran?,
                }
            }
        }
    } else {
        let first = first_plan(session, stack, None).await?;
        out.text(&render::plan_text(&first, mode.title()));
        if !to_run(&first)? {
            Ran::Nothing(first)
        } else {
            let (question, expected) = mode.question(&session.env, &ctx.account_id);
            confirm(&question, &expected, yes)?;
            let work = reread_and_execute(session, stack, &first, mode, free);
            locked(session, stack, place, mode, break_lock, free, work).await?
        }
    })
}

/// Whether `plan` has writes to run: `false` without changes, an error when apply refuses it
/// ([`check_runnable`]).
fn to_run(plan: &Plan) -> Result<bool> {
    if !plan.has_changes() {
        return Ok(false);
    }
    check_runnable(plan)?;
    Ok(true)
}

/// Takes the environment's lock and runs `work` holding it; the lock goes early when `free` is
/// told ([`Lock::run`]).
async fn locked<T>(
    session: &Session,
    stack: &Stack,
    place: &Place,
    mode: Mode,
    break_lock: bool,
    free: &tokio::sync::Notify,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let tags = &stack.ownership_tags;
    Lock::hold(
        &session.ctx,
        place,
        mode.command(),
        tags,
        break_lock,
        Some(free),
        work,
    )
    .await
}

/// Under the lock: reads again what the shown plan acts on (stopping at Ctrl-C), then runs it.
async fn reread_and_execute(
    session: &Session,
    stack: &Stack,
    shown: &Plan,
    mode: Mode,
    free: &tokio::sync::Notify,
) -> Result<Ran> {
    let plan = interruptible(reread(session, stack, shown, mode)).await?;
    execute(session, plan, mode, free).await
}

/// Runs the plan's writes (the lock held), or stops at Ctrl-C. `free` is told when only
/// guarded writes are left in flight ([`apply_freeing`]).
async fn execute(
    session: &Session,
    plan: Plan,
    mode: Mode,
    free: &tokio::sync::Notify,
) -> Result<Ran> {
    let count = plan.resources.iter().filter(|r| r.action.writes()).count();
    eprintln!("{}ing {count} change(s)...", mode.verb());
    let concurrency = session.config.deploy.concurrency;
    tokio::select! {
        o = apply_freeing(&session.ctx, &plan, concurrency, free) => Ok(Ran::Done(plan, o)),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: operations in flight may still complete; run {} again to converge", mode.command());
            Ok(Ran::Interrupted)
        }
    }
}

/// Reads the stack once; beside the reads goes the check that CloudFormation does not own the
/// environment. `changes` is told as soon as a read makes a change certain.
async fn first_plan(
    session: &Session,
    stack: &Stack,
    changes: Option<&tokio::sync::Notify>,
) -> Result<Plan> {
    let (ctx, env, tags) = (&session.ctx, &session.env, &stack.ownership_tags);
    let concurrency = session.config.deploy.concurrency;
    let read = async {
        match changes {
            Some(c) => plan::plan_noting(ctx, env, nodes(stack), tags, concurrency, c).await,
            None => plan::plan(ctx, env, nodes(stack), tags, concurrency).await,
        }
    };
    let (owned, plan) = tokio::join!(crate::cfn::flow::refuse_cloudformation_owned(session), read);
    owned?;
    plan
}

/// The first plan of `apply --yes`, with the lock taken beside it as soon as one read makes a
/// change certain: the lock's round-trip then hides behind the rest of the plan instead of
/// following it. What was read before the lock was taken is read again under it
/// ([`reread`]), as after a lock taken later. `None`: no read asked for the lock (or the
/// plan finished first); a plan with changes then takes it the usual way. `Some(Err)`: the
/// lock was refused (another run holds it), told after the plan is shown.
async fn plan_beside_lock(
    session: &Session,
    stack: &Stack,
    place: &Place,
    break_lock: bool,
) -> Result<(Plan, Option<Result<Lock>>)> {
    let ctx = &session.ctx;
    let changes = tokio::sync::Notify::new();
    let asked = std::sync::atomic::AtomicBool::new(false);
    let lock = async {
        changes.notified().await;
        asked.store(true, std::sync::atomic::Ordering::SeqCst);
        let tags = &stack.ownership_tags;
        Lock::acquire(ctx, place, Mode::Apply.command(), tags, break_lock).await
    };
    let plan = interruptible(first_plan(session, stack, Some(&changes)));
    tokio::pin!(lock, plan);
    let mut taken = None;
    let plan = loop {
        tokio::select! {
            p = &mut plan => break p,
            l = &mut lock, if taken.is_none() => taken = Some(l),
        }
    };
    let taken = match taken {
        Some(l) => Some(l),
        None if asked.load(std::sync::atomic::Ordering::SeqCst) => Some(lock.await),
        None => None,
    };
    match (plan, taken) {
        (Ok(plan), taken) => Ok((plan, taken)),
        // The plan's error wins; a failed release is only reported.
        (Err(e), Some(Ok(lock))) => lock.run(ctx, None, std::future::ready(Err(e))).await,
        (Err(e), _) => Err(e),
    }
}

/// Reads again, under the lock, what the shown plan acts on; stops if another run changed it.
async fn reread(session: &Session, stack: &Stack, shown: &Plan, mode: Mode) -> Result<Plan> {
    let second = plan::replan(
        &session.ctx,
        &session.env,
        nodes(stack),
        &stack.ownership_tags,
        session.config.deploy.concurrency,
        shown,
    )
    .await?;
    if fingerprint(&second) != fingerprint(shown) {
        bail!(
            "live state changed since the plan was shown; nothing was changed, run {} again",
            mode.command()
        );
    }
    check_runnable(&second)?;
    Ok(second)
}

fn summarise(
    out: Output,
    ctx: &crate::engine::Ctx,
    plan: &Plan,
    outcomes: &[Outcome],
    mode: Mode,
    started: Instant,
) -> Result<u8> {
    let done = Done::count(outcomes);
    let failed = done.failed + done.skipped;
    let calls = ctx.aws.log.counts();
    out.document(render::json(
        plan,
        mode.command(),
        Some(outcomes),
        calls.clone(),
    ));
    eprintln!(
        "{} {}: {}{} in {:.1}s ({} API calls: {} reads, {} writes, {} retries)",
        mode.verb(),
        if failed == 0 { "complete" } else { "FAILED" },
        done.text(),
        if failed > 0 {
            format!(
                ", {} failed, {} skipped (see the errors above)",
                done.failed, done.skipped
            )
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64(),
        calls.reads + calls.writes,
        calls.reads,
        calls.writes,
        calls.retries
    );
    Ok(if failed == 0 { exit::OK } else { exit::ERROR })
}

/// What an apply did, counted from its outcomes rather than its plan: a create that failed or
/// was skipped is not "created".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Done {
    pub created: usize,
    pub updated: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Done {
    pub fn count(outcomes: &[Outcome]) -> Done {
        let mut d = Done::default();
        for o in outcomes {
            match (o.status, o.action) {
                (Status::Failed, _) => d.failed += 1,
                (Status::Skipped, _) => d.skipped += 1,
                (Status::Done, Action::Create) => d.created += 1,
                (Status::Done, Action::Update) => d.updated += 1,
                (Status::Done, Action::Replace) => d.replaced += 1,
                (Status::Done, Action::Delete) => d.deleted += 1,
                (Status::Done, Action::NoOp | Action::Conflict) => {}
            }
        }
        d
    }

    fn text(&self) -> String {
        format!(
            "{} created, {} updated, {} replaced, {} deleted",
            self.created, self.updated, self.replaced, self.deleted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(action: Action, status: Status) -> Outcome {
        Outcome {
            id: "r".into(),
            action,
            status,
            millis: 0,
            error: None,
            report: None,
        }
    }

    #[test]
    fn counts_what_happened_not_what_was_planned() {
        let outcomes = [
            outcome(Action::Create, Status::Done),
            outcome(Action::Create, Status::Done),
            outcome(Action::Create, Status::Failed),
            outcome(Action::Create, Status::Skipped),
            outcome(Action::Update, Status::Done),
            outcome(Action::Delete, Status::Skipped),
            outcome(Action::Replace, Status::Done),
        ];
        let d = Done::count(&outcomes);
        assert_eq!(
            d,
            Done {
                created: 2,
                updated: 1,
                replaced: 1,
                deleted: 0,
                failed: 1,
                skipped: 2,
            }
        );
        assert_eq!(d.text(), "2 created, 1 updated, 1 replaced, 0 deleted");
    }
}
