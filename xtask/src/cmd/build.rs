//! `cargo xtask build`: build and package the Lambda functions under `functions/`.

use anyhow::Result;

use super::exit;
use crate::build::{self, BuildOptions, Target};
use crate::session::{Global, load_config, project_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build only this function (repeatable); default: every crate under functions/.
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
    /// Build for this machine instead of Lambda (enough for the local emulator).
    #[arg(long)]
    pub host: bool,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    // The local environment never runs the code it stores, so a host build is enough there.
    let local = load_config(g)
        .map(|(c, _)| c.emulator.is_some())
        .unwrap_or(false);
    let target = if args.host || local {
        Target::Host
    } else {
        Target::Lambda
    };
    let mut opts = BuildOptions::new(project_root(), target);
    if !args.functions.is_empty() {
        opts.only = Some(args.functions.clone());
    }
    let artifacts = tokio::task::spawn_blocking(move || build::build(&opts)).await??;
    for a in &artifacts {
        println!("{a}");
    }
    Ok(exit::OK)
}
