//! `cargo xtask apply`: plan, confirm, lock, re-plan under the lock, execute, summarise.
//!
//! A plan without changes returns before the lock is taken, so a no-op apply makes no write
//! call at all. What the plan acts on is read again under the lock ([`plan::replan`]): another
//! run may have changed it between the first read and the confirmation.

use std::time::Instant;

use anyhow::{Result, bail};
use stacks::Stack;

use super::{Engine, exit, nodes};
use crate::artifacts::{CodeArgs, CodeSource};
use crate::engine::apply::{Outcome, Status, apply, check_runnable};
use crate::engine::plan::{Action, Plan};
use crate::engine::{Options, plan, render};
use crate::lock::Lock;
use crate::session::{Global, SeedArgs, Session, confirm};
use stacks::names::Names;

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
    reconcile(g, &session, &stack, "apply", args.yes, args.break_lock).await
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

/// The shared flow of apply and destroy.
pub async fn reconcile(
    g: &Global,
    session: &Session,
    stack: &Stack,
    command: &str,
    yes: bool,
    break_lock: bool,
) -> Result<u8> {
    let ctx = &session.ctx;
    crate::cfn::flow::refuse_cloudformation_owned(session).await?;
    let concurrency = session.config.deploy.concurrency;
    let started = Instant::now();
    let title = if command == "destroy" {
        "Destroy plan"
    } else {
        "Plan"
    };
    let first = plan::plan(
        ctx,
        &session.env,
        nodes(stack),
        &stack.ownership_tags,
        concurrency,
    )
    .await?;
    // Text goes to stderr under --json so stdout stays one JSON document.
    let text = render::plan_text(&first, title);
    if g.json || g.text_to_stderr {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if !first.has_changes() {
        if g.json && !g.text_to_stderr {
            println!(
                "{}",
                render::json(&first, command, Some(&[]), ctx.aws.log.counts())
            );
        }
        return Ok(exit::OK);
    }
    check_runnable(&first)?;
    let question = format!(
        "{} env `{}` in account {}?",
        if command == "destroy" {
            "Destroy the resources above in"
        } else {
            "Apply these changes to"
        },
        session.env,
        ctx.account_id
    );
    let expected = if command == "destroy" {
        session.env.as_str()
    } else {
        "yes"
    };
    confirm(&question, expected, yes)?;

    let names = Names::new(&session.config, &session.env, &ctx.account_id);
    let work = async {
        let second = plan::replan(
            ctx,
            &session.env,
            nodes(stack),
            &stack.ownership_tags,
            concurrency,
            &first,
        )
        .await?;
        if fingerprint(&second) != fingerprint(&first) {
            bail!(
                "live state changed since the plan was shown; nothing was changed, run {command} again"
            );
        }
        check_runnable(&second)?;
        eprintln!(
            "{}ing {} change(s)...",
            if command == "destroy" {
                "Destroy"
            } else {
                "Apply"
            },
            second
                .resources
                .iter()
                .filter(|r| r.action.writes())
                .count()
        );
        let outcomes = tokio::select! {
            o = apply(ctx, &second, concurrency) => o,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: operations in flight may still complete; run {command} again to converge");
                return Ok((second, None));
            }
        };
        Ok((second, Some(outcomes)))
    };
    let (plan, outcomes) = Lock::hold(
        ctx,
        &names.lock_parameter(),
        command,
        &stack.ownership_tags,
        break_lock,
        work,
    )
    .await?;
    let Some(outcomes) = outcomes else {
        return Ok(exit::INTERRUPTED);
    };
    let done = Done::count(&outcomes);
    let failed = done.failed + done.skipped;
    let calls = ctx.aws.log.counts();
    if g.json && !g.text_to_stderr {
        println!(
            "{}",
            render::json(&plan, command, Some(&outcomes), calls.clone())
        );
    }
    eprintln!(
        "{} {}: {}{} in {:.1}s ({} API calls: {} reads, {} writes, {} retries)",
        if command == "destroy" {
            "Destroy"
        } else {
            "Apply"
        },
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
