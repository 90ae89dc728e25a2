//! `cargo xtask test`: the one command that runs every test on a fresh machine.
//!
//! It makes sure a Python with moto is available (installing it into the project venv when
//! `python3` lacks it), puts that interpreter first on `PATH` so every test's private emulator
//! finds it, then runs `cargo test --workspace` once.
//! Before that it installs the independent checkers some tests run ([`TEST_TOOLS`]) into the
//! same Python, and exports that interpreter as `XTASK_PYTHON` so a test runs a checker as
//! `$XTASK_PYTHON -m <module>` (falling back to `python3` under a plain `cargo test`).
//! One run, because cargo unifies dependency features over the packages of one build and
//! xtask's manifest asks for the union of what every member and test needs: the workspace-wide
//! test build resolves exactly the features `cargo xtask` was built with, so the AWS SDK
//! compiled for xtask serves every test (the test `host_builds_share_xtask_s_dependencies`
//! keeps it so). `--no-fail-fast`: a failing crate does not hide the others' results.

use std::process::Command;

use anyhow::{Context as _, Result};

use super::exit;
use crate::emulator;
use crate::session::project_root;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (e.g. `-- --nocapture` or a test name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_args: Vec<String>,
}

/// PyPI packages some tests run as independent checkers: `(module to import, requirement)`.
/// A test that needs one fails (never skips) when it is missing.
pub const TEST_TOOLS: &[(&str, &str)] = &[
    // tests/cfn.rs lints the CloudFormation template of every config.
    ("cfnlint", "cfn-lint"),
    // IAM policy linter: tests/environments.rs runs it over every policy each config produces.
    ("parliament", "parliament>=1.6,<2"),
    // The OpenAPI conformance test; its CLI flags changed in 4.0.
    ("schemathesis", "schemathesis>=4.32,<5"),
];

pub async fn run(args: &Args) -> Result<u8> {
    let root = project_root();
    let python = emulator::ensure_moto(&root.join(".xtask").join("venv"))
        .await
        .context("preparing the moto emulator for the tests")?;
    ensure_test_tools(&python).context("installing the tests' Python checkers")?;
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = python.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).context("building PATH")?;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("running the tests (emulator: {})", python.display());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--locked", "--workspace", "--no-fail-fast"])
        .args(&args.cargo_args)
        .env("PATH", &path)
        .env("XTASK_PYTHON", &python)
        .status()
        .context("running cargo test")?;
    let ok = status.success();
    Ok(if ok { exit::OK } else { exit::ERROR })
}

/// Installs the [`TEST_TOOLS`] that `python` cannot import yet, with its own pip.
fn ensure_test_tools(python: &std::path::Path) -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(module, _)| {
            !Command::new(python)
                .args(["-c", &format!("import {module}")])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, requirement)| *requirement)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing the tests' checkers: {}", missing.join(" "));
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&missing)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {} -m pip", python.display()))?;
    anyhow::ensure!(
        status.success(),
        "pip install {} failed: {status}",
        missing.join(" ")
    );
    Ok(())
}
