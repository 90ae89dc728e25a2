//! `cargo xtask`: the invoice app's deployer.
//!
//! Cargo finds it through the `xtask` alias in `.cargo/config.toml`, as in rust-analyzer.
//! Flags are parsed here and each command runs in its own module under `cmd/`.
//!
//! Exit codes: 0 success (and, for `plan --detailed-exitcode`, no changes); 1 error;
//! 2 changes pending (`plan --detailed-exitcode`); 130 interrupted.

use std::ffi::OsStr;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::cmd::{self, exit};
use xtask::session::Global;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Plan, apply and destroy the invoice app on AWS or on the local emulator",
    after_help = "Exit codes: 0 ok / no changes, 1 error, 2 changes pending (plan --detailed-exitcode), 130 interrupted."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what apply would change (reads only).
    Plan(cmd::plan::Args),
    /// Create, update and replace resources until AWS matches the config.
    Apply(cmd::apply::Args),
    /// Delete everything the environment owns, after purging bucket versions.
    Destroy(cmd::destroy::Args),
    /// Write the environment's CloudFormation template (the same stack as the direct engine).
    Synth(cmd::synth::Args),
    /// Build and package the Lambda functions.
    Build(cmd::build::Args),
    /// Print the invoke URL, endpoints, API key id, table, bucket and alias names (reads only).
    Outputs(cmd::outputs::Args),
    /// Invoke one deployed function locally (the version behind its alias) against the emulator.
    Invoke(cmd::invoke::Args),
    /// Run the whole app locally: emulator, build, apply, then serve the API, the functions and
    /// the stream trigger until Ctrl-C.
    Up(cmd::up::Args),
    /// Load figures of a running `up` (wrk on two endpoints, insert -> PDF latency); `bench
    /// engine`: plan and apply depth under AWS-like latency.
    Bench(cmd::bench::Args),
    /// Run every test of the workspace, installing the emulator first if needed.
    Test(cmd::test::Args),
    /// Manage the local emulator (moto server).
    #[command(subcommand)]
    Emulator(cmd::emulator::Command),
}

/// Whether log lines on stderr carry ANSI colour: only on a terminal (a file or a pipe gets
/// plain text), and never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = if cli.global.verbose {
        "xtask=info"
    } else if matches!(cli.command, Command::Up(_)) {
        // The local data plane reports what it serves (stream batches, reloads).
        "xtask=warn,xtask::local=info"
    } else {
        "xtask=warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XTASK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let g = &cli.global;
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Plan(a) => cmd::plan::run(g, a).await,
            Command::Apply(a) => cmd::apply::run(g, a).await,
            Command::Destroy(a) => cmd::destroy::run(g, a).await,
            Command::Build(a) => cmd::build::run(g, a).await,
            Command::Synth(a) => cmd::synth::run(g, a).await,
            Command::Outputs(a) => cmd::outputs::run(g, a).await,
            Command::Emulator(c) => cmd::emulator::run(g, c).await,
            Command::Test(a) => cmd::test::run(a).await,
            Command::Invoke(a) => cmd::invoke::run(g, a).await,
            Command::Up(a) => cmd::up::run(g, a).await,
            Command::Bench(a) => cmd::bench::run(g, a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(
            !colour(false, None),
            "a file or a pipe gets no escape codes"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, Some(OsStr::new("1"))));
        // no-color.org: an empty NO_COLOR does not count as set.
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(false, Some(OsStr::new(""))));
    }
}
