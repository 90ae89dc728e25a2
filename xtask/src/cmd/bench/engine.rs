//! `cargo xtask bench engine`: how deep plan and apply go, measured against a private emulator
//! with a latency added to every AWS call.
//!
//! A benchmark, not a test: it asserts nothing and prints what it measured. On AWS each
//! control-plane call costs tens to hundreds of milliseconds, so the number of calls made one
//! after another ("round-trips deep": wall time / latency) decides how long a plan or an apply
//! takes; the emulator answers in about a millisecond, so the latency is added in the process
//! (`aws::transport::delayed`). Each phase reports:
//! - calls and writes (from the call log every client reports to);
//! - deep: wall time / latency;
//! - most in flight: the peak of concurrent calls;
//! - critical path: the calls a perfect scheduler could not overlap, if each resource made its
//!   calls one after another: per plan pass the resource with most reads, per apply pass the
//!   longest dependency chain weighted by each resource's calls, plus calls outside the engine
//!   (the lock, the ownership check; those that ran side by side count once);
//! - throttled: attempts that API Gateway's documented per-account limits would have refused.
//!
//! The functions are stand-in zips (moto stores code it never runs), so no build is needed;
//! for the same reason the seed step (`[mock_data]`) is left out.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use stacks::Stack;

use crate::aws::{Call, CallLog, Clients, Target, transport};
use crate::cmd::apply::{Mode, reconcile};
use crate::cmd::{exit, nodes};
use crate::emulator::TestEmulator;
use crate::engine::{Ctx, Options, plan};
use crate::session::{Global, Output, Session, load_config};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Added to every AWS call (each attempt), e.g. `100ms`, `0.25s`.
    #[arg(long, default_value = "100ms", value_parser = parse_latency)]
    pub latency: Duration,
}

fn parse_latency(s: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        return Err(format!("`{s}`: give a unit, e.g. 100ms or 0.1s"));
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    if !(value * scale).is_finite() || value * scale <= 0.0 {
        return Err("the latency must be positive".into());
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// The figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub phase: &'static str,
    pub calls: usize,
    pub writes: usize,
    /// Wall time divided by the latency.
    pub deep: f64,
    pub wall_ms: u64,
    /// The longest run of calls each made after the one before it had answered: the depth
    /// in calls, whatever the emulator's own time per call (which `deep` includes).
    pub in_sequence: usize,
    /// The calls of that chain, in order (`SSM.GetParameter`, `Lambda.UpdateFunctionCode
    /// lambda_function.x`): what a phase cannot overlap.
    pub sequence: Vec<String>,
    /// The emulator's mean time per call on top of the added latency: high when many calls
    /// queue in its one process, which inflates `deep` but would not happen on AWS.
    pub emulator_ms: u64,
    pub most_in_flight: usize,
    pub critical_path: usize,
    /// The same path with each resource weighing the round-trips its calls spanned (calls a
    /// resource makes in parallel count once): what a perfect scheduler would reach.
    pub critical_deep: f64,
    /// The resources along the longest apply chain, in order.
    pub critical_chain: Vec<String>,
    pub throttled: usize,
    pub retries: usize,
    /// Calls per operation (`Service.Operation`), to see where the calls go.
    pub by_operation: BTreeMap<String, usize>,
    /// The resources whose calls spanned the most round-trips in one pass (`apply: rest_api.x
    /// 25 calls over 30.1`), to see where the depth goes.
    pub slowest: Vec<String>,
    /// When each pass and each call outside the engine ran, in round-trips from the phase's
    /// start (`plan 0.0-4.6`, `SSM.PutParameter 4.7-5.7`): where a phase's depth goes.
    pub timeline: Vec<String>,
    /// Each resource's span in each pass, in order of start (`apply 5.1-7.2 lambda_function.x
    /// (3 calls)`): what waited for what.
    pub spans: Vec<String>,
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    let (config, _) = load_config(g)?;
    if config.emulator.is_none() {
        bail!(
            "`bench engine` runs against its own emulator: use an environment with [emulator] (--env local)"
        );
    }
    let emu = TestEmulator::try_start()
        .await
        .context("starting a private emulator for the benchmark")?;
    eprintln!(
        "bench engine: private emulator at {}, {} ms per AWS call",
        emu.endpoint(),
        args.latency.as_millis()
    );
    let zips = tempfile::tempdir().context("creating a directory for stand-in zips")?;
    let log = CallLog::new(g.verbose);
    let ctx = connect(&config, &emu, &log, args.latency).await?;
    let bench = Bench {
        env: &g.env,
        config: &config,
        ctx: &ctx,
        zips: zips.path(),
        meter: Meter {
            log: &log,
            pacer: &ctx.aws.pacer,
            latency: args.latency,
        },
    };
    let (phases, resources) = bench.phases().await?;
    drop(emu);

    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "latency_ms": args.latency.as_millis() as u64,
                "resources": resources,
                "phases": phases,
            }))?
        );
    } else {
        print!("{}", table(&phases, args.latency));
    }
    Ok(exit::OK)
}

/// An engine context on the private emulator, every call delayed by `latency`, with the
/// emulator's services warmed up.
async fn connect(
    config: &stacks::Config,
    emu: &TestEmulator,
    log: &Arc<CallLog>,
    latency: Duration,
) -> Result<Ctx> {
    let region = if config.region.is_empty() {
        "us-east-1".to_string()
    } else {
        config.region.clone()
    };
    let aws = Clients::with_latency(
        &Target::Emulator {
            endpoint: emu.endpoint(),
            region: region.clone(),
        },
        log.clone(),
        Some(latency),
    )
    .await;
    let identity = aws
        .sts
        .get_caller_identity()
        .send()
        .await
        .context("asking the emulator for its account")?;
    let account_id = identity.account().unwrap_or_default().to_string();
    warm_up(&aws).await;
    Ok(Ctx {
        aws,
        account_id,
        region,
        wait_timeout: Duration::from_secs(config.deploy.wait_timeout_secs),
        options: Options {
            allow_data_loss: true,
            override_deletion_protection: true,
        },
    })
}

/// What the phases share: the environment, its context and where the stand-in zips go.
struct Bench<'a> {
    env: &'a str,
    config: &'a stacks::Config,
    ctx: &'a Ctx,
    zips: &'a Path,
    meter: Meter<'a>,
}

impl Bench<'_> {
    /// The stack with stand-in zips of `variant`.
    fn stack(&self, variant: usize) -> Result<Stack> {
        stand_in_zips(self.zips, variant)?;
        stack_with_code(
            self.config,
            self.env,
            &self.ctx.account_id,
            &self.ctx.region,
            self.zips,
        )
    }

    fn session(&self, stack: Stack) -> Session {
        Session {
            env: self.env.to_string(),
            names: stacks::names::Names::for_account(self.config, self.env, &self.ctx.account_id),
            config: self.config.clone(),
            ctx: self.ctx.clone(),
            stack,
        }
    }

    async fn plan(&self, stack: &Stack) -> Result<plan::Plan> {
        let concurrency = self.config.deploy.concurrency;
        plan::plan(
            self.ctx,
            self.env,
            nodes(stack),
            &stack.ownership_tags,
            concurrency,
        )
        .await
    }

    /// Runs the six phases in order; returns their figures and the stack's resource count.
    async fn phases(&self) -> Result<(Vec<Phase>, usize)> {
        // Plan text goes to stderr; stdout is the table (or the JSON).
        let out = Output::Embedded;
        let meter = &self.meter;
        let mut phases = Vec::new();
        let first = self.session(self.stack(0)?);
        let s = &first.stack;
        // moto loads each service's code and models on its first request (1-2 s of one
        // Python process under ~60 reads in flight); AWS has no such cost, so one unmeasured
        // plan warms the emulator and "plan on empty" measures the engine.
        eprintln!("bench engine: warming the emulator (one unmeasured plan)...");
        self.plan(s).await.context("warming the emulator")?;
        phases.push(
            meter
                .phase("plan on empty", s, || async {
                    self.plan(s).await.map(|_| ())
                })
                .await?,
        );
        phases.push(
            meter
                .phase("apply from empty", s, || {
                    applied(reconcile(out, &first, s, Mode::Apply, true, false))
                })
                .await?,
        );
        phases.push(
            meter
                .phase("no-op plan", s, || async {
                    if self.plan(s).await?.has_changes() {
                        bail!("the plan after apply still has changes");
                    }
                    Ok(())
                })
                .await?,
        );
        phases.push(
            meter
                .phase("no-op apply", s, || {
                    applied(reconcile(out, &first, s, Mode::Apply, true, false))
                })
                .await?,
        );
        // Every zip changes with the variant, but only one function's artifact and code
        // reference are taken from the new set: a one-function code change.
        let changed = self.session(one_function_changed(&first.stack, self.stack(1)?));
        let s = &changed.stack;
        phases.push(
            meter
                .phase("one-function code change", s, || {
                    applied(reconcile(out, &changed, s, Mode::Apply, true, false))
                })
                .await?,
        );
        let absent = self.session(changed.stack.clone().into_absent());
        let s = &absent.stack;
        phases.push(
            meter
                .phase("destroy", s, || {
                    applied(reconcile(out, &absent, s, Mode::Destroy, true, false))
                })
                .await?,
        );
        Ok((phases, first.stack.resources.len()))
    }
}

/// One cheap read per service before measuring: the emulator builds each service's backend
/// on first use (IAM loads about a thousand managed policies), which AWS does not make anyone
/// wait for.
async fn warm_up(aws: &Clients) {
    let _ = tokio::join!(
        aws.s3.list_buckets().send(),
        aws.dynamodb.list_tables().limit(1).send(),
        aws.iam.list_roles().max_items(1).send(),
        aws.lambda.list_functions().max_items(1).send(),
        aws.logs.describe_log_groups().limit(1).send(),
        aws.apigateway.get_rest_apis().limit(1).send(),
        aws.autoscaling
            .describe_scalable_targets()
            .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Dynamodb)
            .send(),
        aws.ssm.describe_parameters().max_results(1).send(),
        aws.cloudformation.list_stacks().send(),
    );
}

/// Fails the phase when the command did not succeed: figures of a failed apply mean nothing.
async fn applied(f: impl std::future::Future<Output = Result<u8>>) -> Result<()> {
    match f.await? {
        exit::OK => Ok(()),
        code => bail!("the command exited {code}"),
    }
}

/// Builds the stack with the stand-in zips of `dir`.
fn stack_with_code(
    config: &stacks::Config,
    env: &str,
    account_id: &str,
    region: &str,
    dir: &Path,
) -> Result<Stack> {
    let code = crate::artifacts::read_zips(dir)?;
    // Without the seed step: stand-in zips cannot seed, and the seed is one invocation at the
    // end of an apply, not a control-plane call the engine schedules.
    Ok(stacks::invoice_app(
        config,
        &stacks::Target {
            env,
            account_id,
            region,
        },
        &code,
    )
    .without_seed())
}

/// `new` with only the first function's code taken over into `old`: its artifact (the new
/// zip to upload) and the function's code reference, as a one-line change in one handler
/// would make them.
fn one_function_changed(old: &Stack, new: Stack) -> Stack {
    let f = stacks::invoice_app::FUNCTIONS[0];
    let changed = [
        stacks::invoice_app::artifact_id(f),
        stacks::invoice_app::function_id(f),
    ];
    let mut stack = old.clone();
    for r in new
        .resources
        .into_iter()
        .filter(|r| changed.contains(&r.id))
    {
        let slot = stack
            .resources
            .iter_mut()
            .find(|o| o.id == r.id)
            .expect("the stack has the function and its artifact");
        *slot = r;
    }
    stack
}

/// Writes `<dir>/<function>.zip` holding a stand-in bootstrap; `variant` changes its bytes.
fn stand_in_zips(dir: &Path, variant: usize) -> Result<()> {
    for f in stacks::invoice_app::FUNCTIONS {
        let body = format!("#!/bin/sh\n# stand-in for {f}, variant {variant}\n");
        let zip = crate::build::zip_bootstrap(Path::new("bootstrap"), body.as_bytes())?;
        let path = dir.join(format!("{f}.zip"));
        std::fs::write(&path, zip).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

struct Meter<'a> {
    log: &'a CallLog,
    pacer: &'a crate::aws::transport::Pacer,
    latency: Duration,
}

impl Meter<'_> {
    async fn phase<F, Fut>(&self, name: &'static str, stack: &Stack, f: F) -> Result<Phase>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        eprintln!("bench engine: {name}...");
        // Each phase is one command run: a new process, whose API Gateway pacer starts with the
        // quota's whole burst (40 calls, refilled at 10 a second: as if runs were 4 s apart).
        self.pacer.refill();
        let before = self.log.calls().len();
        self.log.take_peak_in_flight();
        let started = Instant::now();
        f().await.with_context(|| format!("phase `{name}`"))?;
        let wall = started.elapsed();
        let calls: Vec<Call> = self.log.calls().into_iter().skip(before).collect();
        let (critical_spans, _) = critical_path(&calls, stack, Some(self.latency));
        let (critical_path, critical_chain) = critical_path(&calls, stack, None);
        let attempts: Vec<(String, tokio::time::Instant)> = calls
            .iter()
            // The SDK's service name, e.g. "API Gateway".
            .filter(|c| {
                c.service
                    .replace(' ', "")
                    .eq_ignore_ascii_case("apigateway")
            })
            .flat_map(|c| {
                c.answered
                    .iter()
                    .map(|t| (c.operation.clone(), tokio::time::Instant::from_std(*t)))
            })
            .collect();
        let mut by_operation = BTreeMap::new();
        for c in &calls {
            *by_operation
                .entry(format!("{}.{}", c.service, c.operation))
                .or_insert(0) += 1;
        }
        let slowest = slowest(&calls, self.latency, 6);
        let timeline = timeline(&calls, started, self.latency);
        let spans = spans(&calls, started, self.latency);
        let sequence: Vec<String> = in_sequence(&calls)
            .into_iter()
            .map(|c| match &c.scope {
                Some(s) => format!("{}.{} {}", c.service, c.operation, s.node),
                None => format!("{}.{}", c.service, c.operation),
            })
            .collect();
        Ok(Phase {
            spans,
            slowest,
            timeline,
            phase: name,
            calls: calls.len(),
            writes: calls.iter().filter(|c| c.write).count(),
            deep: (wall.as_secs_f64() / self.latency.as_secs_f64() * 10.0).round() / 10.0,
            wall_ms: wall.as_millis() as u64,
            in_sequence: sequence.len(),
            sequence,
            emulator_ms: emulator_ms(&calls, self.latency),
            most_in_flight: self.log.take_peak_in_flight(),
            critical_path,
            critical_deep: critical_spans as f64 / 10.0,
            critical_chain,
            // Attempts are timed when their answer arrives; 20 ms absorbs the emulator's
            // own time between two answers.
            throttled: transport::api_gateway_throttled(&attempts, Duration::from_millis(20)),
            retries: calls
                .iter()
                .map(|c| c.attempts.saturating_sub(1) as usize)
                .sum(),
            by_operation,
        })
    }
}

/// The longest chain of calls in which each started after the previous one ended.
fn in_sequence(calls: &[Call]) -> Vec<&Call> {
    let mut spans: Vec<(Instant, Instant, &Call)> = calls
        .iter()
        .filter_map(|c| {
            let start = c.started?;
            Some((start, start + Duration::from_millis(c.millis), c))
        })
        .collect();
    spans.sort_by_key(|s| (s.0, s.1));
    // chain[i]: the length of the longest chain ending with call i (calls in order of start)
    // and the call before i in it.
    let mut chain: Vec<(usize, Option<usize>)> = Vec::with_capacity(spans.len());
    for i in 0..spans.len() {
        let before = (0..i)
            .filter(|&j| spans[j].1 <= spans[i].0)
            .max_by_key(|&j| chain[j].0);
        chain.push((before.map_or(0, |j| chain[j].0) + 1, before));
    }
    let mut at = (0..chain.len()).max_by_key(|&i| chain[i].0);
    let mut out = Vec::new();
    while let Some(i) = at {
        out.push(spans[i].2);
        at = chain[i].1;
    }
    out.reverse();
    out
}

/// Mean milliseconds per call beyond the added latency (each attempt is delayed once).
fn emulator_ms(calls: &[Call], latency: Duration) -> u64 {
    if calls.is_empty() {
        return 0;
    }
    let extra: u64 = calls
        .iter()
        .map(|c| {
            c.millis
                .saturating_sub(latency.as_millis() as u64 * u64::from(c.attempts.max(1)))
        })
        .sum();
    extra / calls.len() as u64
}

/// Each engine pass as one span and each call outside the engine on its own, in order of start.
fn timeline(calls: &[Call], phase_start: Instant, latency: Duration) -> Vec<String> {
    let at =
        |t: Instant| t.saturating_duration_since(phase_start).as_secs_f64() / latency.as_secs_f64();
    let mut rows: Vec<(f64, f64, String)> = Vec::new();
    let mut passes: BTreeMap<u64, (f64, f64, &str, usize)> = BTreeMap::new();
    for c in calls {
        let Some(start) = c.started else { continue };
        let (a, b) = (at(start), at(start + Duration::from_millis(c.millis)));
        match &c.scope {
            Some(s) => {
                let e = passes.entry(s.stage).or_insert((a, b, s.kind, 0));
                e.0 = e.0.min(a);
                e.1 = e.1.max(b);
                e.3 += 1;
            }
            None => rows.push((
                a,
                b,
                format!("{}.{}", c.service.replace(' ', ""), c.operation),
            )),
        }
    }
    for (a, b, kind, n) in passes.into_values() {
        rows.push((a, b, format!("{kind} pass ({n} calls)")));
    }
    rows.sort_by(|x, y| x.0.total_cmp(&y.0));
    rows.into_iter()
        .map(|(a, b, what)| format!("{a:.1}-{b:.1} {what}"))
        .collect()
}

/// Each resource's span in each pass, in order of start.
fn spans(calls: &[Call], phase_start: Instant, latency: Duration) -> Vec<String> {
    let at =
        |t: Instant| t.saturating_duration_since(phase_start).as_secs_f64() / latency.as_secs_f64();
    let mut spans: HashMap<(u64, &str, &str), (f64, f64, usize)> = HashMap::new();
    for c in calls {
        let (Some(s), Some(start)) = (&c.scope, c.started) else {
            continue;
        };
        let (a, b) = (at(start), at(start + Duration::from_millis(c.millis)));
        let e = spans
            .entry((s.stage, s.kind, s.node.as_str()))
            .or_insert((a, b, 0));
        e.0 = e.0.min(a);
        e.1 = e.1.max(b);
        e.2 += 1;
    }
    let mut rows: Vec<_> = spans.into_iter().collect();
    rows.sort_by(|x, y| x.1.0.total_cmp(&y.1.0));
    rows.into_iter()
        .map(|((_, kind, node), (a, b, n))| format!("{kind} {a:.1}-{b:.1} {node} ({n} calls)"))
        .collect()
}

/// The `n` resources whose calls spanned the most round-trips of `latency`, with their pass.
fn slowest(calls: &[Call], latency: Duration, n: usize) -> Vec<String> {
    let mut spans: HashMap<(u64, &str, &str), (usize, Instant, Instant)> = HashMap::new();
    for c in calls {
        let (Some(s), Some(start)) = (&c.scope, c.started) else {
            continue;
        };
        let end = start + Duration::from_millis(c.millis);
        let e = spans
            .entry((s.stage, s.kind, s.node.as_str()))
            .or_insert((0, start, end));
        e.0 += 1;
        e.1 = e.1.min(start);
        e.2 = e.2.max(end);
    }
    let mut spans: Vec<_> = spans
        .into_iter()
        .map(|((_, kind, node), (count, a, b))| {
            let deep = (b - a).as_secs_f64() / latency.as_secs_f64();
            (deep, format!("{kind}: {node} {count} calls over {deep:.1}"))
        })
        .collect();
    spans.sort_by(|a, b| b.0.total_cmp(&a.0));
    spans.into_iter().take(n).map(|(_, s)| s).collect()
}

/// The calls no scheduler could overlap (see the module docs), and the longest apply chain.
/// With `span`, a resource weighs the tenths of round-trips (of that latency) its calls spanned
/// instead of their number.
fn critical_path(calls: &[Call], stack: &Stack, span: Option<Duration>) -> (usize, Vec<String>) {
    let deps: HashMap<&str, Vec<&str>> = stack
        .resources
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.depends_on.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    // stage -> (kind, node -> calls)
    let mut stages: BTreeMap<u64, (&str, HashMap<&str, usize>)> = BTreeMap::new();
    // (first start, last end) of each resource's calls per stage
    let mut spans: HashMap<(u64, &str), (Instant, Instant)> = HashMap::new();
    // Calls outside the engine (the lock, the ownership check) that overlap count once.
    let mut outside_calls: Vec<(Instant, Instant)> = Vec::new();
    for c in calls {
        match &c.scope {
            Some(s) => {
                *stages
                    .entry(s.stage)
                    .or_insert((s.kind, HashMap::new()))
                    .1
                    .entry(s.node.as_str())
                    .or_insert(0) += 1;
                if let Some(start) = c.started {
                    let end = start + Duration::from_millis(c.millis);
                    let e = spans
                        .entry((s.stage, s.node.as_str()))
                        .or_insert((start, end));
                    e.0 = e.0.min(start);
                    e.1 = e.1.max(end);
                }
            }
            None => {
                if let Some(start) = c.started {
                    outside_calls.push((start, start + Duration::from_millis(c.millis)));
                }
            }
        }
    }
    outside_calls.sort();
    let mut merged: Vec<(Instant, Instant)> = Vec::new();
    for (a, b) in outside_calls {
        match merged.last_mut() {
            Some(last) if a < last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let outside: usize = match span {
        Some(latency) => merged
            .iter()
            .map(|(a, b)| ((*b - *a).as_secs_f64() / latency.as_secs_f64() * 10.0).round() as usize)
            .sum(),
        None => merged.len(),
    };
    if let Some(latency) = span {
        for (stage, (_, weights)) in stages.iter_mut() {
            for (node, w) in weights.iter_mut() {
                if let Some((a, b)) = spans.get(&(*stage, *node)) {
                    *w = ((*b - *a).as_secs_f64() / latency.as_secs_f64() * 10.0).round() as usize;
                }
            }
        }
    }
    let mut total = outside;
    let mut longest_chain: Vec<String> = Vec::new();
    let mut longest = 0;
    for (kind, weights) in stages.values() {
        if *kind == "plan" {
            total += weights.values().copied().max().unwrap_or(0);
            continue;
        }
        // Longest path ending at each node, dependencies first (memoised).
        fn chain<'a>(
            id: &'a str,
            deps: &HashMap<&'a str, Vec<&'a str>>,
            weights: &HashMap<&str, usize>,
            memo: &mut HashMap<&'a str, (usize, Vec<&'a str>)>,
        ) -> (usize, Vec<&'a str>) {
            if let Some(m) = memo.get(id) {
                return m.clone();
            }
            let mut best = (0, Vec::new());
            for &d in deps.get(id).into_iter().flatten() {
                let c = chain(d, deps, weights, memo);
                if c.0 > best.0 {
                    best = c;
                }
            }
            let w = weights.get(id).copied().unwrap_or(0);
            if w > 0 {
                best.0 += w;
                best.1.push(id);
            }
            memo.insert(id, best.clone());
            best
        }
        let mut memo = HashMap::new();
        let best = deps
            .keys()
            .map(|&id| chain(id, &deps, weights, &mut memo))
            .max_by_key(|c| c.0)
            .unwrap_or_default();
        total += best.0;
        if best.0 > longest {
            longest = best.0;
            longest_chain = best
                .1
                .iter()
                .map(|id| format!("{id} ({})", weights[id]))
                .collect();
        }
    }
    (total, longest_chain)
}

fn table(phases: &[Phase], latency: Duration) -> String {
    let mut out = format!(
        "\nEngine benchmark, {} ms per AWS call\n\n| phase | calls | writes | deep (wall / latency) | calls in sequence | emulator ms / call | most in flight | critical path (calls) | critical path (deep) | deep / critical deep | throttled | retries |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        latency.as_millis()
    );
    for p in phases {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {:.1} | {:.2} | {} | {} |\n",
            p.phase,
            p.calls,
            p.writes,
            p.deep,
            p.in_sequence,
            p.emulator_ms,
            p.most_in_flight,
            p.critical_path,
            p.critical_deep,
            p.deep / p.critical_deep.max(0.1),
            p.throttled,
            p.retries
        ));
    }
    for p in phases.iter().filter(|p| !p.critical_chain.is_empty()) {
        out.push_str(&format!(
            "\n{}: longest apply chain (calls): {}\n",
            p.phase,
            p.critical_chain.join(" -> ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_at(start: Instant, from_ms: u64, millis: u64) -> Call {
        Call {
            service: "S3".into(),
            operation: "HeadBucket".into(),
            write: false,
            attempts: 1,
            millis,
            ok: true,
            scope: None,
            started: Some(start + Duration::from_millis(from_ms)),
            answered: Vec::new(),
        }
    }

    #[test]
    fn calls_in_sequence_count_only_calls_made_after_an_answer() {
        let t = Instant::now();
        // Two in parallel (0-100, 0-150), then one after both (150-250), then one that
        // overlaps it (200-300): the longest chain is two calls.
        let calls = [
            call_at(t, 0, 100),
            call_at(t, 0, 150),
            call_at(t, 150, 100),
            call_at(t, 200, 100),
        ];
        let starts = |chain: Vec<&Call>| -> Vec<Instant> {
            chain.iter().map(|c| c.started.unwrap()).collect()
        };
        let at = |ms| t + Duration::from_millis(ms);
        let two = starts(in_sequence(&calls));
        assert_eq!(two.len(), 2);
        assert!(two[1] >= at(150), "{two:?}");
        // A call after the last one makes it three, through the one that ends last.
        let mut more = calls.to_vec();
        more.push(call_at(t, 300, 100));
        assert_eq!(starts(in_sequence(&more))[1..], [at(200), at(300)]);
        assert!(in_sequence(&[]).is_empty());
    }

    #[test]
    fn emulator_time_is_what_a_call_took_beyond_the_latency() {
        let t = Instant::now();
        let calls = [call_at(t, 0, 130), call_at(t, 0, 110)];
        assert_eq!(emulator_ms(&calls, Duration::from_millis(100)), 20);
    }

    #[test]
    fn latencies_need_a_unit_and_a_positive_value() {
        assert_eq!(parse_latency("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_latency("0.25s"), Ok(Duration::from_millis(250)));
        assert!(parse_latency("100").is_err());
        assert!(parse_latency("0ms").is_err());
        assert!(parse_latency("fast").is_err());
    }
}
