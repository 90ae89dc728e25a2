//! The local Lambda runtime (`xtask::local::runtime`) against real processes.
//!
//! Most tests run `fixtures/runtime/fixture.rs`, a std-only function compiled once with `rustc`,
//! which speaks the Runtime API by hand and does what the event asks (echo, error, sleep, crash).
//! One test runs the real insert-invoice handler (aws-lambda-rust-runtime, the AWS SDK) against
//! a private moto server; it needs moto, as the other emulator tests do.
//!
//! Timing assertions only bound from above what must be quick (a timeout must fire near its
//! deadline) or from below what is implied by the work (two sleeps on one process take twice
//! as long); nothing sleeps to let a race settle: waits poll with deadlines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xtask::local::runtime::{
    Code, EmulatorAccess, FunctionConfig, FunctionLogs, InvokeOutcome, LocalConfig, LocalError,
    LocalLambda,
};

mod common;

fn fixture() -> &'static Path {
    common::fixture_binary()
}

fn spec(name: &str) -> FunctionConfig {
    let mut s = FunctionConfig::new(name, Code::Binary(fixture().to_path_buf()));
    s.timeout = Duration::from_secs(5);
    s
}

async fn start(functions: Vec<FunctionConfig>, max_processes: usize) -> LocalLambda {
    let mut config = LocalConfig::new(functions);
    config.max_processes = max_processes;
    config.logs = FunctionLogs::Stderr;
    LocalLambda::start(config).await.expect("start")
}

fn ok(outcome: &InvokeOutcome) -> &Value {
    match outcome {
        InvokeOutcome::Ok(v) => v,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn pid_alive(pid: u32) -> bool {
    // Reaped processes have no /proc entry; a zombie would still show "Z" here.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[tokio::test]
async fn echo_round_trip_with_lambda_headers() {
    let lambda = start(vec![spec("echo")], 2).await;
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let event = json!({"action": "echo", "nested": {"n": [1, 2, 3]}, "text": "héllo \"q\""});
    let invoked = lambda.invoke("echo", event.clone()).await.unwrap();
    let body = ok(&invoked.outcome);
    assert_eq!(body["event"], event);
    assert_eq!(body["pid"], invoked.pid);
    assert_eq!(body["requestId"], invoked.request_id.as_str());
    assert_eq!(
        body["arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:echo"
    );
    assert!(body["traceId"].as_str().unwrap().starts_with("Root=1-"));
    let deadline: u64 = body["deadlineMs"].as_str().unwrap().parse().unwrap();
    assert!(
        deadline >= before_ms + 5_000 && deadline <= before_ms + 5_000 + 60_000,
        "deadline {deadline} vs now {before_ms}"
    );
    assert!(invoked.init.is_some(), "first invocation is a cold start");
    assert!(invoked.max_rss_kb.is_some_and(|kb| kb > 0));
}

#[tokio::test]
async fn process_gets_a_clean_lambda_environment() {
    let mut s = spec("env-fn");
    s.env
        .insert("INVOICES_TABLE".into(), "invoices-table-local".into());
    // Reserved variables win over the function's configuration, as on Lambda.
    s.env
        .insert("AWS_LAMBDA_FUNCTION_NAME".into(), "overridden".into());
    s.memory_mb = 256;
    let mut config = LocalConfig::new(vec![s]);
    config.emulator = Some(EmulatorAccess::moto("http://127.0.0.1:4566"));
    config.region = "eu-west-1".into();
    let lambda = LocalLambda::start(config).await.unwrap();
    let invoked = lambda
        .invoke("env-fn", json!({"action": "env"}))
        .await
        .unwrap();
    let env = ok(&invoked.outcome);
    let expect = [
        ("AWS_LAMBDA_FUNCTION_NAME", "env-fn"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_REGION", "eu-west-1"),
        ("_HANDLER", "bootstrap"),
        ("INVOICES_TABLE", "invoices-table-local"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ("AWS_ACCESS_KEY_ID", "testing"),
    ];
    for (k, v) in expect {
        assert_eq!(env[k], v, "{k} in {env}");
    }
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap();
    assert!(api.starts_with("127.0.0.1:"), "{api}");
    // Nothing of the test process's environment leaks in (cargo sets these for tests).
    for leaked in ["CARGO_MANIFEST_DIR", "HOME", "RUST_TEST_THREADS", "CARGO"] {
        assert!(env.get(leaked).is_none(), "{leaked} leaked: {env}");
    }
}

#[tokio::test]
async fn warm_process_is_reused() {
    let lambda = start(vec![spec("warm")], 4).await;
    let first = lambda
        .invoke("warm", json!({"action": "echo"}))
        .await
        .unwrap();
    let second = lambda
        .invoke("warm", json!({"action": "echo"}))
        .await
        .unwrap();
    ok(&first.outcome);
    ok(&second.outcome);
    assert_eq!(first.pid, second.pid, "the warm process serves again");
    assert!(first.init.is_some());
    assert!(second.init.is_none(), "no init on a warm invocation");
    assert_eq!(lambda.idle_pids("warm").unwrap(), [first.pid]);
    assert_eq!(lambda.live_processes("warm").unwrap(), 1);
}

#[tokio::test]
async fn function_error_is_reported_and_the_process_kept() {
    let lambda = start(vec![spec("err")], 1).await;
    let failed = lambda
        .invoke("err", json!({"action": "error"}))
        .await
        .unwrap();
    assert_eq!(
        failed.outcome,
        InvokeOutcome::FunctionError {
            error_type: "FixtureError".into(),
            message: "asked to fail".into()
        }
    );
    let (payload, header) = failed.outcome.invoke_payload(&failed.request_id);
    assert_eq!(header, Some("Unhandled"));
    assert_eq!(payload["errorType"], "FixtureError");
    // A handled error does not reset the sandbox.
    let next = lambda
        .invoke("err", json!({"action": "echo"}))
        .await
        .unwrap();
    ok(&next.outcome);
    assert_eq!(next.pid, failed.pid);
}

#[tokio::test]
async fn timeout_kills_the_process_and_the_next_call_gets_a_new_one() {
    let mut s = spec("slow");
    s.timeout = Duration::from_millis(500);
    let lambda = start(vec![s], 1).await;
    let started = Instant::now();
    let timed_out = lambda
        .invoke("slow", json!({"action": "sleep", "ms": 30_000}))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        timed_out.outcome,
        InvokeOutcome::Timeout {
            after: Duration::from_millis(500),
            during_init: false
        }
    );
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    // Generous for a loaded CI machine, far below the fixture's 30 s sleep.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        !pid_alive(timed_out.pid),
        "the timed-out process was killed"
    );
    assert_eq!(lambda.live_processes("slow").unwrap(), 0);

    let next = lambda
        .invoke("slow", json!({"action": "echo"}))
        .await
        .unwrap();
    ok(&next.outcome);
    assert_ne!(next.pid, timed_out.pid);
    assert!(next.init.is_some(), "a fresh process: cold start");
}

#[tokio::test]
async fn memory_over_the_function_memory_size_kills_the_process() {
    let mut s = spec("small");
    s.memory_mb = 64;
    let lambda = start(vec![s], 1).await;
    let fits = lambda
        .invoke("small", json!({"action": "alloc", "mb": 8}))
        .await
        .unwrap();
    assert_eq!(ok(&fits.outcome)["held"], 8 * 256);
    let over = lambda
        .invoke("small", json!({"action": "alloc", "mb": 100}))
        .await
        .unwrap();
    match &over.outcome {
        InvokeOutcome::FunctionError { error_type, .. } => {
            assert_eq!(error_type, "Runtime.OutOfMemory")
        }
        other => panic!("expected an out-of-memory error, got {other:?}"),
    }
    assert!(wait_dead(over.pid), "the process is killed");
    let next = lambda
        .invoke("small", json!({"action": "echo"}))
        .await
        .unwrap();
    assert_ne!(next.pid, over.pid, "a fresh process after the kill");
}

/// Polls until `pid` is gone (it was killed; reaping may lag a moment).
fn wait_dead(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[tokio::test]
async fn crash_is_reported_and_the_next_call_gets_a_new_process() {
    let lambda = start(vec![spec("crashy")], 1).await;
    let warm = lambda
        .invoke("crashy", json!({"action": "echo"}))
        .await
        .unwrap();
    let crashed = lambda
        .invoke("crashy", json!({"action": "crash"}))
        .await
        .unwrap();
    assert_eq!(
        crashed.pid, warm.pid,
        "the crash happened in the warm process"
    );
    match &crashed.outcome {
        InvokeOutcome::Crashed { status, logs } => {
            assert!(status.contains('3'), "{status}");
            assert!(
                logs.iter().any(|l| l.contains("crashing on purpose")),
                "{logs:?}"
            );
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    let (payload, _) = crashed.outcome.invoke_payload(&crashed.request_id);
    assert_eq!(payload["errorType"], "Runtime.ExitError");

    let next = lambda
        .invoke("crashy", json!({"action": "echo"}))
        .await
        .unwrap();
    ok(&next.outcome);
    assert_ne!(next.pid, crashed.pid, "served by a new process");
}

/// The next invocation of the `gate` action to start: its process's pid and the connection
/// that holds it until dropped.
async fn next_gated(gate: &tokio::net::TcpListener) -> (u32, tokio::net::TcpStream) {
    use tokio::io::AsyncBufReadExt as _;
    let (conn, _) = tokio::time::timeout(Duration::from_secs(60), gate.accept())
        .await
        .expect("an invocation to start within 60 s")
        .unwrap();
    let mut conn = tokio::io::BufReader::new(conn);
    let mut pid = String::new();
    conn.read_line(&mut pid).await.unwrap();
    (pid.trim().parse().unwrap(), conn.into_inner())
}

#[tokio::test]
async fn concurrent_invocations_use_more_processes_up_to_the_limit() {
    let lambda = start(vec![spec("busy")], 2).await;
    // Each invocation runs until the test lets it finish, so the limit is checked while
    // calls are in flight: at each start, with the others running or queued.
    let gate = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = gate.local_addr().unwrap().port();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let lambda = lambda.clone();
            tokio::spawn(async move {
                lambda
                    .invoke("busy", json!({"action": "gate", "port": port}))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut running = std::collections::VecDeque::new();
    let mut seen = BTreeSet::new();
    for started in 1..=4 {
        let (pid, held) = next_gated(&gate).await;
        seen.insert(pid);
        running.push_back(held);
        let live = lambda.live_processes("busy").unwrap();
        assert!(
            live <= 2 && seen.len() <= 2,
            "call {started} started with {live} processes alive, {seen:?} serving"
        );
        if started == 2 {
            // Two calls at once: a second process, though the first could serve them in turn.
            assert_eq!(live, 2, "two calls run at once");
        }
        if running.len() == 2 {
            // At the limit: finishing one lets the next queued call start.
            running.pop_front();
        }
    }
    running.clear();
    let mut pids = BTreeSet::new();
    for call in calls {
        let invoked = call.await.unwrap();
        assert_eq!(ok(&invoked.outcome)["gated"], true);
        pids.insert(invoked.pid);
    }
    assert_eq!(pids, seen, "two processes for four concurrent calls");
    assert_eq!(lambda.live_processes("busy").unwrap(), 2);
}

#[tokio::test]
async fn init_failures_are_reported() {
    let mut fail = spec("init-fail");
    fail.env.insert("FIXTURE_INIT".into(), "fail".into());
    let mut exit = spec("init-exit");
    exit.env.insert("FIXTURE_INIT".into(), "exit".into());
    let mut slow = spec("init-slow");
    slow.env.insert("FIXTURE_INIT".into(), "slow".into());
    let mut config = LocalConfig::new(vec![fail, exit, slow]);
    config.init_timeout = Duration::from_millis(500);
    let lambda = LocalLambda::start(config).await.unwrap();

    let failed = lambda.invoke("init-fail", json!({})).await.unwrap();
    assert_eq!(
        failed.outcome,
        InvokeOutcome::FunctionError {
            error_type: "FixtureInitError".into(),
            message: "init failed on purpose".into()
        }
    );
    let exited = lambda.invoke("init-exit", json!({})).await.unwrap();
    assert!(
        matches!(&exited.outcome, InvokeOutcome::Crashed { logs, .. }
            if logs.iter().any(|l| l.contains("exiting during init"))),
        "{:?}",
        exited.outcome
    );
    let started = Instant::now();
    let slow = lambda.invoke("init-slow", json!({})).await.unwrap();
    assert_eq!(
        slow.outcome,
        InvokeOutcome::Timeout {
            after: Duration::from_millis(500),
            during_init: true
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    for f in ["init-fail", "init-exit", "init-slow"] {
        assert_eq!(lambda.live_processes(f).unwrap(), 0, "{f}");
    }
}

#[tokio::test]
async fn zipped_code_is_extracted_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture()).unwrap();
    let zip = xtask::build::zip_bootstrap(fixture(), &bytes).unwrap();
    let zip_path = dir.path().join("fn.zip");
    std::fs::write(&zip_path, zip).unwrap();
    let lambda = start(vec![FunctionConfig::new("zipped", Code::Zip(zip_path))], 1).await;
    let invoked = lambda
        .invoke("zipped", json!({"action": "echo", "k": 1}))
        .await
        .unwrap();
    assert_eq!(ok(&invoked.outcome)["event"]["k"], 1);
}

#[tokio::test]
async fn unknown_function_and_shutdown_are_errors() {
    let lambda = start(vec![spec("known")], 1).await;
    let err = lambda.invoke("nope", json!({})).await.unwrap_err();
    assert!(matches!(err, LocalError::UnknownFunction { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "unknown function `nope`; known functions: known"
    );
    let warm = lambda
        .invoke("known", json!({"action": "echo"}))
        .await
        .unwrap();
    lambda.shutdown().await;
    assert!(!pid_alive(warm.pid), "shutdown kills idle processes");
    assert!(matches!(
        lambda.invoke("known", json!({})).await,
        Err(LocalError::ShutDown)
    ));
}

/// A real function's deployment zip, built for this machine as `cargo xtask up` builds it
/// (once per test binary, shared with the end-to-end tests' build).
fn build_function(name: &str) -> PathBuf {
    common::real_zips().join(format!("{name}.zip"))
}

#[tokio::test]
async fn real_insert_invoice_handler_writes_to_the_emulator() {
    let emu = xtask::emulator::TestEmulator::start().await;
    let bootstrap = tokio::task::spawn_blocking(|| build_function("insert-invoice"))
        .await
        .unwrap();

    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(xtask::aws::https_client())
        .endpoint_url(emu.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    create_invoices_table(&ddb, "invoices-table-test").await;

    let mut s = FunctionConfig::new("insert-invoice", Code::Zip(bootstrap));
    s.env
        .insert("INVOICES_TABLE".into(), "invoices-table-test".into());
    s.timeout = Duration::from_secs(10);
    let mut config = LocalConfig::new(vec![s]);
    config.emulator = Some(EmulatorAccess::moto(emu.endpoint()));
    let lambda = LocalLambda::start(config).await.unwrap();

    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runtime/post_invoice.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cold = lambda
        .invoke("insert-invoice", event.clone())
        .await
        .unwrap();
    let response = ok(&cold.outcome);
    let status = response["statusCode"].as_u64().unwrap();
    assert!(status == 201 || status == 200, "{response}");
    let item = ddb
        .get_item()
        .table_name("invoices-table-test")
        .key(
            "InvoiceID",
            aws_sdk_dynamodb::types::AttributeValue::S("INV-LOCAL-1".into()),
        )
        .key(
            "CustomerID",
            aws_sdk_dynamodb::types::AttributeValue::S("CUST-LOCAL".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(item.item().is_some(), "the invoice is in DynamoDB");

    // Same invoice again: idempotent, served warm by the same process.
    let warm = lambda.invoke("insert-invoice", event).await.unwrap();
    let again = ok(&warm.outcome);
    assert!(again["statusCode"].as_u64().unwrap() < 300, "{again}");
    assert_eq!(warm.pid, cold.pid);
    eprintln!(
        "insert-invoice (host build): cold init {:?}, first invocation {:?}, warm invocation {:?}, peak RSS {:?} kB",
        cold.init, cold.duration, warm.duration, warm.max_rss_kb
    );
}

async fn create_invoices_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    let key = |n: &str, k: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(k)
            .build()
            .unwrap()
    };
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    ddb.create_table()
        .table_name(name)
        .key_schema(key("InvoiceID", KeyType::Hash))
        .key_schema(key("CustomerID", KeyType::Range))
        .attribute_definitions(attr("InvoiceID"))
        .attribute_definitions(attr("CustomerID"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("CustomerID-Index")
                .key_schema(key("CustomerID", KeyType::Hash))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the invoices table");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Figures for the report, not a pass/fail test: `cargo test -p xtask --test local_runtime
/// measure -- --ignored --nocapture`. Cold start = spawn to the first `/invocation/next` and to
/// the first response; warm = one `invoke()` round trip on a warm process. insert-invoice is
/// invoked with a malformed body (answered 400 by validation, no DynamoDB call), so the figure
/// is the data plane plus aws-lambda-rust-runtime, not moto's latency.
#[tokio::test]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn measure_cold_and_warm_invocations() {
    let emu = xtask::emulator::TestEmulator::start().await;
    let bootstrap = tokio::task::spawn_blocking(|| build_function("insert-invoice"))
        .await
        .unwrap();
    let event =
        json!({"httpMethod": "POST", "path": "/insert-invoice", "body": "not json", "headers": {}});
    let mk = |name: &str, code: PathBuf| {
        let mut s = FunctionConfig::new(name, Code::Zip(code));
        s.env.insert("INVOICES_TABLE".into(), "t".into());
        s
    };
    for (name, code, event) in [
        ("insert-invoice", bootstrap.clone(), event.clone()),
        (
            "fixture",
            fixture().to_path_buf(),
            json!({"action": "echo"}),
        ),
    ] {
        let mut inits = Vec::new();
        let mut firsts = Vec::new();
        for _ in 0..10 {
            let mut config = LocalConfig::new(vec![mk(name, code.clone())]);
            config.emulator = Some(EmulatorAccess::moto(emu.endpoint()));
            config.logs = FunctionLogs::Discard;
            let lambda = LocalLambda::start(config).await.unwrap();
            let t = Instant::now();
            let invoked = lambda.invoke(name, event.clone()).await.unwrap();
            firsts.push(t.elapsed());
            ok(&invoked.outcome);
            inits.push(invoked.init.unwrap());
            lambda.shutdown().await;
        }
        let mut config = LocalConfig::new(vec![mk(name, code.clone())]);
        config.emulator = Some(EmulatorAccess::moto(emu.endpoint()));
        config.logs = FunctionLogs::Discard;
        let lambda = LocalLambda::start(config).await.unwrap();
        let mut warm = Vec::new();
        let mut rss = 0;
        for i in 0..501 {
            let t = Instant::now();
            let invoked = lambda.invoke(name, event.clone()).await.unwrap();
            if i > 0 {
                warm.push(t.elapsed());
            }
            rss = invoked.max_rss_kb.unwrap_or(0);
        }
        inits.sort();
        firsts.sort();
        warm.sort();
        eprintln!(
            "{name}: cold init p50 {:?} (min {:?}, max {:?}); cold first response p50 {:?}; warm invoke p50 {:?} p99 {:?} (n={}); peak RSS {} kB",
            percentile(&inits, 0.5),
            inits[0],
            inits[inits.len() - 1],
            percentile(&firsts, 0.5),
            percentile(&warm, 0.5),
            percentile(&warm, 0.99),
            warm.len(),
            rss
        );
    }
}
