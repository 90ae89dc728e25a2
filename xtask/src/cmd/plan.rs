//! `cargo xtask plan`: read live state and show what apply would change.

use anyhow::Result;

use super::{Engine, exit, nodes};
use crate::artifacts::{CodeArgs, CodeSource};
use crate::engine::{Options, plan, render};
use crate::session::{Global, SeedArgs, Session};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit 2 when there are changes, 0 when there are none (1 on errors).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan the deletion of everything this environment owns (what destroy would do).
    #[arg(long)]
    pub destroy: bool,
    /// The deployment engine: `direct` (default) or `cloudformation` (a change set).
    #[arg(long, value_enum, default_value_t = Engine::Direct)]
    pub engine: Engine,
    #[command(flatten)]
    pub code: CodeArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    let code = if args.destroy {
        CodeSource::None
    } else {
        CodeSource::Deploy(args.code.clone())
    };
    let mut session = Session::open(g, Options::default(), &code).await?;
    session.seed_args(args.seed);
    if args.engine == Engine::Cloudformation {
        if args.destroy {
            anyhow::bail!(
                "plan --destroy --engine cloudformation: run `destroy --engine cloudformation`, which shows the stack's resources before asking"
            );
        }
        return crate::cfn::flow::plan(g, &session, args.detailed_exitcode).await;
    }
    crate::cfn::flow::refuse_cloudformation_owned(&session).await?;
    let stack = if args.destroy {
        session.stack.clone().into_absent()
    } else {
        session.stack.clone()
    };
    let ctx = &session.ctx;
    let plan = plan::plan(
        ctx,
        &session.env,
        nodes(&stack),
        &stack.ownership_tags,
        session.config.deploy.concurrency,
    )
    .await?;
    if g.json {
        println!(
            "{}",
            render::json(&plan, "plan", None, ctx.aws.log.counts())
        );
    } else {
        print!("{}", render::plan_text(&plan, "Plan"));
        let c = ctx.aws.log.counts();
        eprintln!("({} API reads, {} writes)", c.reads, c.writes);
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        exit::CHANGES
    } else {
        exit::OK
    })
}
