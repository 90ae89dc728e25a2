//! Cold start of a handler binary against a local Lambda Runtime API stub: init (process start
//! to its first `GET .../invocation/next`, what Lambda reports as Init Duration), first
//! response, and the binary's peak RSS.
//!
//! ```text
//! cargo run --release -p invoice-core --example coldstart -- <bootstrap> <event.json> [runs] [KEY=VALUE...]
//! ```
//!
//! std only, so it also builds without the SDK: `rustc -O --edition 2024
//! functions/invoice-core/examples/coldstart.rs -o coldstart`. For each run the stub listens
//! on a free port, starts the binary with `AWS_LAMBDA_RUNTIME_API` pointing at it, takes the
//! init time at the first poll, serves `event.json` as the first invocation and stops the
//! clock when the response is posted. Peak RSS is the child's `VmHWM` read from
//! `/proc` at that moment (Linux only). Dummy credentials and a region are set so the SDK never
//! probes instance metadata, as on Lambda, where they come from the environment too. Set
//! `COLDSTART_LOGS=1` to see the handler's JSON logs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Request { method, path, body })
}

fn respond(mut stream: &TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One cold start: (time to the first poll, time to the first response, peak RSS in KiB,
/// response body).
fn run_once(
    binary: &str,
    event: &[u8],
    env: &[(String, String)],
) -> (Duration, Duration, Option<u64>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let start = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "coldstart")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        // The handlers log to stdout; shown only on request so the timings stay readable.
        .stdout(if std::env::var_os("COLDSTART_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the handler binary");
    let mut served = false;
    let mut init = None;
    let mut result = None;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let Ok(request) = read_request(&stream) else {
            continue;
        };
        if request.method == "GET" && request.path.ends_with("/invocation/next") {
            if served {
                // Second poll: the first invocation is done; measure and stop.
                break;
            }
            init = Some(start.elapsed());
            served = true;
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
                + 30_000;
            respond(
                &stream,
                "200 OK",
                &[
                    ("Lambda-Runtime-Aws-Request-Id", "coldstart-1".into()),
                    ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                    (
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:coldstart".into(),
                    ),
                    (
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000".into(),
                    ),
                    ("Content-Type", "application/json".into()),
                ],
                event,
            );
        } else if request.method == "POST" {
            let elapsed = start.elapsed();
            respond(&stream, "202 Accepted", &[], b"{}");
            let body = String::from_utf8_lossy(&request.body).into_owned();
            if request.path.contains("error") {
                eprintln!("handler reported an error on {}: {body}", request.path);
            }
            result = Some((
                init.expect("a response follows a poll"),
                elapsed,
                peak_rss_kib(child.id()),
                body,
            ));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    result.expect("the handler posted a response")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(binary), Some(event_path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: coldstart <bootstrap> <event.json> [runs] [KEY=VALUE...]");
        std::process::exit(2);
    };
    let event = std::fs::read(event_path).expect("read the event");
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(20);
    let env: Vec<(String, String)> = args
        .iter()
        .skip(3)
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let mut inits = Vec::new();
    let mut times = Vec::new();
    let mut peak = 0;
    let mut last_body = String::new();
    for _ in 0..runs {
        let (init, elapsed, rss, body) = run_once(binary, &event, &env);
        inits.push(init);
        times.push(elapsed);
        peak = peak.max(rss.unwrap_or(0));
        last_body = body;
    }
    inits.sort();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let stats = |sorted: &[Duration]| {
        format!(
            "p50 {:.1} ms (min {:.1}, p90 {:.1})",
            ms(sorted[runs / 2]),
            ms(sorted[0]),
            ms(sorted[(runs * 9 / 10).min(runs - 1)]),
        )
    };
    println!(
        "{binary}: {runs} runs; init (start to first poll) {}; first response {}; peak RSS {:.1} MiB",
        stats(&inits),
        stats(&times),
        peak as f64 / 1024.0,
    );
    println!(
        "response: {}",
        last_body.chars().take(200).collect::<String>()
    );
}
