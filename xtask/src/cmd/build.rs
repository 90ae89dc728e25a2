//! `cargo xtask build`: build and package the Lambda functions under `functions/`, then print
//! one row per function (binary and zip size, glibc ceiling) and the total time, or `--json`.

use anyhow::{Context as _, Result};

use super::exit;
use crate::build::{self, BuildOptions, Target};
use crate::session::{Global, load_config, project_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build only this function (repeatable); default: every crate under functions/.
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
    /// Build for this machine instead of Lambda (what the local environment runs).
    #[arg(long)]
    pub host: bool,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    // The local environment runs the functions on this machine, so a host build is what it
    // needs; every other environment deploys to Lambda.
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
    let report = tokio::task::spawn_blocking(move || build::build(&opts))
        .await
        .context("the build task panicked")??;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(exit::OK)
}
