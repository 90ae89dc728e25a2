//! The function zips a plan or apply deploys: built now, or taken as they are from a
//! directory (`--skip-build`, `--artifacts-dir`), and turned into the stack's code references.
//!
//! `apply` builds what it deploys so that the code in AWS is never older than the tree; the
//! build is incremental, so an unchanged tree costs a few cargo no-op runs and the same SHA-256.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use stacks::{Code, Config};

use crate::build::{self, BuildOptions, Target};
use crate::session::project_root;

/// Where the code of a run comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CodeArgs {
    /// Deploy the zips already in the build output directory instead of building first.
    #[arg(long)]
    pub skip_build: bool,
    /// Deploy `<DIR>/<function>.zip` as they are (implies --skip-build).
    #[arg(long, value_name = "DIR")]
    pub artifacts_dir: Option<PathBuf>,
}

/// What the code map is needed for.
#[derive(Debug, Clone)]
pub enum CodeSource {
    /// Plan or apply: the functions' code must be known.
    Deploy(CodeArgs),
    /// Destroy: code does not matter.
    None,
}

/// The build target of an environment: with an emulator the code runs on this machine (moto
/// cannot execute it without Docker; xtask's local runtime does), so a host build is what runs
/// there; everything else gets Lambda binaries (glibc 2.34, checked).
pub fn target_for(config: &Config) -> Target {
    if config.emulator.is_some() {
        Target::Host
    } else {
        Target::Lambda
    }
}

/// The code reference of every function of the stack, building first unless told not to.
pub async fn prepare(config: &Config, want: &CodeSource) -> Result<BTreeMap<String, Code>> {
    let CodeSource::Deploy(args) = want else {
        return Ok(BTreeMap::new());
    };
    if !config.functions.enabled {
        return Ok(BTreeMap::new());
    }
    let functions: Vec<String> = stacks::invoice_app::FUNCTIONS
        .iter()
        .map(|f| f.to_string())
        .collect();
    let target = target_for(config);
    let dir = match &args.artifacts_dir {
        Some(dir) => dir.clone(),
        None => {
            let mut opts = BuildOptions::new(project_root(), target);
            if !args.skip_build {
                opts.only = Some(functions.clone());
                let out = opts.out_dir.clone();
                tokio::task::spawn_blocking(move || build::build(&opts))
                    .await
                    .context("the build task panicked")?
                    .context(
                        "building the functions (pass --skip-build to deploy existing zips)",
                    )?;
                out
            } else {
                opts.out_dir
            }
        }
    };
    read_zips(&dir)
}

/// Every function's `<dir>/<function>.zip`, hashed ([`read_zip`]).
pub fn read_zips(dir: &Path) -> Result<BTreeMap<String, Code>> {
    stacks::invoice_app::FUNCTIONS
        .iter()
        .map(|f| Ok((f.to_string(), read_zip(dir, f)?)))
        .collect()
}

/// Hashes `<dir>/<function>.zip`: the bytes that will be uploaded are the bytes hashed.
fn read_zip(dir: &Path, function: &str) -> Result<Code> {
    let zip_path = dir.join(format!("{function}.zip"));
    let bytes = std::fs::read(&zip_path).with_context(|| {
        format!(
            "no artifact for function {function}: reading {} failed; run `cargo xtask build` or drop --skip-build",
            zip_path.display()
        )
    })?;
    let (sha256_hex, sha256_b64) = build::sha256_hex_and_b64(&bytes);
    Ok(Code {
        zip_path,
        size_bytes: bytes.len() as u64,
        sha256_hex,
        sha256_b64,
    })
}
