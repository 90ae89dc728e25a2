//! End-to-end tests of plan, apply and destroy: the real `xtask` binary against a private moto
//! server per test, so tests run in parallel without sharing state.

mod common;

use common::{Run, run_xtask};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType,
};
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;
use xtask::aws::Clients;
use xtask::emulator::TestEmulator;

const ENV: &str = "test";
const PDFS: &str = "invoice-app-pdfs-test-test";
const ARTIFACTS: &str = "invoice-app-artifacts-test-test";
const INVOICES: &str = "invoices-table-test";
const PROCESSED: &str = "processed-invoices-table-test";

struct Harness {
    emu: TestEmulator,
    aws: Clients,
}

impl Harness {
    async fn new() -> Harness {
        let emu = TestEmulator::start().await;
        let aws = common::emulator_clients(&emu).await;
        Harness { emu, aws }
    }

    /// Runs `xtask --json <args>` on the test config, against this test's emulator.
    fn xtask(&self, args: &[&str]) -> Run {
        self.xtask_with("engine.toml", args)
    }

    fn xtask_with(&self, config: &str, args: &[&str]) -> Run {
        run_xtask(ENV, config, self.emu.port(), args)
    }

    fn apply(&self, extra: &[&str]) -> Value {
        let mut args = vec!["apply", "--yes"];
        args.extend_from_slice(extra);
        self.xtask(&args).applied()
    }

    /// Plans with the given extra flags and returns (exit code, plan document).
    fn plan(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["plan", "--detailed-exitcode"];
        args.extend_from_slice(extra);
        self.xtask(&args).planned()
    }
}

/// `(id, action)` of every resource whose action is not a no-op.
fn actions(doc: &Value) -> Vec<(String, String)> {
    doc["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["action"] != "no-op")
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn changed_fields(doc: &Value, id: &str) -> Vec<String> {
    doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| {
            r["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn bucket_names(aws: &Clients) -> Vec<String> {
    aws.s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect()
}

async fn table_names(aws: &Clients) -> Vec<String> {
    aws.dynamodb
        .list_tables()
        .send()
        .await
        .unwrap()
        .table_names()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_is_idempotent_changes_are_exact_and_destroy_purges_everything() {
    let h = Harness::new().await;

    // From empty: everything is created.
    let (code, plan) = h.plan(&[]);
    assert_eq!(code, 2, "changes pending");
    assert_eq!(plan["summary"]["create"], 12);
    let doc = h.apply(&[]);
    assert_eq!(doc["summary"]["create"], 12);
    assert!(
        doc["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "done"),
        "{doc}"
    );

    // Live state as AWS reports it.
    let t = h
        .aws
        .dynamodb
        .describe_table()
        .table_name(INVOICES)
        .send()
        .await
        .unwrap();
    let t = t.table().unwrap();
    assert_eq!(
        t.global_secondary_indexes()[0].index_name(),
        Some("CustomerID-Index")
    );
    assert_eq!(
        t.stream_specification()
            .unwrap()
            .stream_view_type()
            .unwrap()
            .as_str(),
        "NEW_IMAGE"
    );
    let pitr = h
        .aws
        .dynamodb
        .describe_continuous_backups()
        .table_name(INVOICES)
        .send()
        .await
        .unwrap();
    assert_eq!(
        pitr.continuous_backups_description()
            .unwrap()
            .point_in_time_recovery_description()
            .unwrap()
            .point_in_time_recovery_status()
            .unwrap()
            .as_str(),
        "ENABLED"
    );
    let v = h
        .aws
        .s3
        .get_bucket_versioning()
        .bucket(PDFS)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status().unwrap().as_str(), "Enabled");

    // Re-plan: nothing to do, and a second apply makes no write call at all.
    let (code, plan) = h.plan(&[]);
    assert_eq!(code, 0, "{plan}");
    assert_eq!(plan["changes"], false);
    assert_eq!(plan["api_calls"]["writes"], 0);
    let doc = h.apply(&[]);
    assert_eq!(doc["api_calls"]["writes"], 0, "{doc}");
    assert!(doc["api_calls"]["reads"].as_u64().unwrap() > 0);

    // A config change plans exactly that update, in place, and applies it.
    let change = [
        "--set",
        "invoices_table.autoscaling.read.max=40",
        "--set",
        "invoices_table.point_in_time_recovery=false",
        "--set",
        "buckets.noncurrent_version_expiry_days=7",
    ];
    let (code, plan) = h.plan(&change);
    assert_eq!(code, 2);
    let mut got = actions(&plan);
    got.sort();
    assert_eq!(
        got,
        [
            ("dynamodb_table.invoices".to_string(), "update".to_string()),
            ("s3_bucket.artifacts".into(), "update".into()),
            ("s3_bucket.pdfs".into(), "update".into()),
            ("scalable_target.invoices_read".into(), "update".into()),
        ]
    );
    assert_eq!(
        changed_fields(&plan, "dynamodb_table.invoices"),
        ["point_in_time_recovery"]
    );
    assert_eq!(
        changed_fields(&plan, "scalable_target.invoices_read"),
        ["max"]
    );
    assert_eq!(
        changed_fields(&plan, "s3_bucket.pdfs"),
        ["noncurrent_version_expiry_days"]
    );
    h.apply(&change);
    let (code, plan) = h.plan(&change);
    assert_eq!(code, 0, "converged after the change: {plan}");
    let target = h
        .aws
        .autoscaling
        .describe_scalable_targets()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Dynamodb)
        .resource_ids(format!("table/{INVOICES}"))
        .send()
        .await
        .unwrap();
    let read = target
        .scalable_targets()
        .iter()
        .find(|t| t.scalable_dimension().as_str() == "dynamodb:table:ReadCapacityUnits")
        .unwrap();
    assert_eq!(read.max_capacity(), 40);

    // Object versions and delete markers, then destroy.
    for body in ["one", "two", "three"] {
        h.aws
            .s3
            .put_object()
            .bucket(PDFS)
            .key("invoices/INV1.pdf")
            .body(ByteStream::from_static(body.as_bytes()))
            .send()
            .await
            .unwrap();
    }
    h.aws
        .s3
        .delete_object()
        .bucket(PDFS)
        .key("invoices/INV1.pdf")
        .send()
        .await
        .unwrap();
    h.aws
        .s3
        .put_object()
        .bucket(ARTIFACTS)
        .key("functions/x.zip")
        .body(ByteStream::from_static(b"zip"))
        .send()
        .await
        .unwrap();
    let (code, plan) = h.plan(&["--destroy"]);
    assert_eq!(code, 2);
    let pdfs = plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "s3_bucket.pdfs")
        .unwrap();
    assert_eq!(pdfs["action"], "delete");
    assert_eq!(
        pdfs["details"][0],
        "purges 3 object versions and 1 delete marker first"
    );

    let refused = h.xtask(&["destroy"]);
    assert_eq!(
        refused.code, 1,
        "destroy without --yes and no terminal is refused"
    );
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(bucket_names(&h.aws).await.len(), 2, "nothing was deleted");

    let run = h.xtask(&["destroy", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["summary"]["delete"], 12);
    assert!(bucket_names(&h.aws).await.is_empty());
    assert!(table_names(&h.aws).await.is_empty());
    let targets = h
        .aws
        .autoscaling
        .describe_scalable_targets()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Dynamodb)
        .send()
        .await
        .unwrap();
    assert!(targets.scalable_targets().is_empty());

    // Destroying what is gone succeeds and deletes nothing: `destroy --yes` reads under the
    // lock, so taking and releasing it are its only writes.
    let again = h.xtask(&["destroy", "--yes"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let doc = again.json();
    assert_eq!(doc["summary"]["delete"], 0);
    assert_eq!(
        doc["api_calls"]["writes_by_operation"],
        serde_json::json!({"SSM.DeleteParameter": 1, "SSM.PutParameter": 1})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_moved_by_autoscaling_is_not_drift_but_capacity_outside_the_range_is() {
    let h = Harness::new().await;
    h.apply(&[]);
    let set_capacity = |read: i64| {
        h.aws
            .dynamodb
            .update_table()
            .table_name(INVOICES)
            .provisioned_throughput(
                ProvisionedThroughput::builder()
                    .read_capacity_units(read)
                    .write_capacity_units(5)
                    .build()
                    .unwrap(),
            )
            .send()
    };
    set_capacity(17).await.unwrap();
    let (code, plan) = h.plan(&[]);
    assert_eq!(code, 0, "17 is inside 5..=20: {plan}");

    set_capacity(30).await.unwrap();
    let (code, plan) = h.plan(&[]);
    assert_eq!(code, 2);
    let table = plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "dynamodb_table.invoices")
        .unwrap();
    assert_eq!(table["action"], "update");
    assert_eq!(table["changes"][0]["field"], "read_capacity");
    assert_eq!(table["changes"][0]["old"], 30);
    assert_eq!(table["changes"][0]["new"], 20);
    h.apply(&[]);
    assert_eq!(h.plan(&[]).0, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_to_on_demand_deletes_the_scaling_resources() {
    let h = Harness::new().await;
    h.apply(&[]);
    let ppr = ["--set", "invoices_table.billing_mode=PAY_PER_REQUEST"];
    let (code, plan) = h.plan(&ppr);
    assert_eq!(code, 2);
    let got = actions(&plan);
    assert_eq!(
        got.iter()
            .filter(|(id, a)| a == "delete"
                && (id.starts_with("scalable_target.") || id.starts_with("scaling_policy.")))
            .count(),
        8,
        "{got:?}"
    );
    assert!(got.contains(&("dynamodb_table.invoices".into(), "update".into())));
    h.apply(&ppr);
    assert_eq!(h.plan(&ppr).0, 0);
    let t = h
        .aws
        .dynamodb
        .describe_table()
        .table_name(INVOICES)
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.table()
            .unwrap()
            .billing_mode_summary()
            .unwrap()
            .billing_mode(),
        Some(&BillingMode::PayPerRequest)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_without_our_tags_are_reported_and_never_touched() {
    let h = Harness::new().await;
    // Someone else's bucket that happens to have our name.
    h.aws.s3.create_bucket().bucket(PDFS).send().await.unwrap();
    h.aws
        .s3
        .put_object()
        .bucket(PDFS)
        .key("theirs.txt")
        .body(ByteStream::from_static(b"keep me"))
        .send()
        .await
        .unwrap();

    let (_, plan) = h.plan(&[]);
    assert!(actions(&plan).contains(&("s3_bucket.pdfs".into(), "conflict".into())));
    let run = h.xtask(&["apply", "--yes"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("without this stack's ownership tags"),
        "{}",
        run.stderr
    );
    assert!(
        table_names(&h.aws).await.is_empty(),
        "a refused apply changes nothing"
    );

    // Destroy removes only what is ours; the foreign bucket and its object stay.
    let run = h.xtask(&["destroy", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let kept = h
        .aws
        .s3
        .get_object()
        .bucket(PDFS)
        .key("theirs.txt")
        .send()
        .await;
    assert!(kept.is_ok(), "the foreign bucket's object survives");
    // S3 has no typed variant for NoSuchTagSet: its error code is the typed part of the answer.
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    let tags = h.aws.s3.get_bucket_tagging().bucket(PDFS).send().await;
    let code = tags
        .as_ref()
        .map_err(|e| e.as_service_error().and_then(|e| e.code()));
    assert!(
        matches!(code, Err(Some("NoSuchTagSet"))),
        "the foreign bucket was not tagged: {tags:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_a_table_that_holds_items_needs_an_explicit_flag() {
    let h = Harness::new().await;
    h.apply(&[]);
    // Our processed table, but with a key schema the stack does not want, and an item in it.
    h.aws
        .dynamodb
        .delete_table()
        .table_name(PROCESSED)
        .send()
        .await
        .unwrap();
    h.aws
        .dynamodb
        .create_table()
        .table_name(PROCESSED)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("Id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("Id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("app")
                .value("invoice-app")
                .build()
                .unwrap(),
        )
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("env")
                .value(ENV)
                .build()
                .unwrap(),
        )
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("managed-by")
                .value("xtask")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    h.aws
        .dynamodb
        .put_item()
        .table_name(PROCESSED)
        .item("Id", aws_sdk_dynamodb::types::AttributeValue::S("x".into()))
        .send()
        .await
        .unwrap();

    let (_, plan) = h.plan(&[]);
    let table = plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "dynamodb_table.processed")
        .unwrap()
        .clone();
    assert_eq!(table["action"], "replace");
    assert!(
        table["blocked"]
            .as_str()
            .unwrap()
            .contains("--allow-data-loss")
    );
    assert!(
        table["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "hash_key" && c["forces_replacement"] == true)
    );

    let refused = h.xtask(&["apply", "--yes", "--verbose"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("--allow-data-loss"),
        "{}",
        refused.stderr
    );
    // Refused before any write: not even the lock (a replacement does not ask for it early).
    assert!(
        refused.stderr.contains("aws: DynamoDB.DescribeTable ok"),
        "the verbose log lists the calls: {}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("SSM.PutParameter"),
        "{}",
        refused.stderr
    );
    let item = h
        .aws
        .dynamodb
        .scan()
        .table_name(PROCESSED)
        .send()
        .await
        .unwrap();
    assert_eq!(item.count(), 1, "the refused replace kept the data");

    h.apply(&["--allow-data-loss"]);
    let t = h
        .aws
        .dynamodb
        .describe_table()
        .table_name(PROCESSED)
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.table().unwrap().key_schema()[0].attribute_name(),
        "InvoiceID"
    );
    assert_eq!(h.plan(&[]).0, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_refuses_a_second_apply_until_broken() {
    let h = Harness::new().await;
    let holder = r#"{"who":"alice@laptop","command":"apply","pid":4242,"since_unix":1}"#;
    h.aws
        .ssm
        .put_parameter()
        .name(common::TEST_LOCK)
        .value(holder)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let run = h.xtask(&["apply", "--yes"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("locked by alice@laptop (`apply`, pid 4242)"),
        "{}",
        run.stderr
    );
    // The lock was asked for beside the plan; the refusal still comes after the plan.
    let plan_at = run.stderr.find("Plan: ").expect("the plan is shown");
    assert!(
        plan_at < run.stderr.find("locked by").unwrap(),
        "{}",
        run.stderr
    );
    assert!(bucket_names(&h.aws).await.is_empty(), "nothing was created");

    let run = h.xtask(&["apply", "--yes", "--break-lock"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(bucket_names(&h.aws).await.len(), 2);
    let lock = common::test_lock(&h.aws).await;
    assert_eq!(lock, None, "the lock is released after apply");
}

/// A stand-in for the AWS endpoint that records the connections made to it (and answers
/// none): what a command sent, seen from outside the process, whatever it would log.
struct CountingEndpoint {
    port: u16,
    peers: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
}

impl CountingEndpoint {
    fn start() -> CountingEndpoint {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = peers.clone();
        std::thread::spawn(move || {
            for (conn, peer) in std::iter::from_fn(|| listener.accept().ok()) {
                seen.lock().unwrap().push(peer);
                drop(conn);
            }
        });
        CountingEndpoint { port, peers }
    }

    /// Connections made by commands that have exited. Each was queued by the kernel before
    /// its `connect` returned, so a connection of our own, queued after them, is accepted
    /// after them: once the listener has seen ours, it has seen all of theirs.
    fn count(&self) -> usize {
        let marker = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let ours = marker.local_addr().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let peers = self.peers.lock().unwrap();
            if peers.contains(&ours) {
                return peers.len() - 1;
            }
            drop(peers);
            assert!(
                std::time::Instant::now() < deadline,
                "the listener is stuck"
            );
            std::thread::yield_now();
        }
    }
}

#[test]
fn a_bad_config_is_rejected_before_any_aws_call() {
    // No emulator: the config's endpoint is a listener that only counts connections, and
    // `--verbose` would log every SDK call the command made.
    let aws = CountingEndpoint::start();
    let xtask = |config: &str, args: &[&str]| {
        let mut all = vec!["--verbose"];
        all.extend_from_slice(args);
        run_xtask(ENV, config, aws.port, &all)
    };
    let run = xtask("bad-capacity.toml", &["plan"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("bad-capacity.toml:7:17")
            && run.stderr.contains("invoices_table.read_capacity"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    let bad_flag = xtask(
        "engine.toml",
        &["plan", "--set", "invoices_table.autoscaling.read.min=50"],
    );
    assert_eq!(bad_flag.code, 1);
    assert!(
        bad_flag
            .stderr
            .contains("flag --set invoices_table.autoscaling.read.min=50"),
        "{}",
        bad_flag.stderr
    );
    for r in [&run, &bad_flag] {
        assert!(!r.stderr.contains("aws: "), "an AWS call: {}", r.stderr);
    }
    assert_eq!(aws.count(), 0, "connections to the AWS endpoint");
}
