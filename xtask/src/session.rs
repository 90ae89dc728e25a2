//! What every command that talks to AWS starts with: the checked config, the emulator when
//! the environment has one, the clients, the account, and the stack built from them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use stacks::names::Names;
use stacks::{Config, Override, Stack};

use crate::artifacts::CodeSource;
use crate::aws::{CallLog, Clients, Target};
use crate::emulator::{self, EmulatorConfig, Started};
use crate::engine::{Ctx, Options};

/// Flags shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Environment: reads config/<ENV>.toml. Defaults to `local`, which never reaches AWS.
    #[arg(long, short, global = true, default_value = "local", env = "XTASK_ENV")]
    pub env: String,
    /// Read this config file instead of config/<ENV>.toml.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. `--set invoices_table.read_capacity=10` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print a JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log every AWS API call (service, operation, duration, retries) to stderr.
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

/// Where a command's text and its JSON document go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Text on stdout.
    Text,
    /// One JSON document on stdout (`--json`); text goes to stderr.
    Json,
    /// Text on stderr and no document: the command runs inside another one that keeps stdout
    /// for its own output (`up`, `bench`).
    Embedded,
}

impl Output {
    /// The output a command run from the command line asks for.
    pub fn of(g: &Global) -> Output {
        if g.json { Output::Json } else { Output::Text }
    }

    /// Writes human-readable text: stdout only when no document claims it.
    pub fn text(self, text: &str) {
        match self {
            Output::Text => print!("{text}"),
            Output::Json | Output::Embedded => eprint!("{text}"),
        }
    }

    /// Prints the JSON document, when this output has one.
    pub fn document(self, doc: impl std::fmt::Display) {
        if self == Output::Json {
            println!("{doc}");
        }
    }
}

/// The repository root: xtask lives in `<root>/xtask`.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// The emulator settings of a config, with state kept under `<root>/.xtask`.
pub fn emulator_config(config: &Config) -> Option<EmulatorConfig> {
    let root = project_root();
    config.emulator.as_ref().map(|e| EmulatorConfig {
        host: e.host.clone(),
        port: e.port,
        state_dir: root.join(".xtask").join("emulator"),
        venv_dir: root.join(".xtask").join("venv"),
    })
}

/// Loads and checks the environment's config; no AWS call is made before this succeeds.
pub fn load_config(g: &Global) -> Result<(Config, PathBuf)> {
    stacks::names::check_env(&g.env).map_err(anyhow::Error::msg)?;
    let path = g.config.clone().unwrap_or_else(|| {
        project_root()
            .join("config")
            .join(format!("{}.toml", g.env))
    });
    let mut overrides = Override::from_env(std::env::vars());
    for s in &g.set {
        overrides.push(Override::from_flag(s)?);
    }
    let shown = path
        .strip_prefix(project_root())
        .unwrap_or(&path)
        .display()
        .to_string();
    let config = stacks::config::load(&path, &g.env, &overrides)
        .with_context(|| format!("reading {shown}"))?;
    Ok((config, path))
}

/// `--no-seed`, for the commands that plan and apply (plan, apply, up).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct SeedArgs {
    /// Leave the seed step ([mock_data]: insert-mock-data's sample invoices) out of this run.
    #[arg(long)]
    pub no_seed: bool,
}

pub struct Session {
    pub env: String,
    pub config: Config,
    /// The environment's resource names in the account the session acts on.
    pub names: Names,
    pub ctx: Ctx,
    pub stack: Stack,
}

impl Session {
    /// Loads the config, builds (or finds) the code `code` asks for, connects and builds the
    /// stack. The build comes before any AWS call: a compile error should not cost a lock.
    pub async fn open(g: &Global, options: Options, code: &CodeSource) -> Result<Session> {
        let (config, _path) = load_config(g)?;
        let code = crate::artifacts::prepare(&config, code).await?;
        let log = CallLog::new(g.verbose);
        let target = match emulator_config(&config) {
            Some(ec) => {
                if let Started::Started { pid } = emulator::ensure_running(&ec)
                    .await
                    .context("starting the local emulator")?
                {
                    eprintln!(
                        "started the local emulator (moto, pid {pid}) at {}",
                        ec.endpoint()
                    );
                }
                Target::Emulator {
                    endpoint: ec.endpoint(),
                    region: if config.region.is_empty() {
                        "us-east-1".into()
                    } else {
                        config.region.clone()
                    },
                }
            }
            None => Target::Aws {
                region: (!config.region.is_empty()).then(|| config.region.clone()),
            },
        };
        let aws = Clients::new(&target, log).await;
        let region = aws.region();
        if region.is_empty() {
            bail!("no AWS region: set `region` in the config or AWS_REGION in the environment");
        }
        let identity = aws
            .sts
            .get_caller_identity()
            .send()
            .await
            .context("resolving AWS credentials (default credential chain: environment, profile, SSO, instance role)")?;
        let account_id = identity.account().unwrap_or_default().to_string();
        if !config.allowed_account_ids.is_empty()
            && !config.allowed_account_ids.contains(&account_id)
        {
            bail!(
                "refusing to act on account {account_id}: env `{}` allows only {}",
                g.env,
                config.allowed_account_ids.join(", ")
            );
        }
        let mut stack = stacks::invoice_app(
            &config,
            &stacks::Target {
                env: &g.env,
                account_id: &account_id,
                region: &region,
            },
            &code,
        );
        if let Some(endpoint) = plain_http_endpoint(&target, aws.sdk.endpoint_url()) {
            for note in without_tls_only_policies(&mut stack) {
                eprintln!(
                    "note: {note}: the endpoint {endpoint} speaks plain HTTP, where AWS would use TLS"
                );
            }
            let notes = seeds_run_locally(&mut stack, &endpoint);
            // The local environment runs every function on this machine anyway; a rehearsal
            // of an AWS environment says what differs from AWS.
            if matches!(target, Target::Aws { .. }) {
                for note in notes {
                    eprintln!(
                        "note: {note}: the endpoint {endpoint} is not AWS and cannot run functions"
                    );
                }
            }
        }
        let ctx = Ctx {
            aws,
            account_id,
            region,
            wait_timeout: Duration::from_secs(config.deploy.wait_timeout_secs),
            options,
        };
        Ok(Session {
            env: g.env.clone(),
            names: Names::for_account(&config, &g.env, &ctx.account_id),
            config,
            ctx,
            stack,
        })
    }
}

/// The endpoint every client talks to when it is plain HTTP: the local emulator, or any
/// environment pointed elsewhere with `AWS_ENDPOINT_URL` (a rehearsal against moto). AWS's own
/// endpoints are HTTPS, so this is `None` for every real deployment.
pub fn plain_http_endpoint(target: &Target, sdk_endpoint: Option<&str>) -> Option<String> {
    let endpoint = match target {
        Target::Emulator { endpoint, .. } => Some(endpoint.as_str()),
        Target::Aws { .. } => sdk_endpoint,
    }?;
    endpoint
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .then(|| endpoint.to_string())
}

/// The one part of a stack a plain-HTTP endpoint cannot follow: a bucket policy denying
/// requests without TLS denies every request made there (moto enforces bucket policies, and
/// answers the denial with a bare 403), xtask's own uploads included. Such buckets are
/// deployed without that policy, and each one is named in the returned notes so the output
/// says what was left out. Nothing else in the stack changes.
pub fn without_tls_only_policies(stack: &mut Stack) -> Vec<String> {
    let mut notes = Vec::new();
    for r in &mut stack.resources {
        if let stacks::Spec::Bucket(b) = &mut r.spec
            && b.tls_only
        {
            b.tls_only = false;
            notes.push(format!(
                "{} ({}) is deployed without its TLS-only bucket policy",
                r.id, b.name
            ));
        }
    }
    notes
}

/// Seeds invoke their function through the local Lambda runtime, against `endpoint`, instead of
/// Lambda's Invoke API: for environments whose endpoint is an emulator (the local environment,
/// or any environment rehearsed with `AWS_ENDPOINT_URL`), which stores functions but does not
/// run them. Returns a note per seed.
pub fn seeds_run_locally(stack: &mut Stack, endpoint: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for r in &mut stack.resources {
        if let stacks::Spec::Seed(s) = &mut r.spec {
            s.invoke = stacks::SeedInvoke::LocalRuntime {
                endpoint: endpoint.to_string(),
            };
            notes.push(format!(
                "{} runs {}:{} on this machine's local Lambda runtime",
                r.id, s.function_name, s.alias
            ));
        }
    }
    notes
}

impl Session {
    /// Applies `--no-seed`: leaves the seed step out of this run's stack, and says so when the
    /// environment has one.
    pub fn seed_args(&mut self, args: SeedArgs) {
        if !args.no_seed {
            return;
        }
        let before = self.stack.resources.len();
        self.stack = self.stack.clone().without_seed();
        if self.stack.resources.len() < before {
            eprintln!("note: --no-seed: the seed step ([mock_data]) is left out of this run");
        }
    }
}

/// Asks on a terminal; refuses when there is nobody to ask.
pub fn confirm(question: &str, expected: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to continue without confirmation: stdin is not a terminal; pass --yes");
    }
    eprint!("{question} Type `{expected}` to confirm: ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    if answer.trim() != expected {
        bail!("cancelled: nothing was changed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_endpoints_are_plain_http() {
        let aws = Target::Aws { region: None };
        assert_eq!(plain_http_endpoint(&aws, None), None);
        assert_eq!(plain_http_endpoint(&aws, Some("https://s3.example")), None);
        assert_eq!(
            plain_http_endpoint(&aws, Some("HTTP://127.0.0.1:4566")),
            Some("HTTP://127.0.0.1:4566".into())
        );
        let emulator = Target::Emulator {
            endpoint: "http://127.0.0.1:5000".into(),
            region: "us-east-1".into(),
        };
        assert_eq!(
            plain_http_endpoint(&emulator, None),
            Some("http://127.0.0.1:5000".into())
        );
    }

    /// The dev stack of a `dev.toml` holding `toml`, in account 123456789012.
    fn dev_stack(toml: &str) -> stacks::Stack {
        let config = stacks::config::parse(Path::new("dev.toml"), toml, "dev", &[]).unwrap();
        let target = stacks::Target {
            env: "dev",
            account_id: "123456789012",
            region: "eu-west-1",
        };
        stacks::invoice_app(&config, &target, &Default::default())
    }

    #[test]
    fn only_tls_only_bucket_policies_are_left_out() {
        let original = dev_stack("[buckets]\ntls_only = true\n");
        let mut stack = original.clone();
        let notes = without_tls_only_policies(&mut stack);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("s3_bucket.artifacts (invoice-app-artifacts-dev-123456789012)")
        );
        for (before, after) in original.resources.iter().zip(&stack.resources) {
            match (&before.spec, &after.spec) {
                (stacks::Spec::Bucket(b), stacks::Spec::Bucket(a)) => {
                    assert!(b.tls_only && !a.tls_only);
                    let mut restored = a.clone();
                    restored.tls_only = true;
                    assert_eq!(&restored, b);
                }
                _ => assert_eq!(before, after),
            }
        }
        // Nothing to leave out the second time.
        assert!(without_tls_only_policies(&mut stack).is_empty());
    }

    #[test]
    fn seeds_against_an_emulator_run_on_the_local_runtime_and_nothing_else_changes() {
        let original = dev_stack("[mock_data]\nenabled = true\n");
        let mut stack = original.clone();
        let notes = seeds_run_locally(&mut stack, "http://127.0.0.1:5000");
        assert_eq!(
            notes,
            [
                "seed.mock_invoices runs insert-mock-data-dev:live on this machine's local Lambda runtime"
            ]
        );
        let mut seen = 0;
        for (before, after) in original.resources.iter().zip(&stack.resources) {
            match (&before.spec, &after.spec) {
                (stacks::Spec::Seed(b), stacks::Spec::Seed(a)) => {
                    seen += 1;
                    assert_eq!(b.invoke, stacks::SeedInvoke::Lambda);
                    assert_eq!(
                        a.invoke,
                        stacks::SeedInvoke::LocalRuntime {
                            endpoint: "http://127.0.0.1:5000".into()
                        }
                    );
                    let mut restored = a.clone();
                    restored.invoke = stacks::SeedInvoke::Lambda;
                    assert_eq!(&restored, b);
                }
                _ => assert_eq!(before, after),
            }
        }
        assert_eq!(seen, 1);
    }
}
