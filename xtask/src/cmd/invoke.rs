//! `cargo xtask invoke <function> [--event FILE|-]`: invoke one deployed function locally.
//!
//! Runs the version behind the function's `live` alias in the local environment: its code
//! (the artifact the version reports, fetched from the artifacts bucket), environment, memory
//! and timeout, read back from the emulator, through the local Lambda runtime. `--code PATH`
//! runs another `bootstrap` or zip with the deployed configuration (to try a build before
//! applying it).
//!
//! Prints the response JSON on stdout; the function's logs and Lambda's `REPORT` line go to
//! stderr. A function error, timeout or crash prints Lambda's error document and exits 1.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use super::exit;
use crate::artifacts::CodeSource;
use crate::engine::Options;
use crate::local::deployed;
use crate::local::runtime::{Code, EmulatorAccess, InvokeOutcome, LocalConfig, LocalLambda};
use crate::session::{Global, Session, emulator_config, load_config, project_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function: a crate under functions/ (insert-invoice) or its Lambda name.
    pub function: String,
    /// The event as a JSON file, or `-` for stdin; default `{}`.
    #[arg(long, value_name = "FILE|-")]
    pub event: Option<PathBuf>,
    /// Run this `bootstrap` binary or deployment zip instead of the deployed code.
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
    let session = Session::open(g, Options::default(), &CodeSource::None).await?;
    let aws = &session.ctx.aws;
    let names = &session.names;
    let name = if stacks::invoice_app::FUNCTIONS.contains(&args.function.as_str()) {
        names.function(&args.function)
    } else {
        args.function.clone()
    };
    let alias = stacks::invoice_app::ALIAS;
    let Some(deployed) = deployed::read_function(aws, &name, alias).await? else {
        bail!(
            "function {name} (alias `{alias}`) is not deployed in env `{}`; run `cargo xtask up` \
             or `cargo xtask apply` first",
            g.env
        );
    };
    let mut spec = match &args.code {
        Some(path) => {
            let mut s = deployed.runtime_config(path.clone());
            if path.extension().is_none_or(|e| e != "zip") {
                s.code = Code::Binary(path.clone());
            }
            s
        }
        None => {
            let zip = deployed::fetch_code(
                aws,
                &names.artifacts_bucket(),
                &deployed,
                &project_root().join("target/xtask/local/code"),
            )
            .await?;
            deployed.runtime_config(zip)
        }
    };
    spec.name = name.clone();
    eprintln!("invoking {name} version {} ({alias})", deployed.version);
    let mut lcfg = LocalConfig::new(vec![spec]);
    lcfg.region = session.ctx.region.clone();
    lcfg.account_id = session.ctx.account_id.clone();
    lcfg.emulator = Some(EmulatorAccess::moto(emu.endpoint()));
    let lambda = LocalLambda::start(lcfg).await?;
    let invoked = lambda.invoke(&name, event).await?;
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
