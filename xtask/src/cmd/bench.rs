//! `cargo xtask bench`: load figures of the local data plane, against a running `cargo xtask up`;
//! `cargo xtask bench engine` measures plan and apply instead (see [`engine`]).
//!
//! A benchmark, not a test: it asserts nothing and prints what it measured.
//! 1. `wrk` (Debian package `wrk`) for `--duration` seconds with `--connections` connections
//!    on `POST /insert-invoice` (a new invoice per request) and `GET /list-invoices`: requests
//!    per second, p50/p90/p99 latency, non-2xx answers;
//! 2. insert -> PDF: `--pdf-samples` invoices inserted one at a time, each followed by polling
//!    `download-invoice` until it answers 200 (the stream poller and generate-pdf did their
//!    work): p50 and max.
//!
//! The usage plan of the local environment allows 20 requests per second; for a load test
//! start `up` with higher limits, e.g.
//! `cargo xtask up --set api.usage_plan.throttle.rate_limit=10000 --set api.usage_plan.throttle.burst_limit=5000 --set api.method_throttle.rate_limit=10000 --set api.method_throttle.burst_limit=5000`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::exit;
use crate::artifacts::CodeSource;
use crate::engine::Options;
use crate::local::deployed;
use crate::session::{Global, Session, emulator_config, load_config, project_root};

pub mod engine;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub what: Option<What>,
    /// Port the running `cargo xtask up` serves on.
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Seconds of load per endpoint.
    #[arg(long, default_value_t = 10)]
    pub duration: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: u32,
    /// Invoices timed from insert to downloadable PDF.
    #[arg(long, default_value_t = 10)]
    pub pdf_samples: u32,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Plan, apply, no-op, code change and destroy against a private emulator with a latency
    /// added to every AWS call: calls, depth, concurrency, critical path, throttling.
    Engine(engine::Args),
}

pub async fn run(g: &Global, args: &Args) -> Result<u8> {
    if let Some(What::Engine(a)) = &args.what {
        return engine::run(g, a).await;
    }
    let (config, _) = load_config(g)?;
    if emulator_config(&config).is_none() {
        bail!("`bench` measures the local data plane; use --env local");
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("`bench` needs wrk: apt-get install wrk");
    }
    let session = Session::open(g, Options::default(), &CodeSource::None).await?;
    let names = &session.names;
    let api = deployed::read_api(&session.ctx.aws, &names.rest_api(), &config.api.stage_name)
        .await?
        .context("the REST API is not deployed: run `cargo xtask up` first")?;
    let key = api
        .keys
        .iter()
        .find(|k| k.enabled && api.usage_plans.iter().any(|p| p.key_ids.contains(&k.id)))
        .map(|k| k.value.clone())
        .context("no API key in a usage plan of the stage")?;
    let base = format!("http://127.0.0.1:{}/{}", args.port, api.stage);
    if tokio::net::TcpStream::connect(("127.0.0.1", args.port))
        .await
        .is_err()
    {
        bail!(
            "nothing listens on 127.0.0.1:{}: start `cargo xtask up` first",
            args.port
        );
    }

    let scripts = project_root().join("xtask/bench");
    let mut results = Vec::new();
    // Reads first: the inserts queue PDF work on the stream that would load the reads.
    let endpoints = [
        ("GET /list-invoices", "/list-invoices", "list-invoices.lua"),
        (
            "POST /insert-invoice",
            "/insert-invoice",
            "insert-invoice.lua",
        ),
    ];
    for (name, path, script) in endpoints.into_iter().filter(|_| args.duration > 0) {
        eprintln!(
            "{name}: {} s, {} connections...",
            args.duration, args.connections
        );
        let r = wrk(&format!("{base}{path}"), &scripts.join(script), &key, args)?;
        eprintln!(
            "  {:.0} req/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, {} requests, {} non-2xx",
            r.rps, r.p50_ms, r.p90_ms, r.p99_ms, r.requests, r.non_2xx
        );
        results.push(json!({
            "endpoint": name, "requests_per_second": r.rps, "p50_ms": r.p50_ms,
            "p90_ms": r.p90_ms, "p99_ms": r.p99_ms, "requests": r.requests, "non_2xx": r.non_2xx,
        }));
    }

    let run_id = std::process::id();
    // The stream is ordered: once a marker's PDF exists, the PDFs queued by the load are done,
    // and the samples below measure an idle pipeline.
    if args.duration > 0 && args.pdf_samples > 0 {
        eprintln!("waiting for the PDFs of the load to be generated...");
        let started = Instant::now();
        let marker = format!("INV-PDF-{run_id}-drain");
        pdf_round_trip(&base, &key, &marker, Duration::from_secs(1800)).await?;
        eprintln!("  drained in {:.1} s", started.elapsed().as_secs_f64());
    }
    eprintln!(
        "insert -> PDF downloadable, {} samples...",
        args.pdf_samples
    );
    let mut samples = Vec::new();
    for i in 0..args.pdf_samples {
        let id = format!("INV-PDF-{run_id}-{i}");
        let started = Instant::now();
        pdf_round_trip(&base, &key, &id, Duration::from_secs(60)).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let p50 = samples.get(samples.len() / 2).copied().unwrap_or_default();
    let max = samples.last().copied().unwrap_or_default();
    eprintln!(
        "  p50 {} ms, max {} ms (polling every 20 ms)",
        p50.as_millis(),
        max.as_millis()
    );
    if g.json {
        println!(
            "{}",
            json!({
                "load": results,
                "insert_to_pdf": {"samples": samples.len(), "p50_ms": p50.as_millis() as u64, "max_ms": max.as_millis() as u64},
            })
        );
    }
    Ok(exit::OK)
}

/// Inserts invoice `id` and polls download-invoice until its PDF is there.
async fn pdf_round_trip(base: &str, key: &str, id: &str, limit: Duration) -> Result<()> {
    let body = format!(
        r#"{{"InvoiceID":"{id}","CustomerID":"CUST-PDF","InvoiceDate":"2026-11-25","ProductList":["Laptop"],"TotalAmount":129900}}"#
    );
    let started = Instant::now();
    let (status, _) = request("POST", base, "/insert-invoice", key, &body).await?;
    if status >= 300 {
        bail!("inserting {id}: status {status}");
    }
    loop {
        let path = format!("/download-invoice?InvoiceID={id}");
        match request("GET", base, &path, key, "").await?.0 {
            200 => return Ok(()),
            409 => {}
            other => bail!("download of {id}: status {other}"),
        }
        if started.elapsed() > limit {
            bail!("no PDF for {id} after {limit:?}: is `up` running without --no-streams?");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
}

fn wrk(url: &str, script: &Path, key: &str, args: &Args) -> Result<WrkResult> {
    let out = Command::new("wrk")
        .args([
            "-t",
            &args.connections.clamp(1, 2).to_string(),
            "-c",
            &args.connections.to_string(),
            "-d",
            &format!("{}s", args.duration),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .args(["--", key])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// Reads requests/s, the latency distribution and the error count from wrk's text output.
fn parse_wrk(text: &str) -> Option<WrkResult> {
    let ms = |v: &str| -> Option<f64> {
        let v = v.trim();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().ok().map(|x| x / 1000.0)
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().ok()
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().ok().map(|x| x * 1000.0)
        } else {
            None
        }
    };
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).and_then(&ms))
    };
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())?;
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Some(WrkResult {
        rps,
        p50_ms: pct("50%")?,
        p90_ms: pct("90%")?,
        p99_ms: pct("99%")?,
        requests,
        non_2xx,
    })
}

/// One request over a fresh connection; returns the status and body.
async fn request(
    method: &str,
    base: &str,
    path: &str,
    key: &str,
    body: &str,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = base.strip_prefix("http://").context("an http:// URL")?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(authority).await?;
    let head = format!(
        "{method} /{prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench/wrk.txt"),
        )
        .unwrap();
        let r = parse_wrk(&text).unwrap();
        assert_eq!(r.requests, 41_250);
        assert!((r.rps - 4123.4).abs() < 0.01);
        assert!((r.p50_ms - 1.73).abs() < 1e-9);
        assert!((r.p90_ms - 3.10).abs() < 1e-9);
        assert!((r.p99_ms - 1200.0).abs() < 1e-9);
        assert_eq!(r.non_2xx, 12);
        assert!(parse_wrk("garbage").is_none());
    }
}
