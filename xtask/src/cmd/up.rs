//! `cargo xtask up [--watch]`: run the whole invoice app on this machine.
//!
//! Starts the emulator, builds the functions for this machine, applies the `local` environment
//! (the same reconcile as `apply --yes`), then serves what is deployed: the REST API stage on
//! `http://127.0.0.1:<port>/<stage>/...` through the local gateway, the functions as local
//! processes behind their `live` alias, and the invoices table's stream through the local
//! poller into generate-pdf. Prints the URL, the API key and a `curl` example (with `--json`,
//! one `{"event":"ready",...}` line on stdout instead).
//!
//! The data plane follows the control plane: every [`REFRESH`] it reads the aliases and the
//! stage's deployment, and when either moved (a `--watch` rebuild, or an `apply` from another
//! terminal) it loads the new versions and swaps them in; requests in flight finish on the old
//! processes. Ctrl-C (or SIGTERM) stops the gateway, the poller and every function process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use stacks::names::Names;
use tokio::sync::{Notify, mpsc, watch};

use super::apply::{Mode, reconcile};
use super::exit;
use crate::artifacts::{CodeArgs, CodeSource};
use crate::aws::Clients;
use crate::engine::Options;
use crate::local::deployed::{self, DeployedApi};
use crate::local::gateway::{AccessLog, Gateway, Served};
use crate::local::runtime::{EmulatorAccess, FunctionLogs, LocalConfig, LocalLambda};
use crate::session::{Global, SeedArgs, Session, emulator_config, load_config, project_root};

/// How often the data plane checks whether aliases or the stage moved.
const REFRESH: Duration = Duration::from_secs(2);
/// How often `--watch` looks at the functions' sources.
const WATCH_POLL: Duration = Duration::from_millis(700);
/// The alias the API and the stream trigger invoke.
const ALIAS: &str = stacks::invoice_app::ALIAS;

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
    let aws = session.ctx.aws.clone();
    let account_id = session.ctx.account_id.clone();
    let region = session.ctx.region.clone();
    let suffix = if config.buckets.name_suffix.is_empty() {
        account_id.clone()
    } else {
        config.buckets.name_suffix.clone()
    };
    let names = Names::new(&config, &g.env, &suffix);
    let loader = Loader {
        aws: aws.clone(),
        names,
        stage: config.api.stage_name.clone(),
        cache: project_root().join("target/xtask/local/code"),
        lambda: {
            let mut c = LocalConfig::new(Vec::new());
            c.region = region.clone();
            c.account_id = account_id.clone();
            c.emulator = Some(EmulatorAccess::moto(emu.endpoint()));
            c.max_processes = usize::from(args.max_processes);
            c.logs = if args.quiet {
                FunctionLogs::Discard
            } else {
                FunctionLogs::Stderr
            };
            c
        },
    };
    let (served, versions) = loader.load().await?;
    let (access_tx, access_rx) = mpsc::unbounded_channel();
    let log_group = served.api.access_log.as_ref().map(|(arn, _)| arn.clone());
    let url = format!("http://127.0.0.1:{port}/{}", served.api.stage);
    let api_key = served
        .api
        .keys
        .iter()
        .find(|k| {
            k.enabled
                && served
                    .api
                    .usage_plans
                    .iter()
                    .any(|p| p.key_ids.contains(&k.id))
        })
        .map(|k| k.value.clone())
        .unwrap_or_default();
    let function_versions: BTreeMap<String, String> = versions.functions.clone();
    let gateway = Gateway::new(
        served,
        account_id.clone(),
        format!("127.0.0.1:{port}"),
        Some(access_tx),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(gateway.clone().serve(listener, stop_rx.clone()));
    tasks.spawn(write_access_logs(
        aws.clone(),
        log_group,
        access_rx,
        args.quiet,
        stop_rx.clone(),
    ));
    let refresh_now = Arc::new(Notify::new());
    tasks.spawn(follow_deployments(
        loader.clone(),
        gateway.clone(),
        versions,
        refresh_now.clone(),
        stop_rx.clone(),
    ));
    if !args.no_streams {
        // Beside the emulator's state, per environment: a restarted `up` resumes where it
        // stopped instead of re-delivering or skipping records.
        let checkpoints = project_root()
            .join(".xtask/local")
            .join(&g.env)
            .join("stream-checkpoints.json");
        crate::local::start_stream_poller(
            &aws,
            &loader.names,
            &gateway,
            &mut tasks,
            stop_rx.clone(),
            checkpoints,
        )
        .await?;
    }
    let elapsed = started.elapsed();
    if g.json {
        println!(
            "{}",
            json!({
                "event": "ready",
                "url": url,
                "port": port,
                "stage": config.api.stage_name,
                "api_key": api_key,
                "functions": function_versions,
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

    // `--watch` runs here, in the command's own task: the engine's futures are not `Send` for
    // rustc's inference, so they cannot be spawned.
    let stop_signal = wait_for_stop_signal();
    tokio::pin!(stop_signal);
    let root = project_root().join("functions");
    let mut last = args.watch.then(|| snapshot(&root));
    loop {
        tokio::select! {
            _ = &mut stop_signal => break,
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
                        refresh_now.notify_one();
                    }
                    Err(e) => eprintln!(
                        "error: {e:#}\n(still serving the previous version; fix and save to retry)"
                    ),
                }
            }
        }
    }
    eprintln!("stopping...");
    let _ = stop_tx.send(true);
    let served = gateway.served();
    served.lambda.shutdown().await;
    // Tasks stop at the signal; a hung one must not keep the command alive.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    eprintln!("stopped");
    Ok(exit::OK)
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
    let mut g = g.clone();
    g.text_to_stderr = true;
    let mut session =
        Session::open(&g, Options::default(), &CodeSource::Deploy(code.clone())).await?;
    session.seed_args(seed);
    let stack = session.stack.clone();
    let code = reconcile(&g, &session, &stack, Mode::Apply, true, false).await?;
    if code != exit::OK {
        bail!("apply failed; fix the error above and run `cargo xtask up` again");
    }
    Ok(session)
}

/// What identifies a deployment the data plane serves: each function's alias version and the
/// stage's deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Versions {
    functions: BTreeMap<String, String>,
    deployment: String,
}

/// Reads the deployed state and starts a runtime for it.
#[derive(Clone)]
struct Loader {
    aws: Clients,
    names: Names,
    stage: String,
    cache: PathBuf,
    lambda: LocalConfig,
}

impl Loader {
    async fn read_api(&self) -> Result<DeployedApi> {
        deployed::read_api(&self.aws, &self.names.rest_api(), &self.stage)
            .await?
            .with_context(|| {
                format!(
                    "REST API {} stage {} is not deployed",
                    self.names.rest_api(),
                    self.stage
                )
            })
    }

    async fn versions(&self) -> Result<Versions> {
        let mut functions = BTreeMap::new();
        for name in deployed::function_names(&self.names) {
            let alias = self
                .aws
                .lambda
                .get_alias()
                .function_name(&name)
                .name(ALIAS)
                .send()
                .await
                .with_context(|| format!("GetAlias {name}:{ALIAS}"))?;
            functions.insert(
                name,
                alias.function_version().unwrap_or_default().to_string(),
            );
        }
        let stage = self
            .aws
            .apigateway
            .get_stage()
            .rest_api_id(self.read_api_id().await?)
            .stage_name(&self.stage)
            .send()
            .await
            .context("GetStage")?;
        Ok(Versions {
            functions,
            deployment: stage.deployment_id().unwrap_or_default().to_string(),
        })
    }

    async fn read_api_id(&self) -> Result<String> {
        let name = self.names.rest_api();
        crate::providers::apigw::find_rest_api_with(&self.aws.apigateway, &name)
            .await?
            .and_then(|a| a.id().map(str::to_string))
            .with_context(|| format!("REST API {name} is not deployed"))
    }

    async fn load(&self) -> Result<(Served, Versions)> {
        let api = self.read_api().await?;
        let mut specs = Vec::new();
        let mut functions = BTreeMap::new();
        for name in deployed::function_names(&self.names) {
            let f = deployed::read_function(&self.aws, &name, ALIAS)
                .await?
                .with_context(|| format!("function {name} has no `{ALIAS}` alias"))?;
            let zip =
                deployed::fetch_code(&self.aws, &self.names.artifacts_bucket(), &f, &self.cache)
                    .await?;
            functions.insert(name, f.version.clone());
            specs.push(f.spec(zip));
        }
        let mut config = self.lambda.clone();
        config.functions = specs;
        let lambda = LocalLambda::start(config).await?;
        let versions = Versions {
            functions,
            deployment: api.deployment_id.clone(),
        };
        Ok((Served { api, lambda }, versions))
    }
}

/// Swaps in new function versions or a new stage deployment when the control plane moves.
async fn follow_deployments(
    loader: Loader,
    gateway: Gateway,
    mut current: Versions,
    now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = now.notified() => {}
            _ = stop.changed() => return,
        }
        let seen = match loader.versions().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("checking the deployment: {e:#}");
                continue;
            }
        };
        if seen == current {
            continue;
        }
        match loader.load().await {
            Ok((served, versions)) => {
                let changed: Vec<String> = versions
                    .functions
                    .iter()
                    .filter(|(f, v)| current.functions.get(*f) != Some(v))
                    .map(|(f, v)| format!("{f} -> version {v}"))
                    .collect();
                let old = gateway.replace(served);
                eprintln!(
                    "reloaded: {}{}",
                    if changed.is_empty() {
                        "API deployment".to_string()
                    } else {
                        changed.join(", ")
                    },
                    if versions.deployment != current.deployment && !changed.is_empty() {
                        " and the API deployment"
                    } else {
                        ""
                    }
                );
                current = versions;
                // In-flight requests hold their own reference; the old processes end with the
                // last of them.
                drop(old);
            }
            Err(e) => tracing::warn!("loading the new deployment: {e:#}"),
        }
    }
}

/// Prints one line per request (unless quiet) and ships the stage's access log lines to its
/// CloudWatch Logs group, as API Gateway does, in batches.
async fn write_access_logs(
    aws: Clients,
    group_arn: Option<String>,
    mut rx: mpsc::UnboundedReceiver<AccessLog>,
    quiet: bool,
    mut stop: watch::Receiver<bool>,
) {
    let group = group_arn
        .as_deref()
        .and_then(log_group_name)
        .map(str::to_string);
    let stream = format!("local-gateway-{}", std::process::id());
    let mut stream_ready = false;
    let mut batch: Vec<(i64, String)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(entry) => {
                    if !quiet {
                        eprintln!("{}", entry.summary);
                    }
                    let ms = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as i64;
                    batch.push((ms, entry.line));
                }
                None => return,
            },
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(group) = &group else {
            batch.clear();
            continue;
        };
        if batch.is_empty() || (batch.len() < 500 && !tick_due(&batch)) {
            continue;
        }
        if !stream_ready {
            match aws
                .logs
                .create_log_stream()
                .log_group_name(group)
                .log_stream_name(&stream)
                .send()
                .await
            {
                Ok(_) => stream_ready = true,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_already_exists_exception()) =>
                {
                    stream_ready = true
                }
                Err(e) => {
                    tracing::warn!("access logs: creating stream {stream} in {group}: {e}");
                    batch.clear();
                    continue;
                }
            }
        }
        let events: Vec<_> = batch
            .drain(..)
            .filter_map(|(ts, message)| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(ts)
                    .message(message)
                    .build()
                    .ok()
            })
            .collect();
        if let Err(e) = aws
            .logs
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(&stream)
            .set_log_events(Some(events))
            .send()
            .await
        {
            tracing::warn!("access logs: PutLogEvents to {group}: {e}");
        }
    }
}

/// Ships a batch once its oldest line is half a second old.
fn tick_due(batch: &[(i64, String)]) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    batch.first().is_some_and(|(ts, _)| now - ts >= 500)
}

/// `arn:aws:logs:us-east-1:123456789012:log-group:NAME[:*]` -> `NAME`.
fn log_group_name(arn: &str) -> Option<&str> {
    let name = arn.split_once(":log-group:")?.1;
    Some(name.strip_suffix(":*").unwrap_or(name))
}

/// Modification time and size of every file under `dir` (skipping `target` directories).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if e.file_name() != "target" && !e.file_name().to_string_lossy().starts_with('.') {
                    stack.push(path);
                }
            } else if let Ok(m) = meta.modified() {
                out.insert(path, (m, meta.len()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_group_names_come_from_arns() {
        assert_eq!(
            log_group_name(
                "arn:aws:logs:us-east-1:123456789012:log-group:API-Gateway-Access-Logs_x/v1:*"
            ),
            Some("API-Gateway-Access-Logs_x/v1")
        );
        assert_eq!(
            log_group_name("arn:aws:logs:us-east-1:1:log-group:g"),
            Some("g")
        );
        assert_eq!(log_group_name("nonsense"), None);
    }

    #[test]
    fn snapshot_sees_new_and_changed_files_but_not_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/src")).unwrap();
        std::fs::create_dir_all(dir.path().join("a/target")).unwrap();
        std::fs::write(dir.path().join("a/src/lib.rs"), "x").unwrap();
        let first = snapshot(dir.path());
        std::fs::write(dir.path().join("a/target/out"), "y").unwrap();
        assert_eq!(snapshot(dir.path()), first);
        std::fs::write(dir.path().join("a/src/lib.rs"), "xy").unwrap();
        assert_ne!(snapshot(dir.path()), first);
    }
}
