//! `cargo xtask destroy`: delete everything this environment owns, nothing else.
//!
//! The plan lists each deletion, with how many object versions and delete markers each bucket
//! will have purged; on a terminal the user must type the environment's name.

use anyhow::Result;

use super::apply::{Mode, reconcile};
use crate::artifacts::CodeSource;
use crate::engine::Options;
use crate::session::{Global, Output, Session};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not ask for confirmation (for scripts and CI).
    #[arg(long, short)]
    pub yes: bool,
    /// Turn off deletion protection on tables before deleting them.
    #[arg(long)]
    pub override_deletion_protection: bool,
    /// Take the environment lock even if another run holds it (only when that run is dead).
    #[arg(long)]
    pub break_lock: bool,
    /// The engine that deployed the environment: `direct` (default) or `cloudformation`.
    #[arg(long, value_enum, default_value_t = super::Engine::Direct)]
    pub engine: super::Engine,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    let options = Options {
        allow_data_loss: true,
        override_deletion_protection: args.override_deletion_protection,
    };
    let session = Session::open(g, options, &CodeSource::None).await?;
    if args.engine == super::Engine::Cloudformation {
        return crate::cfn::flow::destroy(g, &session, args.yes, args.break_lock).await;
    }
    let stack = session.stack.clone().into_absent();
    reconcile(
        Output::of(g),
        &session,
        &stack,
        Mode::Destroy,
        args.yes,
        args.break_lock,
    )
    .await
}
