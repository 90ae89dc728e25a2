//! End to end, over HTTP: `cargo xtask up` (the real binary) deploys the local environment
//! into a private emulator and serves it; the tests talk to it as a client would.
//!
//! Two kinds of deployment:
//! - the real five functions, built for this machine once per test binary (as `up` builds
//!   them): the invoice lifecycle, PDF generation through the stream, client errors;
//! - the std-only fixture function in every zip, for what the real functions never do on
//!   purpose: crash, time out, answer slowly; and for the usage plan's limits. It cannot seed,
//!   so these run with `--no-seed`.

mod common;

use std::time::{Duration, Instant};

use common::{
    HttpResponse, Up, fixture_text, fixture_zips, fixture_zips_variant, http, real_zips, wait_for,
};
use serde_json::Value;

fn pdf_text(pdf: &[u8]) -> String {
    let doc = lopdf::Document::load_mem(pdf).expect("a parseable PDF");
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    doc.extract_text(&pages)
        .expect("extractable text")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn error_code(r: &HttpResponse) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn sdk(up: &Up) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(xtask::aws::https_client())
        .endpoint_url(up.emu.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

/// Invoices in the local invoices table; each also has its InvoiceID guard item (the one with
/// an OwnerCustomerID), which is not counted.
async fn invoices_in_table(ddb: &aws_sdk_dynamodb::Client) -> i32 {
    ddb.scan()
        .table_name("invoices-table-local")
        .select(aws_sdk_dynamodb::types::Select::Count)
        .filter_expression("attribute_not_exists(OwnerCustomerID)")
        .send()
        .await
        .unwrap()
        .count()
}

/// Once seeded, another apply finds the seed (no step, no invocation, no write) and
/// `plan --no-seed` leaves the step out altogether.
fn seeded_again_does_nothing(up: &Up, zips: &std::path::Path) {
    let xtask = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["--env", "local", "--json"])
            .args(args)
            .arg("--artifacts-dir")
            .arg(zips)
            .env("XTASK__EMULATOR__PORT", up.emu.port().to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {stderr}"));
        (doc, stderr)
    };
    let seed_steps = |doc: &Value| -> Vec<(String, String)> {
        doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "seed")
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["action"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (again, stderr) = xtask(&["apply", "--yes"]);
    assert_eq!(
        seed_steps(&again),
        [("seed.mock_invoices".to_string(), "no-op".to_string())]
    );
    assert_eq!(again["api_calls"]["writes"], 0, "{again}");
    assert!(!stderr.contains("seeded"), "{stderr}");
    let (plan, stderr) = xtask(&["plan", "--no-seed"]);
    assert_eq!(seed_steps(&plan), []);
    assert_eq!(plan["changes"], false, "{plan}");
    assert!(stderr.contains("note: --no-seed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invoice_lifecycle_insert_list_pdf_download_and_mock_data() {
    let zips = tokio::task::spawn_blocking(real_zips).await.unwrap();
    let mut up = Up::start(zips, &[]).await;
    // `up` applied local.toml, whose [mock_data] is on: the seed step ran insert-mock-data's
    // deployed code on the local runtime, once, and the table holds its 100 invoices.
    let seeded: Vec<String> = up
        .stderr()
        .lines()
        .filter(|l| l.contains("seeded invoices-table-local"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        seeded,
        [
            "  seeded invoices-table-local through insert-mock-data-local:live: 100 inserted, 0 unchanged, 0 conflicts, 0 failed"
        ],
        "{}",
        up.stderr()
    );
    let ddb = aws_sdk_dynamodb::Client::new(&sdk(&up).await);
    assert_eq!(invoices_in_table(&ddb).await, 100);
    seeded_again_does_nothing(&up, zips);
    let invoice = fixture_text("e2e/invoice.json");

    let created = up.post_json("/insert-invoice", invoice.as_bytes());
    assert!(
        created.status == 200 || created.status == 201,
        "{created:?}"
    );
    let inserted_at = Instant::now();
    assert_eq!(created.json()["InvoiceID"], "INV-E2E-1");
    // The same invoice again is accepted and stores nothing new.
    let again = up.post_json("/insert-invoice", invoice.as_bytes());
    assert!(again.status < 300, "{again:?}");

    let listed = up.get("/list-invoices?customerId=CUST-E2E");
    assert_eq!(listed.status, 200, "{listed:?}");
    let items = listed.json();
    let ids: Vec<&str> = items
        .as_array()
        .expect("a JSON list")
        .iter()
        .filter_map(|i| i["InvoiceID"].as_str())
        .collect();
    assert_eq!(ids, ["INV-E2E-1"]);

    // The stream poller hands the insert to generate-pdf; download-invoice answers 409 until
    // the PDF exists, then a presigned URL.
    let ready = wait_for("the PDF", Duration::from_secs(90), || {
        let r = http(
            "GET",
            &format!("{}/download-invoice?InvoiceID=INV-E2E-1", up.url),
            &[("x-api-key", &up.api_key), ("accept", "application/json")],
            b"",
        );
        match r.status {
            200 => Some(r),
            409 => {
                assert!(r.header("retry-after").is_some(), "{r:?}");
                None
            }
            _ => panic!("unexpected answer while waiting for the PDF: {r:?}"),
        }
    });
    eprintln!(
        "insert -> PDF downloadable: {} ms",
        inserted_at.elapsed().as_millis()
    );
    let url = ready.json()["url"].as_str().expect("a url").to_string();
    assert!(url.contains("X-Amz-Signature"), "{url}");
    let pdf = http("GET", &url, &[], b"");
    assert_eq!(pdf.status, 200, "{}", pdf.text());
    assert!(pdf.body.starts_with(b"%PDF-"));
    let text = pdf_text(&pdf.body);
    for expected in ["INV-E2E-1", "CUST-E2E", "Laptop", "1,299.00"] {
        assert!(text.contains(expected), "{expected:?} not in {text:?}");
    }
    // The original clients' shape: `invoiceId`, answered with the bare URL as text.
    let plain = http(
        "GET",
        &format!("{}/download-invoice?invoiceId=INV-E2E-1", up.url),
        &[("x-api-key", &up.api_key)],
        b"",
    );
    assert_eq!(plain.status, 200, "{plain:?}");
    assert!(plain.text().starts_with("http://"), "{}", plain.text());

    let unknown = up.get("/download-invoice?InvoiceID=INV-NOPE");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(error_code(&unknown), "not_found");

    // Access logs reach the stage's log group in its JSON format.
    let request_id = listed.header("x-amzn-requestid").unwrap().to_string();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk(&up).await);
    let group = "/aws/apigateway/invoice-api-gateway-local";
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let found = logs
            .filter_log_events()
            .log_group_name(group)
            .send()
            .await
            .ok()
            .and_then(|events| {
                events
                    .events()
                    .iter()
                    .filter_map(|e| e.message())
                    .find(|m| m.contains(&request_id))
                    .map(str::to_string)
            });
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no access log line for {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let line: Value = serde_json::from_str(&line).expect("a JSON access log line");
    assert_eq!(line["status"], "200");
    assert_eq!(line["resourcePath"], "/list-invoices");
    assert!(!line["apiKeyId"].as_str().unwrap().is_empty());

    // The mock data function, invoked by hand after the seed: it stores nothing new.
    let before = invoices_in_table(&ddb).await;
    assert_eq!(before, 101, "the seed and INV-E2E-1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--env", "local", "invoke", "insert-mock-data"])
        .env("XTASK__EMULATOR__PORT", up.emu.port().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&answer["inserted"], &answer["unchanged"]),
        (&Value::from(0), &Value::from(100)),
        "{answer}"
    );
    assert_eq!(invoices_in_table(&ddb).await, before);
    let cust1 = up.get("/list-invoices?customerId=CUST1");
    assert_eq!(cust1.status, 200);
    assert!(!cust1.json().as_array().unwrap().is_empty());

    let status = up.stop();
    assert!(status.success(), "up exited with {status}");
    assert!(up.stderr().contains("stopped"), "{}", up.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn client_mistakes_get_json_errors_with_the_right_status() {
    let zips = tokio::task::spawn_blocking(real_zips).await.unwrap();
    let up = Up::start(zips, &["--no-streams", "--no-seed"]).await;

    // API keys: missing or wrong is API Gateway's 403, in the app's error shape.
    let url = format!("{}/list-invoices?customerId=C1", up.url);
    for headers in [vec![], vec![("x-api-key", "not-a-key")]] {
        let r = http("GET", &url, &headers, b"");
        assert_eq!(r.status, 403, "{r:?}");
        assert_eq!(error_code(&r), "forbidden");
    }
    // Unknown path or method.
    for (method, path) in [("GET", "/nope"), ("DELETE", "/list-invoices"), ("GET", "/")] {
        let r = http(
            method,
            &format!("{}{path}", up.url),
            &[("x-api-key", &up.api_key)],
            b"",
        );
        assert_eq!(r.status, 404, "{method} {path}: {r:?}");
        assert_eq!(error_code(&r), "not_found");
    }
    // Another stage does not exist.
    let other = url.replace("/v1/", "/v2/");
    assert_eq!(
        http("GET", &other, &[("x-api-key", &up.api_key)], b"").status,
        404
    );

    let malformed = up.post_json(
        "/insert-invoice",
        fixture_text("e2e/malformed.json").as_bytes(),
    );
    assert_eq!(malformed.status, 400, "{malformed:?}");
    assert_eq!(error_code(&malformed), "malformed_json");

    // The method's request validator: the gateway refuses before invoking the function.
    let missing = up.get("/list-invoices");
    assert_eq!(missing.status, 400, "{missing:?}");
    assert_eq!(error_code(&missing), "validation_failed");
    assert!(missing.text().contains("customerId"));
    assert_eq!(
        missing.header("x-amzn-errortype"),
        Some("BadRequestException")
    );
    // Present but invalid is the function's call: still a 400 in the same shape.
    let bad = up.get("/list-invoices?customerId=C1&limit=-5");
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(error_code(&bad), "validation_failed");

    // Over API Gateway's 10 MB payload limit: refused before any function runs.
    let huge = vec![b' '; 10 * 1024 * 1024 + 1];
    let r = up.post_json("/insert-invoice", &huge);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(error_code(&r), "payload_too_large");

    // Without the stream poller the PDF never comes: 409 with Retry-After, not a 500.
    let created = up.post_json(
        "/insert-invoice",
        fixture_text("e2e/invoice.json").as_bytes(),
    );
    assert!(created.status < 300, "{created:?}");
    let pending = up.get("/download-invoice?InvoiceID=INV-E2E-1");
    assert_eq!(pending.status, 409, "{pending:?}");
    assert_eq!(error_code(&pending), "not_ready");
    assert!(pending.header("retry-after").is_some());
    let unknown = up.get("/download-invoice?InvoiceID=INV-NOPE");
    assert_eq!(unknown.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_and_timeouts_give_502_and_504_and_the_next_request_is_served() {
    let dir = tempfile::tempdir().unwrap();
    fixture_zips(dir.path());
    let up = Up::start(
        dir.path(),
        &[
            "--no-streams",
            "--no-seed",
            "--set",
            "functions.timeout_secs=2",
        ],
    )
    .await;
    let call = |action: &str, extra: &[(&str, &str)], path: &str| {
        let mut headers = vec![("x-api-key", up.api_key.as_str()), ("action", action)];
        headers.extend_from_slice(extra);
        http("GET", &format!("{}{path}", up.url), &headers, b"")
    };
    let first = call("proxy", &[], "/list-invoices?customerId=C1");
    assert_eq!(first.status, 200, "{first:?}");
    let pid = first.json()["pid"].as_u64().unwrap();

    let crashed = call("crash", &[], "/list-invoices?customerId=C1");
    assert_eq!(crashed.status, 502, "{crashed:?}");
    assert_eq!(error_code(&crashed), "internal_error");
    let next = call("proxy", &[], "/list-invoices?customerId=C1");
    assert_eq!(next.status, 200, "{next:?}");
    assert_ne!(next.json()["pid"].as_u64().unwrap(), pid, "a new process");

    // The function's own timeout (2 s): Lambda fails the invocation, API Gateway gives 502.
    let slow = call("sleep", &[("ms", "5000")], "/list-invoices?customerId=C1");
    assert_eq!(slow.status, 502, "{slow:?}");
    assert_eq!(
        call("proxy", &[], "/list-invoices?customerId=C1").status,
        200
    );

    // A function answering something that is not a proxy response: 502.
    assert_eq!(
        call("echo", &[], "/list-invoices?customerId=C1").status,
        502
    );

    // The integration's timeout: give download-invoice's integration 300 ms and redeploy,
    // as one would on AWS; the gateway follows the new deployment.
    let gw = aws_sdk_apigateway::Client::new(&sdk(&up).await);
    let apis = gw.get_rest_apis().send().await.unwrap();
    let api_id = apis.items()[0].id().unwrap().to_string();
    let resources = gw
        .get_resources()
        .rest_api_id(&api_id)
        .send()
        .await
        .unwrap();
    let resource = resources
        .items()
        .iter()
        .find(|r| r.path() == Some("/download-invoice"))
        .unwrap();
    let integration = gw
        .get_integration()
        .rest_api_id(&api_id)
        .resource_id(resource.id().unwrap())
        .http_method("GET")
        .send()
        .await
        .unwrap();
    gw.put_integration()
        .rest_api_id(&api_id)
        .resource_id(resource.id().unwrap())
        .http_method("GET")
        .r#type(aws_sdk_apigateway::types::IntegrationType::AwsProxy)
        .integration_http_method("POST")
        .uri(integration.uri().unwrap())
        .timeout_in_millis(300)
        .send()
        .await
        .unwrap();
    gw.create_deployment()
        .rest_api_id(&api_id)
        .stage_name("v1")
        .send()
        .await
        .unwrap();
    let timed_out = wait_for("the new deployment", Duration::from_secs(30), || {
        let r = call("sleep", &[("ms", "1200")], "/download-invoice");
        (r.status == 504).then_some(r)
    });
    assert_eq!(error_code(&timed_out), "internal_error");
    assert_eq!(call("proxy", &[], "/download-invoice").status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_plan_quota_and_throttle_give_429() {
    let dir = tempfile::tempdir().unwrap();
    fixture_zips(dir.path());
    // A burst of 5 refilled at one request per 100 s, and 3 requests a day: three pass, the
    // next two are over the quota, then the burst is spent too.
    let up = Up::start(
        dir.path(),
        &[
            "--no-streams",
            "--no-seed",
            "--set",
            "api.usage_plan.throttle.burst_limit=5",
            "--set",
            "api.usage_plan.throttle.rate_limit=0.01",
            "--set",
            "api.usage_plan.quota.limit=3",
            "--set",
            "api.usage_plan.quota.period=DAY",
        ],
    )
    .await;
    let url = format!("{}/list-invoices?customerId=C1", up.url);
    let statuses: Vec<(u16, String)> = (0..6)
        .map(|_| {
            let r = http(
                "GET",
                &url,
                &[("x-api-key", &up.api_key), ("action", "proxy")],
                b"",
            );
            let code = if r.status == 429 {
                error_code(&r)
            } else {
                String::new()
            };
            (r.status, code)
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (200, String::new()),
            (200, String::new()),
            (200, String::new()),
            (429, "quota_exceeded".to_string()),
            (429, "quota_exceeded".to_string()),
            (429, "throttled".to_string()),
        ]
    );
    // Without a key nothing is counted: still the key error.
    assert_eq!(http("GET", &url, &[], b"").status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_follows_the_alias_to_a_newly_applied_version() {
    let dir = tempfile::tempdir().unwrap();
    fixture_zips(dir.path());
    let up = Up::start(dir.path(), &["--no-streams", "--no-seed"]).await;
    let url = format!("{}/list-invoices?customerId=C1", up.url);
    let get = || {
        let r = http(
            "GET",
            &url,
            &[("x-api-key", &up.api_key), ("action", "proxy")],
            b"",
        );
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
    };
    let before = get();
    assert_eq!(before["version"], "1");

    // What `--watch` does after a rebuild, done from outside: apply other code.
    let next = tempfile::tempdir().unwrap();
    fixture_zips_variant(next.path(), 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "--env",
            "local",
            "apply",
            "--yes",
            "--no-seed",
            "--artifacts-dir",
        ])
        .arg(next.path())
        .env("XTASK__EMULATOR__PORT", up.emu.port().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = wait_for("the new version", Duration::from_secs(30), || {
        let v = get();
        (v["version"] == "2").then_some(v)
    });
    assert_ne!(after["pid"], before["pid"], "served by a new process");
    assert!(up.stderr().contains("reloaded"), "{}", up.stderr());
}

/// schemathesis (PyPI) against the local app, driven by `openapi/invoice-api.json`: every
/// generated request, valid or not, must be answered as the document says. Bounded (examples
/// per operation, one worker) and seeded, so a run is reproducible and costs seconds.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_the_api_as_its_openapi_document_says() {
    let zips = tokio::task::spawn_blocking(real_zips).await.unwrap();
    // Limits far above what one worker sends: a 429 would answer in place of the case's own
    // status and hide it.
    let up = Up::start(
        zips,
        &[
            "--no-streams",
            "--set",
            "api.usage_plan.throttle.rate_limit=5000",
            "--set",
            "api.usage_plan.throttle.burst_limit=5000",
            "--set",
            "api.method_throttle.rate_limit=5000",
            "--set",
            "api.method_throttle.burst_limit=5000",
        ],
    )
    .await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    // Reports and caches land in the working directory.
    let work = tempfile::tempdir().unwrap();
    let python = std::env::var_os("XTASK_PYTHON").unwrap_or_else(|| "python3".into());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let url = up.url.clone();
        let header = format!("x-api-key: {}", up.api_key);
        let doc = root.join("openapi/invoice-api.json");
        let cwd = work.path().to_path_buf();
        move || {
            std::process::Command::new(python)
                .args(["-m", "schemathesis.cli", "--config-file"])
                .arg(common::fixture("schemathesis/schemathesis.toml"))
                .arg("run")
                .arg(doc)
                .args(["--url", url.as_str(), "--header", header.as_str()])
                .args(SCHEMATHESIS_ARGS)
                .env(
                    "SCHEMATHESIS_HOOKS",
                    common::fixture("schemathesis/hooks.py"),
                )
                .current_dir(cwd)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("running schemathesis (see TEST_TOOLS in xtask/src/cmd/test.rs)")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "schemathesis ran in {:.1} s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{}\nup:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        up.stderr()
    );
    let (generated, passed, errored) = schemathesis_summary(&stdout);
    assert_eq!(passed, generated, "every generated case passes:\n{stdout}");
    assert_eq!(errored, 0, "{stdout}");
    assert!(
        generated >= 100,
        "only {generated} cases generated:\n{stdout}"
    );
}

/// Flags of the schemathesis run (4.x CLI): every check but `unsupported_method`, which wants
/// 405 for an undeclared method where API Gateway (and `up`) answers 404 through the API's
/// gateway response; a fixed seed, no example database (a stored failure would be replayed
/// and make runs differ), and at most 30 examples per operation and phase.
const SCHEMATHESIS_ARGS: &[&str] = &[
    "--checks",
    "all",
    "--exclude-checks",
    "unsupported_method",
    "--max-examples",
    "30",
    "--seed",
    "20261204",
    "--generation-database",
    "none",
    "--workers",
    "1",
    "--no-color",
];

/// `(generated, passed, errored)` from the summary's `Test cases:` line (`  215 generated,
/// 215 passed`); a run with failures says `... found N unique failures` instead of `passed`.
fn schemathesis_summary(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .skip_while(|l| l.trim() != "Test cases:")
        .nth(1)
        .unwrap_or_else(|| panic!("no `Test cases:` summary:\n{stdout}"));
    let count = |label: &str| -> u64 {
        line.split(',')
            .map(str::trim)
            .find_map(|part| part.strip_suffix(label))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    (count(" generated"), count(" passed"), count(" errored"))
}
