//! `cargo xtask invoke <function> [--event FILE|-]`: build one function for this machine and
//! run it once through the local Lambda runtime, with the environment it has in the local
//! environment (table and bucket names, emulator endpoint and credentials).
//!
//! Prints the response JSON on stdout; the function's logs and Lambda's `REPORT` line go to
//! stderr. A function error, timeout or crash prints Lambda's error document and exits 1.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use super::exit;
use crate::build::{self, BuildOptions, Target};
use crate::emulator::{self, Started};
use crate::local::runtime::{Code, EmulatorAccess, InvokeOutcome, LocalConfig, LocalLambda};
use crate::local::{self, EMULATOR_ACCOUNT_ID};
use crate::session::{Global, emulator_config, load_config, project_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function: a crate under functions/, e.g. insert-invoice.
    pub function: String,
    /// The event as a JSON file, or `-` for stdin; default `{}`.
    #[arg(long, value_name = "FILE|-")]
    pub event: Option<PathBuf>,
    /// Run this `bootstrap` binary or deployment zip instead of building the function.
    #[arg(long, value_name = "PATH")]
    pub code: Option<PathBuf>,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    let (config, _) = load_config(g)?;
    let Some(emu) = emulator_config(&config) else {
        bail!(
            "`invoke` runs functions on this machine against the local emulator, but env `{}` has \
             no [emulator] section; use --env local",
            g.env
        );
    };
    let event = read_event(args.event.as_deref())?;
    if let Started::Started { pid } = emulator::ensure_running(&emu)
        .await
        .context("starting the local emulator")?
    {
        eprintln!(
            "started the local emulator (moto, pid {pid}) at {}",
            emu.endpoint()
        );
    }

    let code = match &args.code {
        Some(path) if path.extension().is_some_and(|e| e == "zip") => Code::Zip(path.clone()),
        Some(path) => Code::Binary(path.clone()),
        None => {
            let mut opts = BuildOptions::new(project_root(), Target::Host);
            opts.only = Some(vec![args.function.clone()]);
            let artifacts = tokio::task::spawn_blocking(move || build::build(&opts)).await??;
            let artifact = artifacts
                .into_iter()
                .next()
                .context("the build produced no artifact")?;
            // The zip, not the binary: what runs locally is what would be deployed.
            Code::Zip(artifact.zip_path)
        }
    };
    let spec = local::function_spec(&config, &g.env, &args.function, code);
    let mut lcfg = LocalConfig::new(vec![spec]);
    lcfg.region = if config.region.is_empty() {
        "us-east-1".into()
    } else {
        config.region.clone()
    };
    lcfg.account_id = EMULATOR_ACCOUNT_ID.into();
    lcfg.emulator = Some(EmulatorAccess::moto(emu.endpoint()));
    let lambda = LocalLambda::start(lcfg).await?;
    let invoked = lambda.invoke(&args.function, event).await?;
    lambda.shutdown().await;

    let (payload, error) = invoked.outcome.invoke_payload(&invoked.request_id);
    println!("{}", serde_json::to_string_pretty(&payload)?);
    if let InvokeOutcome::Crashed { logs, .. } = &invoked.outcome
        && !logs.is_empty()
    {
        eprintln!("last output of the process:\n{}", logs.join("\n"));
    }
    Ok(if error.is_some() {
        exit::ERROR
    } else {
        exit::OK
    })
}

fn read_event(path: Option<&std::path::Path>) -> Result<serde_json::Value> {
    let text = match path {
        None => return Ok(serde_json::json!({})),
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the event from stdin")?;
            s
        }
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the event {}", p.display()))?,
    };
    serde_json::from_str(&text).context("the event is not valid JSON")
}
