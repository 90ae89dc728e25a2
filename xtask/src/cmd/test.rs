//! `cargo xtask test`: the one command that runs every test on a fresh machine.
//!
//! It makes sure a Python with moto is available (installing it into the project venv when
//! `python3` lacks it), puts that interpreter first on `PATH` so every test's private emulator
//! finds it, then runs `cargo test` on the whole workspace.

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

pub async fn run(args: &Args) -> Result<u8> {
    let root = project_root();
    let python = emulator::ensure_moto(&root.join(".xtask").join("venv"))
        .await
        .context("preparing the moto emulator for the tests")?;
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = python.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).context("building PATH")?;
    }
    eprintln!(
        "running the workspace tests (emulator: {})",
        python.display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["test", "--workspace", "--locked"])
        .args(&args.cargo_args)
        .env("PATH", path)
        .status()
        .context("running cargo test")?;
    Ok(if status.success() {
        exit::OK
    } else {
        exit::ERROR
    })
}
