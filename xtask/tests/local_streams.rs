//! The local stream poller (`xtask::local::streams`) against a private moto per test.
//!
//! Each test creates the invoices-like table with a NEW_IMAGE stream, a function with an alias
//! `live` and an event source mapping on the alias, as the stack deploys them; moto stores the
//! mapping and (patched by `moto_fixes.py`) only appends writes to the stream. The poller then
//! invokes a fake function recording every event (or, in one test, the real local Lambda
//! runtime with the std-only fixture function). Items come from
//! `fixtures/streams/invoice_item.json`.
//!
//! Nothing sleeps to let a race settle: tests wait for conditions with deadlines, and write
//! items for a `LATEST` poller only after it reports it is reading.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use aws_sdk_lambda::types::{EventSourcePosition, FunctionCode, FunctionResponseType, Runtime};
use serde_json::{Value, json};
use xtask::aws::{CallLog, Clients, Target};
use xtask::emulator::TestEmulator;
use xtask::engine::retry::Backoff;
use xtask::local::runtime::{
    Code, FunctionConfig, FunctionLogs, InvokeOutcome, LocalConfig, LocalError, LocalLambda,
};
use xtask::local::streams::{
    Invoke, Poller, PollerConfig, PollerHandle, StartingPosition, StreamMapping, read_mapping,
};

const REGION: &str = "us-east-1";
const TABLE: &str = "invoices-local";
const FUNCTION: &str = "generate-pdf-local";
/// Generous: moto answers in milliseconds, but two cores are shared with other test binaries.
const DEADLINE: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/streams")
        .join(name)
}

/// The mapping's settings a test asks for.
#[derive(Clone)]
struct MappingSettings {
    position: EventSourcePosition,
    batch_size: i32,
    max_retries: i32,
    bisect: bool,
    report_failures: bool,
    window_secs: i32,
}

impl MappingSettings {
    fn new(position: EventSourcePosition, batch_size: i32) -> MappingSettings {
        MappingSettings {
            position,
            batch_size,
            max_retries: -1,
            bisect: false,
            report_failures: false,
            window_secs: 0,
        }
    }
}

struct Env {
    _emu: TestEmulator,
    clients: Clients,
    stream_arn: String,
    alias_arn: String,
}

impl Env {
    async fn start(settings: MappingSettings) -> Env {
        let emu = TestEmulator::start().await;
        let target = Target::Emulator {
            endpoint: emu.endpoint(),
            region: REGION.into(),
        };
        let clients = Clients::new(&target, CallLog::new(false)).await;
        let table = clients
            .dynamodb
            .create_table()
            .table_name(TABLE)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("invoice_id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("invoice_id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("CreateTable");
        let stream_arn = table
            .table_description()
            .and_then(|t| t.latest_stream_arn())
            .expect("a stream")
            .to_owned();

        let role = clients
            .iam
            .create_role()
            .role_name("generate-pdf-role")
            .assume_role_policy_document(
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
                .to_string(),
            )
            .send()
            .await
            .expect("CreateRole");
        let lambda = &clients.lambda;
        lambda
            .create_function()
            .function_name(FUNCTION)
            .runtime(Runtime::Providedal2023)
            .handler("bootstrap")
            .role(role.role().unwrap().arn())
            .code(
                FunctionCode::builder()
                    .zip_file(function_zip().into())
                    .build(),
            )
            .send()
            .await
            .expect("CreateFunction");
        let version = lambda
            .publish_version()
            .function_name(FUNCTION)
            .send()
            .await
            .expect("PublishVersion");
        let alias = lambda
            .create_alias()
            .function_name(FUNCTION)
            .name("live")
            .function_version(version.version().unwrap())
            .send()
            .await
            .expect("CreateAlias");
        let alias_arn = alias.alias_arn().unwrap().to_owned();
        let mut esm = lambda
            .create_event_source_mapping()
            .event_source_arn(&stream_arn)
            .function_name(&alias_arn)
            .starting_position(settings.position)
            .batch_size(settings.batch_size)
            .maximum_batching_window_in_seconds(settings.window_secs)
            .bisect_batch_on_function_error(settings.bisect)
            .maximum_retry_attempts(settings.max_retries);
        if settings.report_failures {
            esm = esm.function_response_types(FunctionResponseType::ReportBatchItemFailures);
        }
        esm.send().await.expect("CreateEventSourceMapping");
        Env {
            _emu: emu,
            clients,
            stream_arn,
            alias_arn,
        }
    }

    async fn mapping(&self) -> StreamMapping {
        read_mapping(&self.clients.lambda, &self.alias_arn)
            .await
            .expect("ListEventSourceMappings")
            .expect("the mapping")
    }

    /// Puts the fixture item with `id` as its key.
    async fn put(&self, id: &str) {
        let mut item = fixture_item();
        item.insert("invoice_id".into(), AttributeValue::S(id.into()));
        self.clients
            .dynamodb
            .put_item()
            .table_name(TABLE)
            .set_item(Some(item))
            .send()
            .await
            .expect("PutItem");
    }

    fn poller<I: Invoke + 'static>(
        &self,
        mapping: StreamMapping,
        invoker: I,
        checkpoint_file: Option<PathBuf>,
    ) -> PollerHandle {
        self.poller_with(mapping, invoker, |config| {
            config.checkpoint_file = checkpoint_file
        })
    }

    /// [`Env::poller`] with the test's settings applied last.
    fn poller_with<I: Invoke + 'static>(
        &self,
        mapping: StreamMapping,
        invoker: I,
        settings: impl FnOnce(&mut PollerConfig),
    ) -> PollerHandle {
        let mut config = PollerConfig::new(FUNCTION, REGION);
        // Quick retries: the tests count redeliveries, not wait for them.
        config.retry_backoff = Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(100),
            deadline: Duration::MAX,
        };
        settings(&mut config);
        Poller::new(
            self.clients.dynamodbstreams.clone(),
            mapping,
            invoker,
            config,
        )
        .expect("poller")
        .spawn()
    }
}

fn function_zip() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("bootstrap", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(&std::fs::read(fixture("function.txt")).unwrap())
        .unwrap();
    zip.finish().unwrap().into_inner()
}

fn fixture_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("invoice_item.json")).unwrap()).unwrap()
}

fn fixture_item() -> HashMap<String, AttributeValue> {
    fn attr(v: &Value) -> AttributeValue {
        let (k, v) = v.as_object().unwrap().iter().next().unwrap();
        let strings = |v: &Value| -> Vec<String> { serde_json::from_value(v.clone()).unwrap() };
        match k.as_str() {
            "S" => AttributeValue::S(v.as_str().unwrap().into()),
            "N" => AttributeValue::N(v.as_str().unwrap().into()),
            "BOOL" => AttributeValue::Bool(v.as_bool().unwrap()),
            "NULL" => AttributeValue::Null(true),
            "SS" => AttributeValue::Ss(strings(v)),
            "NS" => AttributeValue::Ns(strings(v)),
            "B" => {
                use base64::Engine as _;
                AttributeValue::B(
                    base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap())
                        .unwrap()
                        .into(),
                )
            }
            "L" => AttributeValue::L(v.as_array().unwrap().iter().map(attr).collect()),
            "M" => AttributeValue::M(
                v.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), attr(v)))
                    .collect(),
            ),
            other => panic!("attribute type {other} in the fixture"),
        }
    }
    fixture_json()
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), attr(v)))
        .collect()
}

/// What a [`Fake`] answers, given the call's index, its records' keys and the event.
type Respond = Box<dyn Fn(usize, &[String], &Value) -> InvokeOutcome + Send + Sync>;

/// A function stand-in: records every event and answers what `respond` says for the call's
/// index and its records' keys; optionally takes `delay` to answer.
struct Fake {
    events: Mutex<Vec<Value>>,
    finished: AtomicUsize,
    delay: Duration,
    respond: Respond,
}

impl Fake {
    fn new(
        respond: impl Fn(usize, &[String], &Value) -> InvokeOutcome + Send + Sync + 'static,
    ) -> Arc<Fake> {
        Arc::new(Fake {
            events: Mutex::new(Vec::new()),
            finished: AtomicUsize::new(0),
            delay: Duration::ZERO,
            respond: Box::new(respond),
        })
    }

    fn ok() -> Arc<Fake> {
        Fake::new(|_, _, _| InvokeOutcome::Ok(Value::Null))
    }

    /// The keys of each delivered batch, in delivery order.
    fn batches(&self) -> Vec<Vec<String>> {
        self.events.lock().unwrap().iter().map(keys).collect()
    }

    fn delivered(&self) -> Vec<String> {
        self.batches().concat()
    }
}

impl Invoke for Fake {
    fn invoke(
        &self,
        function: &str,
        payload: Value,
    ) -> impl Future<Output = Result<InvokeOutcome, LocalError>> + Send {
        assert_eq!(function, FUNCTION);
        let index = {
            let mut events = self.events.lock().unwrap();
            events.push(payload.clone());
            events.len() - 1
        };
        let outcome = (self.respond)(index, &keys(&payload), &payload);
        async move {
            tokio::time::sleep(self.delay).await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(outcome)
        }
    }
}

fn keys(event: &Value) -> Vec<String> {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["dynamodb"]["Keys"]["invoice_id"]["S"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn sequence_of(event: &Value, key: &str) -> String {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dynamodb"]["Keys"]["invoice_id"]["S"] == key)
        .map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned())
        .unwrap()
}

fn function_error() -> InvokeOutcome {
    InvokeOutcome::FunctionError {
        error_type: "RenderError".into(),
        message: "failed on purpose".into(),
    }
}

/// Polls `cond` until it holds; panics after [`DEADLINE`] with `what`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[tokio::test]
async fn mapping_is_read_by_function_name_or_alias_arn() {
    let mut settings = MappingSettings::new(EventSourcePosition::TrimHorizon, 7);
    settings.max_retries = 3;
    settings.bisect = true;
    settings.report_failures = true;
    let env = Env::start(settings).await;
    let by_alias = env.mapping().await;
    assert_eq!(by_alias.event_source_arn, env.stream_arn);
    assert_eq!(by_alias.batch_size, 7);
    assert_eq!(by_alias.starting_position, StartingPosition::TrimHorizon);
    assert_eq!(by_alias.maximum_batching_window, Duration::ZERO);
    assert!(by_alias.bisect_on_error);
    assert_eq!(by_alias.maximum_retry_attempts, 3);
    assert!(by_alias.report_batch_item_failures);
    assert!(by_alias.enabled);
    let lambda = &env.clients.lambda;
    let by_name = read_mapping(lambda, FUNCTION).await.unwrap();
    assert_eq!(by_name.as_ref(), Some(&by_alias));
    let by_short_alias = read_mapping(lambda, &format!("{FUNCTION}:live"))
        .await
        .unwrap();
    assert_eq!(by_short_alias.map(|m| m.uuid), Some(by_alias.uuid.clone()));
    // Another alias of the function, or another function, has no mapping.
    assert_eq!(
        read_mapping(lambda, &format!("{FUNCTION}:canary"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        read_mapping(lambda, "list-invoices-local").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn items_put_after_start_are_delivered_once_in_order_in_batches() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::Latest, 3)).await;
    let fake = Fake::ok();
    let mut poller = env.poller(env.mapping().await, fake.clone(), None);
    poller.ready().await;

    env.put("first").await;
    wait_until("the first item", || fake.delivered().len() == 1).await;

    let ids: Vec<String> = (0..7).map(|i| format!("inv-{i}")).collect();
    let started = Instant::now();
    for id in &ids {
        env.put(id).await;
    }
    wait_until("all items", || fake.delivered().len() == 1 + ids.len()).await;
    let all = started.elapsed();
    let stats = poller.stop().await.unwrap();
    eprintln!("7 items put and delivered in {all:?}");

    let mut expected = vec!["first".to_owned()];
    expected.extend(ids);
    assert_eq!(fake.delivered(), expected, "each once, in order");
    assert!(
        fake.batches().iter().all(|b| !b.is_empty() && b.len() <= 3),
        "{:?}",
        fake.batches()
    );
    assert_eq!(stats.records_processed, 8);
    assert_eq!(stats.failed_invocations, 0);

    let template = fixture_json();
    for event in fake.events.lock().unwrap().iter() {
        let typed: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_value(event.clone()).expect("a DynamoDB event");
        for (record, raw) in typed
            .records
            .iter()
            .zip(event["Records"].as_array().unwrap())
        {
            assert_eq!(record.event_name, "INSERT");
            assert_eq!(record.event_source.as_deref(), Some("aws:dynamodb"));
            assert_eq!(
                record.event_source_arn.as_deref(),
                Some(env.stream_arn.as_str())
            );
            assert_eq!(record.aws_region, REGION);
            let mut image = raw["dynamodb"]["NewImage"].clone();
            image["invoice_id"] = template["invoice_id"].clone();
            assert_eq!(image, template, "the item, attribute by attribute");
        }
    }
}

#[tokio::test]
async fn delivery_latency_is_bounded_by_the_idle_poll_interval() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::Latest, 10)).await;
    let fake = Fake::ok();
    let mut poller = env.poller(env.mapping().await, fake.clone(), None);
    poller.ready().await;
    let mut latencies = Vec::new();
    // Idle gaps that leave the poller's backoff anywhere from its first step to its bound.
    for (i, idle_ms) in [0u64, 300, 700, 1200, 1700].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(idle_ms)).await;
        let put_at = Instant::now();
        env.put(&format!("inv-{i}")).await;
        wait_until("the item", || fake.delivered().len() == i + 1).await;
        latencies.push(put_at.elapsed());
    }
    poller.stop().await.unwrap();
    eprintln!("PutItem -> invocation: {latencies:?}");
    let bound = xtask::local::streams::MAX_IDLE_POLL_INTERVAL + Duration::from_millis(500);
    assert!(latencies.iter().all(|l| *l < bound), "{latencies:?}");
}

#[tokio::test]
async fn batching_window_collects_records_into_one_batch() {
    let mut settings = MappingSettings::new(EventSourcePosition::Latest, 10);
    settings.window_secs = 1;
    let env = Env::start(settings).await;
    let fake = Fake::ok();
    let mut poller = env.poller(env.mapping().await, fake.clone(), None);
    poller.ready().await;
    let put_at = Instant::now();
    for id in ["a", "b", "c"] {
        env.put(id).await;
    }
    wait_until("the batch", || !fake.delivered().is_empty()).await;
    let waited = put_at.elapsed();
    wait_until("all records", || fake.delivered().len() == 3).await;
    poller.stop().await.unwrap();
    eprintln!("batching window 1 s: first delivery {waited:?} after the first put");
    assert_eq!(fake.batches(), vec![strings(&["a", "b", "c"])]);
    // The window starts when the first record is read, at most one idle poll after its put.
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
}

/// On AWS a mapping's pollers run from the moment it is made, so `LATEST` means "from the
/// mapping's `LastModified`": what is written after the mapping was made reaches the function
/// even if the local poller starts later (as `up`'s does, after the apply that seeded the table).
#[tokio::test]
async fn latest_delivers_what_was_written_after_the_mapping_before_the_poller_started() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::Latest, 10)).await;
    let mapping = env.mapping().await;
    assert!(mapping.since.is_some(), "Lambda reports LastModified");
    env.put("seeded-before-the-poller").await;

    let fake = Fake::ok();
    let mut poller = env.poller(mapping, fake.clone(), None);
    poller.ready().await;
    env.put("after").await;
    wait_until("both records", || fake.delivered().len() == 2).await;
    poller.stop().await.unwrap();
    assert_eq!(
        fake.delivered(),
        strings(&["seeded-before-the-poller", "after"])
    );
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn latest_skips_earlier_records_and_trim_horizon_reads_them() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::Latest, 10)).await;
    env.put("before").await;
    let mut latest_mapping = env.mapping().await;
    // As if the mapping had been made right after `before` was written: LATEST starts there.
    latest_mapping.since = Some(now_secs());
    let mut horizon_mapping = latest_mapping.clone();
    horizon_mapping.starting_position = StartingPosition::TrimHorizon;

    let latest = Fake::ok();
    let horizon = Fake::ok();
    let mut latest_poller = env.poller(latest_mapping, latest.clone(), None);
    let mut horizon_poller = env.poller(horizon_mapping, horizon.clone(), None);
    latest_poller.ready().await;
    horizon_poller.ready().await;
    env.put("after").await;
    wait_until("LATEST delivery", || !latest.delivered().is_empty()).await;
    wait_until("TRIM_HORIZON delivery", || horizon.delivered().len() == 2).await;
    latest_poller.stop().await.unwrap();
    horizon_poller.stop().await.unwrap();
    assert_eq!(latest.delivered(), strings(&["after"]));
    assert_eq!(horizon.delivered(), strings(&["before", "after"]));
}

#[tokio::test]
async fn function_error_redelivers_the_same_batch_then_moves_on() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::TrimHorizon, 10)).await;
    env.put("a").await;
    env.put("b").await;
    // Fails the first two calls.
    let fake = Fake::new(|n, _, _| {
        if n < 2 {
            function_error()
        } else {
            InvokeOutcome::Ok(Value::Null)
        }
    });
    let poller = env.poller(env.mapping().await, fake.clone(), None);
    wait_until("the batch to succeed", || {
        fake.events.lock().unwrap().len() == 3
    })
    .await;
    env.put("c").await;
    wait_until("the next record", || {
        fake.delivered().last().map(String::as_str) == Some("c")
    })
    .await;
    let stats = poller.stop().await.unwrap();
    let ab = strings(&["a", "b"]);
    assert_eq!(
        fake.batches(),
        vec![ab.clone(), ab.clone(), ab, strings(&["c"])]
    );
    assert_eq!(stats.failed_invocations, 2);
    assert_eq!(stats.records_processed, 3);
}

#[tokio::test]
async fn batch_item_failures_redeliver_from_the_failed_item_only() {
    let mut settings = MappingSettings::new(EventSourcePosition::TrimHorizon, 10);
    settings.report_failures = true;
    let env = Env::start(settings).await;
    for id in ["a", "b", "c", "d"] {
        env.put(id).await;
    }
    // First call: c and d fail (reported out of order); the checkpoint goes before c.
    let fake = Fake::new(|n, _, event| {
        if n == 0 {
            InvokeOutcome::Ok(json!({"batchItemFailures": [
                {"itemIdentifier": sequence_of(event, "d")},
                {"itemIdentifier": sequence_of(event, "c")}
            ]}))
        } else {
            InvokeOutcome::Ok(json!({"batchItemFailures": []}))
        }
    });
    let poller = env.poller(env.mapping().await, fake.clone(), None);
    wait_until("the redelivery", || fake.events.lock().unwrap().len() == 2).await;
    env.put("e").await;
    wait_until("the next record", || {
        fake.delivered().last().map(String::as_str) == Some("e")
    })
    .await;
    let stats = poller.stop().await.unwrap();
    assert_eq!(
        fake.batches(),
        vec![
            strings(&["a", "b", "c", "d"]),
            strings(&["c", "d"]),
            strings(&["e"])
        ]
    );
    assert_eq!(stats.records_processed, 5);
}

#[tokio::test]
async fn exhausted_retries_skip_the_batch_and_later_records_still_flow() {
    let mut settings = MappingSettings::new(EventSourcePosition::TrimHorizon, 2);
    settings.max_retries = 1;
    let env = Env::start(settings).await;
    env.put("poison").await;
    env.put("b").await;
    let fake = Fake::new(|_, keys, _| {
        if keys.iter().any(|k| k == "poison") {
            function_error()
        } else {
            InvokeOutcome::Ok(Value::Null)
        }
    });
    let poller = env.poller(env.mapping().await, fake.clone(), None);
    wait_until("the retry", || fake.events.lock().unwrap().len() == 2).await;
    env.put("c").await;
    wait_until("the next record", || {
        fake.delivered().last().map(String::as_str) == Some("c")
    })
    .await;
    let stats = poller.stop().await.unwrap();
    let batch = strings(&["poison", "b"]);
    assert_eq!(fake.batches(), vec![batch.clone(), batch, strings(&["c"])]);
    assert_eq!(stats.records_skipped, 2);
    assert_eq!(stats.records_processed, 1);
}

#[tokio::test]
async fn bisect_on_error_isolates_the_failing_record() {
    let mut settings = MappingSettings::new(EventSourcePosition::TrimHorizon, 4);
    settings.max_retries = 0;
    settings.bisect = true;
    let env = Env::start(settings).await;
    for id in ["poison", "b", "c", "d"] {
        env.put(id).await;
    }
    let fake = Fake::new(|_, keys, _| {
        if keys.iter().any(|k| k == "poison") {
            function_error()
        } else {
            InvokeOutcome::Ok(Value::Null)
        }
    });
    let poller = env.poller(env.mapping().await, fake.clone(), None);
    wait_until("the halves", || fake.events.lock().unwrap().len() == 5).await;
    let stats = poller.stop().await.unwrap();
    assert_eq!(
        fake.batches(),
        vec![
            strings(&["poison", "b", "c", "d"]),
            strings(&["poison", "b"]),
            strings(&["poison"]),
            strings(&["b"]),
            strings(&["c", "d"]),
        ]
    );
    assert_eq!(stats.records_skipped, 1);
    assert_eq!(stats.records_processed, 3);
}

#[tokio::test]
async fn a_restarted_poller_resumes_from_the_checkpoint_file() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::Latest, 10)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("streams/checkpoints.json");
    let mapping = env.mapping().await;

    let first = Fake::ok();
    let mut poller = env.poller(mapping.clone(), first.clone(), Some(file.clone()));
    poller.ready().await;
    env.put("a").await;
    env.put("b").await;
    wait_until("the first poller", || first.delivered().len() == 2).await;
    poller.stop().await.unwrap();

    // Written while nothing polls: LATEST alone would miss it, the checkpoint does not.
    env.put("c").await;
    let second = Fake::ok();
    let poller = env.poller(mapping.clone(), second.clone(), Some(file.clone()));
    wait_until("the second poller", || !second.delivered().is_empty()).await;
    env.put("d").await;
    wait_until("the next record", || second.delivered().len() == 2).await;
    poller.stop().await.unwrap();
    assert_eq!(first.delivered(), strings(&["a", "b"]));
    assert_eq!(
        second.delivered(),
        strings(&["c", "d"]),
        "nothing re-delivered, nothing missed"
    );

    // A checkpoint of a stream that no longer exists (the table was recreated) is ignored.
    let mut other = mapping;
    other.starting_position = StartingPosition::TrimHorizon;
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(&env.stream_arn, &format!("{}-old", env.stream_arn)),
    )
    .unwrap();
    let third = Fake::ok();
    let poller = env.poller(other, third.clone(), Some(file));
    wait_until("the third poller", || third.delivered().len() == 4).await;
    poller.stop().await.unwrap();
    assert_eq!(third.delivered(), strings(&["a", "b", "c", "d"]));
}

#[tokio::test]
async fn a_latest_poller_restarted_before_any_delivery_misses_nothing() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::Latest, 10)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpoints.json");
    let mut mapping = env.mapping().await;
    // Without the mapping's time LATEST starts where the first poller first read.
    mapping.since = None;
    env.put("before-first-start").await;

    let first = Fake::ok();
    let mut poller = env.poller(mapping.clone(), first.clone(), Some(file.clone()));
    poller.ready().await;
    poller.stop().await.unwrap();
    // Written while nothing polls, with no sequence number checkpointed yet: a plain LATEST
    // restart would skip it.
    env.put("while-stopped").await;

    let second = Fake::ok();
    let poller = env.poller(mapping, second.clone(), Some(file.clone()));
    wait_until("the second poller", || !second.delivered().is_empty()).await;
    env.put("after-restart").await;
    wait_until("the next record", || second.delivered().len() == 2).await;
    poller.stop().await.unwrap();
    assert!(first.delivered().is_empty());
    assert_eq!(
        second.delivered(),
        strings(&["while-stopped", "after-restart"])
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(
        saved.get("latest_since").is_none(),
        "a sequence number replaced the marker: {saved}"
    );
}

/// A poller that would next poll in [`PAUSE`]: stopping it must interrupt that wait.
fn pausing(config: &mut PollerConfig) {
    config.poll_interval = PAUSE;
    config.max_idle_poll_interval = PAUSE;
}

/// Far beyond [`DEADLINE`], so a stop that waits for the next poll cannot pass for a prompt
/// one however loaded the machine, and a prompt one has all of `DEADLINE`.
const PAUSE: Duration = Duration::from_secs(600);

#[tokio::test]
async fn shutdown_is_prompt_and_the_invocation_in_flight_finishes() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::TrimHorizon, 10)).await;
    // Idle poller: it has read the (empty) shard and waits for its next poll.
    let mut idle = env.poller_with(env.mapping().await, Fake::ok(), pausing);
    idle.ready().await;
    let stop_at = Instant::now();
    tokio::time::timeout(DEADLINE, idle.stop())
        .await
        .expect("an idle stop waits for the next poll")
        .unwrap();
    let idle_stop = stop_at.elapsed();

    // Busy poller: the function takes 700 ms.
    let fake = Arc::new(Fake {
        events: Mutex::new(Vec::new()),
        finished: AtomicUsize::new(0),
        delay: Duration::from_millis(700),
        respond: Box::new(|_, _, _| InvokeOutcome::Ok(Value::Null)),
    });
    env.put("a").await;
    let busy = env.poller_with(env.mapping().await, fake.clone(), pausing);
    wait_until("the invocation", || !fake.events.lock().unwrap().is_empty()).await;
    let stop_at = Instant::now();
    tokio::time::timeout(DEADLINE, busy.stop())
        .await
        .expect("a stop after the invocation waits for the next poll")
        .unwrap();
    let busy_stop = stop_at.elapsed();
    eprintln!("stop: idle {idle_stop:?}, with a 700 ms invocation in flight {busy_stop:?}");
    assert_eq!(
        fake.finished.load(Ordering::SeqCst),
        1,
        "the invocation ran to its end"
    );
    assert_eq!(
        fake.events.lock().unwrap().len(),
        1,
        "nothing started after the signal"
    );
}

/// Compiles the runtime tests' std-only function once per test binary.
fn runtime_fixture() -> &'static Path {
    common::fixture_binary()
}

/// The local runtime, keeping what the function answered.
struct Recording {
    lambda: LocalLambda,
    responses: Mutex<Vec<InvokeOutcome>>,
}

impl Invoke for Recording {
    async fn invoke(&self, function: &str, payload: Value) -> Result<InvokeOutcome, LocalError> {
        let outcome = Invoke::invoke(&self.lambda, function, payload).await?;
        self.responses.lock().unwrap().push(outcome.clone());
        Ok(outcome)
    }
}

#[tokio::test]
async fn the_local_lambda_runtime_receives_the_event() {
    let env = Env::start(MappingSettings::new(EventSourcePosition::Latest, 10)).await;
    let mut spec = FunctionConfig::new(FUNCTION, Code::Binary(runtime_fixture().to_path_buf()));
    spec.timeout = Duration::from_secs(5);
    let mut config = LocalConfig::new(vec![spec]);
    config.logs = FunctionLogs::Stderr;
    let recording = Arc::new(Recording {
        lambda: LocalLambda::start(config).await.unwrap(),
        responses: Mutex::new(Vec::new()),
    });
    let mut poller = env.poller(env.mapping().await, recording.clone(), None);
    poller.ready().await;
    env.put("inv-42").await;
    wait_until("the function's answer", || {
        !recording.responses.lock().unwrap().is_empty()
    })
    .await;
    let stats = poller.stop().await.unwrap();
    assert_eq!(stats.records_processed, 1);
    // The fixture echoes the event it was given.
    let responses = recording.responses.lock().unwrap().clone();
    let InvokeOutcome::Ok(answer) = &responses[0] else {
        panic!("{:?}", responses[0]);
    };
    let event: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_value(answer["event"].clone()).expect("a DynamoDB event");
    assert_eq!(event.records.len(), 1);
    assert_eq!(keys(&answer["event"]), ["inv-42"]);
    recording.lambda.shutdown().await;
}
