//! `cargo xtask up [--watch]`: run the whole invoice app on this machine.
//!
//! Starts the emulator, builds the functions for this machine, applies the `local` environment
//! (the same reconcile as `apply --yes`), then serves what is deployed: the REST API stage on
//! `http://127.0.0.1:<port>/<stage>/...` through the local gateway, the functions as local
//! processes behind their `live` alias, and the invoices table's stream through the local
//! poller into generate-pdf. Prints the URL, the API key and a `curl` example (with `--json`,
//! one `{"event":"ready",...}` line on stdout instead).
//!
//! The data plane ([`crate::local`]) follows the control plane: every
//! [`REFRESH`](crate::local::follow::REFRESH) it reads the aliases and the stage's deployment, and when either moved (a `--watch` rebuild, or an `apply` from another
//! terminal) it loads the new versions and swaps them in; requests in flight finish on the old
//! processes. Ctrl-C (or SIGTERM) stops the gateway, the poller and every function process.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::apply::{Mode, reconcile};
use super::exit;
use crate::artifacts::{CodeArgs, CodeSource};
use crate::emulator::EmulatorConfig;
use crate::engine::Options;
use crate::local::app::{AppOptions, LocalApp};
use crate::local::follow::Loader;
use crate::local::runtime::{EmulatorAccess, FunctionLogs, LocalConfig};
use crate::local::sources::snapshot;
use crate::session::{
    Global, Output, SeedArgs, Session, emulator_config, load_config, project_root,
};

/// How often `--watch` looks at the functions' sources.
const WATCH_POLL: Duration = Duration::from_millis(700);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port of the local API gateway on 127.0.0.1 (0: any free port, printed when ready).
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Rebuild and re-apply when a function's source changes; the gateway follows the alias.
    /// (`--skip-build` then only skips the first build.)
    #[arg(long, conflicts_with = "artifacts_dir")]
    pub watch: bool,
    /// Processes (and so concurrent invocations) per function at most.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_processes: u16,
    /// Do not poll the invoices table's stream (PDFs are then not generated).
    #[arg(long)]
    pub no_streams: bool,
    /// Do not print one line per request and function log lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub code: CodeArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    let started = Instant::now();
    let (config, _) = load_config(g)?;
    let Some(emu) = emulator_config(&config) else {
        bail!(
            "`up` runs the app on this machine against the local emulator, but env `{}` has no \
             [emulator] section; use --env local (or `apply` to deploy to AWS)",
            g.env
        );
    };
    if !config.api.enabled {
        bail!(
            "`up` serves the REST API, but api.enabled is false in env `{}`",
            g.env
        );
    }
    // Bind first: a port in use should fail before minutes of building.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| {
            format!(
                "listening on 127.0.0.1:{} (choose another with --port)",
                args.port
            )
        })?;
    let port = listener.local_addr()?.port();

    let session = deploy(g, &args.code, args.seed).await?;
    let loader = Loader::new(
        session.ctx.aws.clone(),
        session.names.clone(),
        &config.api.stage_name,
        project_root().join("target/xtask/local/code"),
        runtime_config(&session, &emu, args),
    );
    let options = AppOptions {
        quiet: args.quiet,
        // Beside the emulator's state, per environment: a restarted `up` resumes where it
        // stopped instead of re-delivering or skipping records.
        stream_checkpoints: (!args.no_streams).then(|| {
            project_root()
                .join(".xtask/local")
                .join(&g.env)
                .join("stream-checkpoints.json")
        }),
    };
    let app = LocalApp::start(loader, listener, &session.ctx.account_id, options).await?;
    print_ready(g, args, &emu, port, &app, started.elapsed());

    // `--watch` runs here, in the command's own task: the engine's futures are not `Send` for
    // rustc's inference, so they cannot be spawned.
    watch_until_stopped(g, args, &app).await;
    eprintln!("stopping...");
    app.stop().await;
    eprintln!("stopped");
    Ok(exit::OK)
}

/// How the functions run: as local processes talking to the emulator, as many at once as
/// `--max-processes` allows.
fn runtime_config(session: &Session, emu: &EmulatorConfig, args: &Args) -> LocalConfig {
    let mut c = LocalConfig::new(Vec::new());
    c.region = session.ctx.region.clone();
    c.account_id = session.ctx.account_id.clone();
    c.emulator = Some(EmulatorAccess::moto(emu.endpoint()));
    c.max_processes = usize::from(args.max_processes);
    c.logs = if args.quiet {
        FunctionLogs::Discard
    } else {
        FunctionLogs::Stderr
    };
    c
}

/// Says the app is ready: one JSON line on stdout with `--json`, else how to call it.
fn print_ready(
    g: &Global,
    args: &Args,
    emu: &EmulatorConfig,
    port: u16,
    app: &LocalApp,
    elapsed: Duration,
) {
    let (url, api_key) = (&app.url, &app.api_key);
    if g.json {
        println!(
            "{}",
            json!({
                "event": "ready",
                "url": url,
                "port": port,
                "stage": app.stage,
                "api_key": api_key,
                "functions": app.functions,
                "emulator": emu.endpoint(),
                "seconds": elapsed.as_secs_f64(),
            })
        );
    } else {
        eprintln!(
            "\nThe invoice app is running locally ({:.1} s). Ctrl-C stops it.\n\n  URL      {url}\n  API key  {api_key}\n  emulator {}{}\n\nTry:\n  curl -s -X POST {url}/insert-invoice -H 'x-api-key: {api_key}' -H 'content-type: application/json' \\\n    -d '{{\"InvoiceID\":\"INV-1\",\"CustomerID\":\"CUST-1\",\"InvoiceDate\":\"2026-11-25\",\"ProductList\":[\"Laptop\"],\"TotalAmount\":129900}}'\n  curl -s '{url}/list-invoices?customerId=CUST-1' -H 'x-api-key: {api_key}'\n  curl -s '{url}/download-invoice?InvoiceID=INV-1' -H 'x-api-key: {api_key}'\n",
            elapsed.as_secs_f64(),
            emu.endpoint(),
            if args.watch {
                "\n  watching functions/ for changes"
            } else {
                ""
            },
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Waits for Ctrl-C or SIGTERM; with `--watch`, meanwhile rebuilds and re-applies when a
/// function's source changes, and has the app pick the new versions up at once.
async fn watch_until_stopped(g: &Global, args: &Args, app: &LocalApp) {
    let stop_signal = wait_for_stop_signal();
    tokio::pin!(stop_signal);
    let root = project_root().join("functions");
    let mut last = args.watch.then(|| snapshot(&root));
    loop {
        tokio::select! {
            _ = &mut stop_signal => return,
            _ = tokio::time::sleep(WATCH_POLL), if last.is_some() => {
                let now = snapshot(&root);
                if Some(&now) == last.as_ref() {
                    continue;
                }
                // Let an editor finish writing a burst of files.
                tokio::time::sleep(Duration::from_millis(300)).await;
                last = Some(snapshot(&root));
                eprintln!("change in functions/: rebuilding and applying...");
                let t = Instant::now();
                // Always a build: that is what the change is for.
                match deploy(g, &CodeArgs::default(), args.seed).await {
                    Ok(_) => {
                        eprintln!("re-applied in {:.1} s", t.elapsed().as_secs_f64());
                        app.refresh_now();
                    }
                    Err(e) => eprintln!(
                        "error: {e:#}\n(still serving the previous version; fix and save to retry)"
                    ),
                }
            }
        }
    }
}

/// Ctrl-C or SIGTERM (what a test harness or a process manager sends).
async fn wait_for_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// Builds and applies the environment, as `apply --yes` does, keeping stdout for `--json`.
async fn deploy(g: &Global, code: &CodeArgs, seed: SeedArgs) -> Result<Session> {
    let mut session =
        Session::open(g, Options::default(), &CodeSource::Deploy(code.clone())).await?;
    session.seed_args(seed);
    let stack = session.stack.clone();
    let code = reconcile(Output::Embedded, &session, &stack, Mode::Apply, true, false).await?;
    if code != exit::OK {
        bail!("apply failed; fix the error above and run `cargo xtask up` again");
    }
    Ok(session)
}
