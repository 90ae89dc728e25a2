//! The local DynamoDB stream poller: what Lambda's event source mapping does on AWS.
//!
//! The deployed stack maps the invoices table's stream to generate-pdf's `live` alias. moto
//! stores that mapping but runs no code (and, unpatched, even empties the stream on every write;
//! see `moto_fixes.py`), so locally xtask reads the stream itself and invokes the function
//! through [`Invoke`] (implemented by [`LocalLambda`]), with AWS's semantics:
//!
//! - [`read_mapping`] reads the mapping's settings back from the Lambda control plane, so the
//!   local trigger behaves as configured (batch size, starting position, batching window,
//!   bisect on error, retry limit, `ReportBatchItemFailures`).
//! - [`Poller`] walks the stream's shards (parents before children, new shards as they appear),
//!   reads records with `GetRecords`, delivers them in batches of at most `batch_size` as the
//!   Lambda DynamoDB event, retries failed batches (bisecting if asked), honours
//!   `batchItemFailures`, skips a batch whose retries are exhausted, and checkpoints the last
//!   processed sequence number per shard, in memory and in a JSON file so a restarted
//!   `cargo xtask up` neither re-delivers nor misses records (a shard read at `LATEST` with
//!   nothing processed yet is checkpointed by the time it was first read, see [`Checkpoints`]).
//! - Shutdown is a `tokio::sync::watch` signal, checked between calls: an invocation in flight
//!   finishes, nothing after it starts.
//!
//! Every delivered batch is one `tracing` line: function, records, sequence range, outcome,
//! duration.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::error::SdkError;
use aws_sdk_dynamodbstreams::operation::describe_stream::DescribeStreamError;
use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError;
use aws_sdk_dynamodbstreams::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use aws_sdk_lambda::operation::list_event_source_mappings::ListEventSourceMappingsError;
use aws_sdk_lambda::types::{EventSourceMappingConfiguration, FunctionResponseType};
use aws_smithy_types::error::display::DisplayErrorContext;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::retry::{Backoff, retry};
use crate::local::runtime::{InvokeOutcome, LocalError, LocalLambda};

/// How often an idle shard is polled at first; doubled while it stays empty, up to
/// [`MAX_IDLE_POLL_INTERVAL`]. DynamoDB Streams allows about four reads a second per shard.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The bound of the idle backoff: the worst-case delay between a write and its delivery.
pub const MAX_IDLE_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the shard list is re-read to find new shards (DynamoDB rolls shards over every
/// few hours, and splits them under load).
pub const SHARD_REFRESH: Duration = Duration::from_secs(10);
/// GetRecords returns at most 1000 records; Lambda's maximum batch size for streams is 10000,
/// which a batch then collects over several reads.
const GET_RECORDS_LIMIT: usize = 1000;
/// What a mapping without these settings gets on AWS.
const DEFAULT_BATCH_SIZE: usize = 100;
const INFINITE_RETRIES: i32 = -1;

/// Where a shard is read from when there is no checkpoint for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartingPosition {
    /// Only records written after the poller started.
    Latest,
    /// Everything the stream still holds (24 hours on AWS).
    TrimHorizon,
}

/// An event source mapping from a DynamoDB stream, as Lambda reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMapping {
    pub uuid: String,
    /// The stream's ARN (`.../table/NAME/stream/LABEL`).
    pub event_source_arn: String,
    /// The function, version or alias ARN the mapping invokes.
    pub function_arn: String,
    pub batch_size: usize,
    pub starting_position: StartingPosition,
    pub maximum_batching_window: Duration,
    pub bisect_on_error: bool,
    /// Retries of a failed batch before it is skipped; `-1` retries until the record expires.
    pub maximum_retry_attempts: i32,
    pub report_batch_item_failures: bool,
    /// Lambda's `State` is `Enabled` (or on its way there).
    pub enabled: bool,
    /// When the mapping was last created or changed (epoch seconds, Lambda's `LastModified`):
    /// where `LATEST` starts on AWS, whose pollers run from then on. A local poller starts
    /// later (after `up`'s apply), so without a checkpoint it reads from here rather than from
    /// its own start, or the records written in between (the seed's) would never be delivered.
    pub since: Option<f64>,
}

/// Failures of the poller itself. A failing function is not one: it is retried and logged.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("ListEventSourceMappings: {}", DisplayErrorContext(.0))]
    ListMappings(#[source] Box<aws_sdk_lambda::error::SdkError<ListEventSourceMappingsError>>),
    #[error("event source mapping {uuid}: starting position {position} is not supported locally")]
    StartingPosition { uuid: String, position: String },
    #[error("stream {arn} does not exist (any more)")]
    StreamNotFound { arn: String },
    #[error("DescribeStream {arn}: {}", DisplayErrorContext(.source))]
    DescribeStream {
        arn: String,
        #[source]
        source: Box<SdkError<DescribeStreamError>>,
    },
    #[error("GetShardIterator {shard}: {}", DisplayErrorContext(.source))]
    GetShardIterator {
        shard: String,
        #[source]
        source: Box<SdkError<GetShardIteratorError>>,
    },
    #[error("GetRecords {shard}: {}", DisplayErrorContext(.source))]
    GetRecords {
        shard: String,
        #[source]
        source: Box<SdkError<GetRecordsError>>,
    },
    #[error("checkpoint file {}: {source}", path.display())]
    CheckpointIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint file {} is not a checkpoint: {source}", path.display())]
    CheckpointFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the poller task failed: {0}")]
    Task(String),
}

// ---------------------------------------------------------------------------------------------
// Reading the mapping
// ---------------------------------------------------------------------------------------------

/// `(name, qualifier)` of a function name, `name:qualifier`, or a (qualified) function ARN.
fn split_function(function: &str) -> (&str, Option<&str>) {
    if function.starts_with("arn:") {
        let parts: Vec<&str> = function.split(':').collect();
        (
            parts.get(6).copied().unwrap_or(function),
            parts.get(7).copied(),
        )
    } else {
        match function.split_once(':') {
            Some((name, q)) => (name, Some(q)),
            None => (function, None),
        }
    }
}

fn is_dynamodb_stream(arn: &str) -> bool {
    arn.starts_with("arn:") && arn.split(':').nth(2) == Some("dynamodb") && arn.contains("/stream/")
}

/// How well a mapping's target matches the requested qualifier: `None` if it is another
/// function or another alias. An exact match beats a version or `$LATEST` target, because
/// moto (without the fix in `moto_fixes.py`) stores a mapping created on an alias with the
/// version the alias pointed at.
fn target_rank(requested: Option<&str>, target: Option<&str>) -> Option<u8> {
    let is_version = |q: &str| q == "$LATEST" || q.chars().all(|c| c.is_ascii_digit());
    match (requested, target) {
        (None, _) => Some(0),
        (Some(r), Some(t)) if r == t => Some(0),
        (Some(_), None) => Some(1),
        (Some(_), Some(t)) if is_version(t) => Some(1),
        _ => None,
    }
}

/// The clock in epoch seconds.
fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn mapping_from(m: &EventSourceMappingConfiguration) -> Result<StreamMapping, StreamError> {
    let uuid = m.uuid().unwrap_or_default().to_owned();
    let starting_position = match m.starting_position().map(|p| p.as_str()) {
        Some("LATEST") => StartingPosition::Latest,
        // Lambda requires a position for streams; moto defaults a missing one to this.
        Some("TRIM_HORIZON") | None => StartingPosition::TrimHorizon,
        Some(other) => {
            return Err(StreamError::StartingPosition {
                uuid,
                position: other.to_owned(),
            });
        }
    };
    Ok(StreamMapping {
        uuid,
        event_source_arn: m.event_source_arn().unwrap_or_default().to_owned(),
        function_arn: m.function_arn().unwrap_or_default().to_owned(),
        batch_size: m
            .batch_size()
            .filter(|&b| b > 0)
            .map_or(DEFAULT_BATCH_SIZE, |b| b as usize),
        starting_position,
        maximum_batching_window: Duration::from_secs(
            m.maximum_batching_window_in_seconds().unwrap_or(0).max(0) as u64,
        ),
        bisect_on_error: m.bisect_batch_on_function_error().unwrap_or(false),
        maximum_retry_attempts: m.maximum_retry_attempts().unwrap_or(INFINITE_RETRIES),
        // Never later than now: a clock ahead (an emulator stamping local time as UTC) would
        // otherwise pass over everything written until then.
        since: m.last_modified().map(|t| t.as_secs_f64().min(now_secs())),
        report_batch_item_failures: m
            .function_response_types()
            .contains(&FunctionResponseType::ReportBatchItemFailures),
        enabled: !matches!(m.state(), Some("Disabled" | "Disabling" | "Deleting")),
    })
}

/// The DynamoDB stream mapping that invokes `function` (a name, `name:alias`, or a function or
/// alias ARN), or `None`. All mappings are listed and filtered here rather than by Lambda's
/// `FunctionName` filter, which moto compares as a plain string.
pub async fn read_mapping(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> Result<Option<StreamMapping>, StreamError> {
    let (name, qualifier) = split_function(function);
    let mut best: Option<(u8, StreamMapping)> = None;
    let mut marker = None;
    loop {
        let page = lambda
            .list_event_source_mappings()
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| StreamError::ListMappings(Box::new(e)))?;
        for m in page.event_source_mappings() {
            let (Some(target), Some(source)) = (m.function_arn(), m.event_source_arn()) else {
                continue;
            };
            let (target_name, target_qualifier) = split_function(target);
            if target_name != name || !is_dynamodb_stream(source) {
                continue;
            }
            let Some(rank) = target_rank(qualifier, target_qualifier) else {
                continue;
            };
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, mapping_from(m)?));
            }
        }
        marker = page.next_marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    Ok(best.map(|(_, m)| m))
}

// ---------------------------------------------------------------------------------------------
// The Lambda event
// ---------------------------------------------------------------------------------------------

/// An attribute value in DynamoDB JSON (`{"S": "..."}`, `{"N": "1"}`, `{"B": base64}`, ...), as
/// Lambda puts it in the event.
pub fn attribute_json(value: &AttributeValue) -> Value {
    let b64 = |b: &aws_smithy_types::Blob| base64::engine::general_purpose::STANDARD.encode(b);
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(n) => json!({ "NULL": n }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => json!({ "BS": v.iter().map(b64).collect::<Vec<_>>() }),
        AttributeValue::L(v) => json!({ "L": v.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        // A type newer than this SDK: nothing sensible to deliver; Lambda would, but the
        // functions' deserializer could not read it either.
        _ => Value::Null,
    }
}

fn item_json(item: &std::collections::HashMap<String, AttributeValue>) -> Value {
    // Sorted keys: stable output for logs and tests (JSON objects are unordered anyway).
    let sorted: BTreeMap<_, _> = item.iter().collect();
    Value::Object(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// One stream record as Lambda delivers it to a function (`Records[n]` of the event).
/// `awsRegion` is the poller's: moto reports `us-east-1` whatever its region.
pub fn lambda_record(record: &Record, region: &str, stream_arn: &str) -> Value {
    let mut dynamodb = Map::new();
    if let Some(d) = record.dynamodb() {
        if let Some(t) = d.approximate_creation_date_time() {
            // Epoch seconds, a number, as Lambda sends it.
            let secs = if t.subsec_nanos() == 0 {
                json!(t.secs())
            } else {
                json!(t.as_secs_f64())
            };
            dynamodb.insert("ApproximateCreationDateTime".into(), secs);
        }
        if let Some(k) = d.keys() {
            dynamodb.insert("Keys".into(), item_json(k));
        }
        if let Some(i) = d.new_image() {
            dynamodb.insert("NewImage".into(), item_json(i));
        }
        if let Some(i) = d.old_image() {
            dynamodb.insert("OldImage".into(), item_json(i));
        }
        if let Some(s) = d.sequence_number() {
            dynamodb.insert("SequenceNumber".into(), json!(s));
        }
        if let Some(s) = d.size_bytes() {
            dynamodb.insert("SizeBytes".into(), json!(s));
        }
        if let Some(v) = d.stream_view_type() {
            dynamodb.insert("StreamViewType".into(), json!(v.as_str()));
        }
    }
    let mut out = json!({
        "eventID": record.event_id().unwrap_or_default(),
        "eventName": record.event_name().map(|e| e.as_str()).unwrap_or_default(),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    });
    // Present on AWS only for deletions by TTL.
    if let Some(u) = record.user_identity() {
        out["userIdentity"] = json!({
            "type": u.r#type().unwrap_or_default(),
            "principalId": u.principal_id().unwrap_or_default(),
        });
    }
    out
}

/// The event a batch is delivered as: `{"Records": [...]}`.
pub fn lambda_event(records: &[Record], region: &str, stream_arn: &str) -> Value {
    json!({
        "Records": records
            .iter()
            .map(|r| lambda_record(r, region, stream_arn))
            .collect::<Vec<_>>()
    })
}

fn sequence_number(record: &Record) -> &str {
    record
        .dynamodb()
        .and_then(|d| d.sequence_number())
        .unwrap_or_default()
}

/// Orders DynamoDB sequence numbers: decimal strings of up to 40 digits, longer than `u128`.
pub fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// What a batch's invocation means for its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResult {
    /// Every record processed.
    Success,
    /// Records before this index processed; it and the ones after are to be re-delivered.
    FailedFrom(usize),
    /// Nothing processed, with why (for the log).
    Failed(String),
}

/// Interprets an invocation as Lambda does. With `report_batch_item_failures`, a response with
/// `batchItemFailures` checkpoints before the lowest failed record; an empty, missing or
/// unknown `itemIdentifier` fails the whole batch; an empty or `null` list, or a response
/// without the key, is success.
pub fn batch_result(
    outcome: &Result<InvokeOutcome, LocalError>,
    batch: &[Record],
    report_batch_item_failures: bool,
) -> BatchResult {
    let response = match outcome {
        Ok(InvokeOutcome::Ok(v)) => v,
        Ok(InvokeOutcome::FunctionError {
            error_type,
            message,
        }) => return BatchResult::Failed(format!("function error {error_type}: {message}")),
        Ok(InvokeOutcome::Timeout { after, .. }) => {
            return BatchResult::Failed(format!("timed out after {after:?}"));
        }
        Ok(InvokeOutcome::Crashed { status, .. }) => {
            return BatchResult::Failed(format!("crashed: {status}"));
        }
        Err(e) => return BatchResult::Failed(format!("not invoked: {e}")),
    };
    if !report_batch_item_failures {
        return BatchResult::Success;
    }
    let failures = match response.get("batchItemFailures") {
        None | Some(Value::Null) => return BatchResult::Success,
        Some(Value::Array(a)) if a.is_empty() => return BatchResult::Success,
        Some(Value::Array(a)) => a,
        Some(_) => return BatchResult::Failed("batchItemFailures is not a list".into()),
    };
    let mut lowest: Option<usize> = None;
    for f in failures {
        let id = f
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(index) = (!id.is_empty())
            .then(|| batch.iter().position(|r| sequence_number(r) == id))
            .flatten()
        else {
            return BatchResult::Failed(format!(
                "invalid itemIdentifier {id:?} in batchItemFailures"
            ));
        };
        lowest = Some(lowest.map_or(index, |l| l.min(index)));
    }
    BatchResult::FailedFrom(lowest.expect("a non-empty list"))
}

// ---------------------------------------------------------------------------------------------
// Invoking
// ---------------------------------------------------------------------------------------------

/// What the poller invokes: the local Lambda runtime, or a test's fake.
pub trait Invoke: Send + Sync {
    /// Invokes `function` synchronously with `payload` as the event.
    fn invoke(
        &self,
        function: &str,
        payload: Value,
    ) -> impl Future<Output = Result<InvokeOutcome, LocalError>> + Send;
}

impl Invoke for LocalLambda {
    async fn invoke(&self, function: &str, payload: Value) -> Result<InvokeOutcome, LocalError> {
        LocalLambda::invoke(self, function, payload)
            .await
            .map(|i| i.outcome)
    }
}

impl<T: Invoke + ?Sized> Invoke for Arc<T> {
    fn invoke(
        &self,
        function: &str,
        payload: Value,
    ) -> impl Future<Output = Result<InvokeOutcome, LocalError>> + Send {
        (**self).invoke(function, payload)
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/// Where the poller is in each shard of one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoints {
    /// Shard id -> the last processed sequence number.
    pub shards: BTreeMap<String, String>,
    /// Shard id -> when (epoch seconds) it was first read at `LATEST`, for shards of which
    /// nothing has been processed yet. `LATEST` cannot be resumed (the next poller's `LATEST`
    /// would skip what was written meanwhile), so a restarted poller reads such a shard from
    /// the trim horizon and passes over records created before this time. The times compare
    /// the poller's clock with the record's `ApproximateCreationDateTime`: exact against the
    /// local emulator on the same machine, which is what this is for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latest_since: BTreeMap<String, f64>,
}

/// The checkpoint file: one stream's checkpoints.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointFile {
    stream_arn: String,
    #[serde(flatten)]
    checkpoints: Checkpoints,
}

/// Reads the checkpoints for `stream_arn` from `path`; a missing file, or one written for
/// another stream (the table was recreated, and its old stream is gone), gives none.
fn load_checkpoints(path: &Path, stream_arn: &str) -> Result<Checkpoints, StreamError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoints::default()),
        Err(source) => {
            return Err(StreamError::CheckpointIo {
                path: path.to_owned(),
                source,
            });
        }
    };
    let file: CheckpointFile =
        serde_json::from_str(&text).map_err(|source| StreamError::CheckpointFormat {
            path: path.to_owned(),
            source,
        })?;
    if file.stream_arn != stream_arn {
        tracing::info!(
            file = %path.display(),
            old = file.stream_arn,
            new = stream_arn,
            "checkpoints are for another stream; starting afresh"
        );
        return Ok(Checkpoints::default());
    }
    Ok(file.checkpoints)
}

/// Writes the checkpoints atomically (a temporary file renamed over the old one), so a crash
/// mid-write leaves the previous checkpoint rather than a torn file.
fn save_checkpoints(
    path: &Path,
    stream_arn: &str,
    checkpoints: &Checkpoints,
) -> Result<(), StreamError> {
    let io = |source| StreamError::CheckpointIo {
        path: path.to_owned(),
        source,
    };
    let file = CheckpointFile {
        stream_arn: stream_arn.to_owned(),
        checkpoints: checkpoints.clone(),
    };
    let text = serde_json::to_string_pretty(&file).expect("checkpoints always serialise");
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

// ---------------------------------------------------------------------------------------------
// The poller
// ---------------------------------------------------------------------------------------------

/// How the poller runs, apart from the mapping's own settings.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// The function's name as the invoker knows it (`LocalLambda` serves functions by name).
    pub function: String,
    /// `awsRegion` in the records.
    pub region: String,
    /// Where checkpoints persist across restarts; `None` keeps them in memory only.
    pub checkpoint_file: Option<PathBuf>,
    pub poll_interval: Duration,
    pub max_idle_poll_interval: Duration,
    pub shard_refresh: Duration,
    /// Pauses between retries of a failed batch (its `deadline` is unused: the mapping's
    /// `maximum_retry_attempts` bounds them).
    pub retry_backoff: Backoff,
    /// Transient errors of the Streams API itself are retried up to this long.
    pub api_retry: Backoff,
}

impl PollerConfig {
    pub fn new(function: impl Into<String>, region: impl Into<String>) -> PollerConfig {
        PollerConfig {
            function: function.into(),
            region: region.into(),
            checkpoint_file: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_idle_poll_interval: MAX_IDLE_POLL_INTERVAL,
            shard_refresh: SHARD_REFRESH,
            retry_backoff: Backoff {
                first: Duration::from_millis(500),
                max: Duration::from_secs(10),
                deadline: Duration::MAX,
            },
            api_retry: Backoff::wait(Duration::from_secs(30)),
        }
    }
}

/// What a poller did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollerStats {
    /// Invocations (successful or not).
    pub invocations: usize,
    /// Records checkpointed as processed.
    pub records_processed: usize,
    /// Records skipped after their batch's retries ran out.
    pub records_skipped: usize,
    pub failed_invocations: usize,
}

struct Shard {
    parent: Option<String>,
    /// Present when the poller started: it starts at the mapping's position; shards found later
    /// (children of a closed shard) start at their beginning.
    initial: bool,
    /// Has an `EndingSequenceNumber`: no records will be added.
    closed: bool,
    iterator: Option<String>,
    /// The last sequence number read into `buffer` (or processed): where a lost iterator
    /// resumes without reading buffered records twice.
    read_up_to: Option<String>,
    /// `GetRecords` returned no next iterator: once `buffer` is delivered, the shard is done.
    exhausted: bool,
    done: bool,
    buffer: Vec<Record>,
    buffered_since: Option<Instant>,
    /// Records created before this (epoch seconds) are passed over: the shard is re-read from
    /// the trim horizon after a restart that found it only started at `LATEST`.
    skip_before: Option<f64>,
}

/// Reads one stream mapping's stream and invokes its function. See the module docs.
pub struct Poller<I> {
    streams: aws_sdk_dynamodbstreams::Client,
    mapping: StreamMapping,
    config: PollerConfig,
    invoker: I,
    checkpoints: Checkpoints,
    shards: BTreeMap<String, Shard>,
    stats: PollerStats,
    ready: watch::Sender<bool>,
}

/// Why a delivery loop stopped early.
enum Interrupted {
    Shutdown,
}

impl<I: Invoke> Poller<I> {
    /// A poller for `mapping`, resuming from `config.checkpoint_file` if it holds checkpoints
    /// for this stream.
    pub fn new(
        streams: aws_sdk_dynamodbstreams::Client,
        mapping: StreamMapping,
        invoker: I,
        config: PollerConfig,
    ) -> Result<Poller<I>, StreamError> {
        let checkpoints = match &config.checkpoint_file {
            Some(path) => load_checkpoints(path, &mapping.event_source_arn)?,
            None => Checkpoints::default(),
        };
        Ok(Poller {
            streams,
            mapping,
            config,
            invoker,
            checkpoints,
            shards: BTreeMap::new(),
            stats: PollerStats::default(),
            ready: watch::channel(false).0,
        })
    }

    /// The last processed sequence number per shard.
    pub fn checkpoints(&self) -> &BTreeMap<String, String> {
        &self.checkpoints.shards
    }

    /// Becomes `true` once every shard to read from has an iterator: records written after
    /// that are delivered even with `LATEST`.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Polls until `shutdown` turns `true` (or its sender is dropped). Returns an error only for
    /// what retrying cannot fix: the stream is gone, a checkpoint cannot be written, the
    /// Streams API keeps failing.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<PollerStats, StreamError> {
        if !self.mapping.enabled {
            tracing::info!(
                mapping = self.mapping.uuid,
                "event source mapping is disabled; not polling"
            );
            let _ = shutdown.wait_for(|stop| *stop).await;
            return Ok(self.stats);
        }
        tracing::info!(
            function = self.config.function,
            stream = self.mapping.event_source_arn,
            batch_size = self.mapping.batch_size,
            position = ?self.mapping.starting_position,
            "stream poller started"
        );
        let mut last_refresh: Option<Instant> = None;
        let mut idle = self.config.poll_interval;
        loop {
            if stopping(&shutdown) {
                break;
            }
            let refresh_due = last_refresh.is_none_or(|t| t.elapsed() >= self.config.shard_refresh)
                || self.shards.values().all(|s| s.done);
            if refresh_due {
                self.refresh_shards(last_refresh.is_none()).await?;
                last_refresh = Some(Instant::now());
            }
            let mut read_any = false;
            let active: Vec<String> = self.active_shards();
            for id in &active {
                if stopping(&shutdown) {
                    break;
                }
                self.ensure_iterator(id).await?;
            }
            let reading = |s: &Shard| s.iterator.is_some() || s.exhausted || s.done;
            if !*self.ready.borrow() && active.iter().all(|id| reading(&self.shards[id])) {
                self.ready.send_replace(true);
            }
            for id in &active {
                if stopping(&shutdown) {
                    break;
                }
                match self.poll_shard(id, &mut shutdown).await? {
                    Some(n) => read_any |= n > 0,
                    None => break,
                }
            }
            idle = if read_any {
                self.config.poll_interval
            } else {
                (idle * 2).min(self.config.max_idle_poll_interval)
            };
            // A batching window that is open ends the wait early, so it is honoured closely.
            let window_left = self
                .shards
                .values()
                .filter_map(|s| s.buffered_since)
                .map(|t| {
                    self.mapping
                        .maximum_batching_window
                        .saturating_sub(t.elapsed())
                })
                .min();
            let wait = window_left.map_or(idle, |w| w.min(idle));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        tracing::info!(
            function = self.config.function,
            invocations = self.stats.invocations,
            processed = self.stats.records_processed,
            skipped = self.stats.records_skipped,
            "stream poller stopped"
        );
        Ok(self.stats)
    }

    /// Shards that may be read now: not done, and their parent done or unknown (trimmed away),
    /// so records of one key are delivered in order across a shard split.
    fn active_shards(&self) -> Vec<String> {
        self.shards
            .iter()
            .filter(|(_, s)| !s.done)
            .filter(|(_, s)| {
                s.parent
                    .as_ref()
                    .and_then(|p| self.shards.get(p))
                    .is_none_or(|p| p.done)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Reads the shard list (all pages) and adds shards not seen before.
    async fn refresh_shards(&mut self, initial: bool) -> Result<(), StreamError> {
        let arn = self.mapping.event_source_arn.clone();
        let mut start: Option<String> = None;
        let mut listed = std::collections::BTreeSet::new();
        loop {
            let out = retry(
                "DescribeStream",
                self.config.api_retry,
                || {
                    self.streams
                        .describe_stream()
                        .stream_arn(&arn)
                        .set_exclusive_start_shard_id(start.clone())
                        .send()
                },
                |e| transient(e, |e: &DescribeStreamError| e.is_internal_server_error()),
            )
            .await
            .map_err(|e| match &e {
                SdkError::ServiceError(s) if s.err().is_resource_not_found_exception() => {
                    StreamError::StreamNotFound { arn: arn.clone() }
                }
                _ => StreamError::DescribeStream {
                    arn: arn.clone(),
                    source: Box::new(e),
                },
            })?;
            let Some(desc) = out.stream_description() else {
                break;
            };
            for s in desc.shards() {
                let Some(id) = s.shard_id() else { continue };
                listed.insert(id.to_owned());
                if self.shards.contains_key(id) {
                    // A shard closes by gaining an ending sequence number.
                    let closed = s
                        .sequence_number_range()
                        .is_some_and(|r| r.ending_sequence_number().is_some());
                    if let Some(known) = self.shards.get_mut(id) {
                        known.closed |= closed;
                    }
                    continue;
                }
                let closed = s
                    .sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_some());
                // Where LATEST starts in a shard of which nothing was processed: when this
                // poller first read it there, or else when the mapping was made.
                let latest = self.mapping.starting_position == StartingPosition::Latest;
                let checkpointed = self.checkpoints.shards.contains_key(id);
                let since = if checkpointed {
                    None
                } else {
                    let first_read = self.checkpoints.latest_since.get(id).copied();
                    first_read.or(self.mapping.since.filter(|_| latest && initial))
                };
                // With LATEST, history is not read: closed shards present at the start hold
                // only records older than the poller (unless a checkpoint or the mapping's
                // time says where it starts).
                let skip = initial && closed && latest && !checkpointed && since.is_none();
                tracing::debug!(
                    shard = id,
                    parent = s.parent_shard_id(),
                    closed,
                    skip,
                    "shard"
                );
                self.shards.insert(
                    id.to_owned(),
                    Shard {
                        parent: s.parent_shard_id().map(str::to_owned),
                        initial,
                        closed,
                        iterator: None,
                        read_up_to: self.checkpoints.shards.get(id).cloned(),
                        exhausted: false,
                        done: skip,
                        buffer: Vec::new(),
                        buffered_since: None,
                        // A sequence number, if any, is the more precise position.
                        skip_before: since,
                    },
                );
            }
            start = desc.last_evaluated_shard_id().map(str::to_owned);
            if start.is_none() {
                break;
            }
        }
        // Checkpoints of shards trimmed from the stream can never be used again: keep the file
        // from growing with every shard rollover.
        self.checkpoints.shards.retain(|id, _| listed.contains(id));
        self.checkpoints
            .latest_since
            .retain(|id, _| listed.contains(id));
        Ok(())
    }

    async fn ensure_iterator(&mut self, id: &str) -> Result<(), StreamError> {
        let shard = &self.shards[id];
        // An exhausted shard has no next iterator by design: it is done once its buffer is.
        if shard.iterator.is_some() || shard.exhausted || shard.done {
            return Ok(());
        }
        let (kind, after) = match (&shard.read_up_to, shard.initial) {
            (Some(seq), _) => (ShardIteratorType::AfterSequenceNumber, Some(seq.clone())),
            (None, true)
                if self.mapping.starting_position == StartingPosition::Latest
                    && shard.skip_before.is_none() =>
            {
                (ShardIteratorType::Latest, None)
            }
            _ => (ShardIteratorType::TrimHorizon, None),
        };
        // Taken before the call: every record after the LATEST position is created after it.
        // In whole milliseconds, the precision of the records' creation times (moto's too), so
        // a record of the same millisecond is not passed over.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as f64
            / 1000.0;
        let iterator = match self.get_iterator(id, kind.clone(), after.clone()).await {
            Ok(it) => it,
            // The checkpointed record has aged out of the stream: everything after it that is
            // left starts at the trim horizon, as Lambda resumes.
            Err(StreamError::GetShardIterator { source, .. })
                if matches!(&*source, SdkError::ServiceError(s)
                    if s.err().is_trimmed_data_access_exception()) =>
            {
                tracing::warn!(
                    shard = id,
                    after,
                    "checkpoint is past the stream's retention; resuming at TRIM_HORIZON"
                );
                self.get_iterator(id, ShardIteratorType::TrimHorizon, None)
                    .await?
            }
            Err(StreamError::GetShardIterator { source, .. })
                if matches!(&*source, SdkError::ServiceError(s)
                    if s.err().is_resource_not_found_exception()) =>
            {
                // The shard is gone (trimmed): nothing left to read from it.
                tracing::info!(shard = id, "shard no longer exists");
                let s = self.shards.get_mut(id).expect("known shard");
                s.done = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.shards.get_mut(id).expect("known shard").iterator = Some(iterator);
        if kind == ShardIteratorType::Latest {
            self.checkpoints.latest_since.insert(id.to_owned(), now);
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&self) -> Result<(), StreamError> {
        match &self.config.checkpoint_file {
            Some(path) => save_checkpoints(path, &self.mapping.event_source_arn, &self.checkpoints),
            None => Ok(()),
        }
    }

    async fn get_iterator(
        &self,
        id: &str,
        kind: ShardIteratorType,
        after: Option<String>,
    ) -> Result<String, StreamError> {
        let out = retry(
            "GetShardIterator",
            self.config.api_retry,
            || {
                self.streams
                    .get_shard_iterator()
                    .stream_arn(&self.mapping.event_source_arn)
                    .shard_id(id)
                    .shard_iterator_type(kind.clone())
                    .set_sequence_number(after.clone())
                    .send()
            },
            |e| transient(e, |e: &GetShardIteratorError| e.is_internal_server_error()),
        )
        .await
        .map_err(|e| StreamError::GetShardIterator {
            shard: id.to_owned(),
            source: Box::new(e),
        })?;
        Ok(out.shard_iterator().unwrap_or_default().to_owned())
    }

    /// One `GetRecords` on shard `id`, then delivery of every batch that is due. Returns the
    /// number of records read, or `None` if shutdown interrupted a delivery.
    async fn poll_shard(
        &mut self,
        id: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<usize>, StreamError> {
        let batch_size = self.mapping.batch_size;
        let mut read = 0;
        let shard = &self.shards[id];
        if let Some(iterator) = shard.iterator.clone().filter(|_| !shard.exhausted) {
            let want = batch_size
                .saturating_sub(shard.buffer.len())
                .clamp(1, GET_RECORDS_LIMIT);
            let result = retry(
                "GetRecords",
                self.config.api_retry,
                || {
                    self.streams
                        .get_records()
                        .shard_iterator(&iterator)
                        .limit(want as i32)
                        .send()
                },
                |e| {
                    transient(e, |e: &GetRecordsError| {
                        e.is_internal_server_error() || e.is_limit_exceeded_exception()
                    })
                },
            )
            .await;
            let shard = self.shards.get_mut(id).expect("known shard");
            match result {
                Ok(out) => {
                    read = out.records().len();
                    if let Some(last) = out.records().last() {
                        shard.read_up_to = Some(sequence_number(last).to_owned());
                    }
                    let mut records = out.records().to_vec();
                    if let Some(since) = shard.skip_before {
                        records.retain(|r| created_at(r).is_none_or(|t| t >= since));
                        // Records are in order: from the first new one on, all are new.
                        if !records.is_empty() {
                            shard.skip_before = None;
                        }
                    }
                    if !records.is_empty() {
                        shard.buffered_since.get_or_insert_with(Instant::now);
                    }
                    shard.buffer.extend(records);
                    shard.iterator = out.next_shard_iterator().map(str::to_owned);
                    shard.exhausted = shard.iterator.is_none();
                }
                Err(SdkError::ServiceError(e)) if e.err().is_expired_iterator_exception() => {
                    // Iterators live 15 minutes; a new one resumes after what was read.
                    shard.iterator = None;
                }
                Err(SdkError::ServiceError(e)) if e.err().is_trimmed_data_access_exception() => {
                    tracing::warn!(
                        shard = id,
                        "records were trimmed before they were read; resuming at TRIM_HORIZON"
                    );
                    shard.iterator = None;
                    shard.read_up_to = None;
                    shard.initial = false;
                }
                Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                    return Err(StreamError::StreamNotFound {
                        arn: self.mapping.event_source_arn.clone(),
                    });
                }
                Err(e) => {
                    return Err(StreamError::GetRecords {
                        shard: id.to_owned(),
                        source: Box::new(e),
                    });
                }
            }
        }
        loop {
            let shard = &self.shards[id];
            let window_over = shard
                .buffered_since
                .is_some_and(|t| t.elapsed() >= self.mapping.maximum_batching_window);
            let due = shard.buffer.len() >= batch_size
                || (!shard.buffer.is_empty() && (window_over || shard.exhausted));
            if !due {
                break;
            }
            let shard = self.shards.get_mut(id).expect("known shard");
            let n = shard.buffer.len().min(batch_size);
            let batch: Vec<Record> = shard.buffer.drain(..n).collect();
            shard.buffered_since = (!shard.buffer.is_empty()).then(Instant::now);
            if let Err(Interrupted::Shutdown) = self.deliver(id, batch, shutdown).await? {
                return Ok(None);
            }
        }
        let shard = self.shards.get_mut(id).expect("known shard");
        if shard.exhausted && shard.buffer.is_empty() {
            tracing::info!(shard = id, "shard finished");
            shard.done = true;
        }
        Ok(Some(read))
    }

    /// Delivers one batch until every record in it is processed or skipped. Returns
    /// `Err(Interrupted)` if shutdown came between retries: the rest is not checkpointed and
    /// will be delivered again by the next poller.
    async fn deliver(
        &mut self,
        shard: &str,
        batch: Vec<Record>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Result<(), Interrupted>, StreamError> {
        // Pieces still to deliver, in order: the retries each has had, and whether it is a
        // redelivery (which waits out the backoff first).
        let mut pending: VecDeque<(Vec<Record>, u32, bool)> = VecDeque::from([(batch, 0, false)]);
        while let Some((records, retries, again)) = pending.pop_front() {
            if stopping(shutdown) {
                return Ok(Err(Interrupted::Shutdown));
            }
            if again {
                let delay = self.config.retry_backoff.delay(retries.saturating_sub(1));
                tracing::info!(
                    function = self.config.function,
                    retry = retries,
                    records = records.len(),
                    ?delay,
                    "redelivering stream batch"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(Err(Interrupted::Shutdown)),
                }
            }
            let event = lambda_event(
                &records,
                &self.config.region,
                &self.mapping.event_source_arn,
            );
            let started = Instant::now();
            let outcome = self.invoker.invoke(&self.config.function, event).await;
            let duration = started.elapsed();
            if let Err(LocalError::ShutDown) = outcome {
                // The local runtime is going away with the rest of `up`: not the function's
                // failure, and nothing to retry against. The batch stays unprocessed.
                tracing::info!(function = self.config.function, "local runtime shut down");
                return Ok(Err(Interrupted::Shutdown));
            }
            self.stats.invocations += 1;
            let result = batch_result(&outcome, &records, self.mapping.report_batch_item_failures);
            let first = sequence_number(&records[0]).to_owned();
            let last = sequence_number(records.last().expect("non-empty batch")).to_owned();
            let outcome_text = match &result {
                BatchResult::Success => "ok".to_owned(),
                BatchResult::FailedFrom(i) => {
                    format!("{} of {} items failed", records.len() - i, records.len())
                }
                BatchResult::Failed(why) => why.clone(),
            };
            tracing::info!(
                function = self.config.function,
                shard,
                records = records.len(),
                first_sequence = first,
                last_sequence = last,
                outcome = outcome_text,
                millis = duration.as_millis() as u64,
                "stream batch delivered"
            );
            let whole_batch_failed = matches!(result, BatchResult::Failed(_));
            let (done, failed): (usize, Option<Vec<Record>>) = match result {
                BatchResult::Success => (records.len(), None),
                BatchResult::FailedFrom(i) => (i, Some(records[i..].to_vec())),
                BatchResult::Failed(_) => (0, Some(records.clone())),
            };
            if done > 0 {
                self.checkpoint(shard, sequence_number(&records[done - 1]), done)?;
            }
            let Some(failed) = failed else { continue };
            self.stats.failed_invocations += 1;
            let max = self.mapping.maximum_retry_attempts;
            // Splitting a batch does not count as a retry (as on AWS); a partial failure
            // already narrowed it, so only whole-batch failures are split.
            if self.mapping.bisect_on_error && whole_batch_failed && failed.len() > 1 {
                let mut left = failed;
                let right = left.split_off(left.len() / 2);
                pending.push_front((right, retries, true));
                pending.push_front((left, retries, true));
                continue;
            }
            if max != INFINITE_RETRIES && retries >= max.max(0) as u32 {
                let seq = sequence_number(failed.last().expect("non-empty")).to_owned();
                tracing::warn!(
                    function = self.config.function,
                    shard,
                    records = failed.len(),
                    first_sequence = sequence_number(&failed[0]),
                    last_sequence = seq,
                    retries,
                    "retries exhausted; batch skipped (AWS would send it to the on-failure destination)"
                );
                self.stats.records_skipped += failed.len();
                self.checkpoint(shard, &seq, 0)?;
                continue;
            }
            pending.push_front((failed, retries + 1, true));
        }
        Ok(Ok(()))
    }

    /// Records `seq` as the last processed record of `shard`, and persists it.
    fn checkpoint(&mut self, shard: &str, seq: &str, processed: usize) -> Result<(), StreamError> {
        self.stats.records_processed += processed;
        let newer = self
            .checkpoints
            .shards
            .get(shard)
            .is_none_or(|old| compare_sequence_numbers(seq, old) == Ordering::Greater);
        if !newer {
            return Ok(());
        }
        self.checkpoints
            .shards
            .insert(shard.to_owned(), seq.to_owned());
        // A sequence number is a resumable position: the LATEST marker has served its purpose.
        self.checkpoints.latest_since.remove(shard);
        self.persist()
    }
}

/// A record's `ApproximateCreationDateTime` in epoch seconds.
fn created_at(record: &Record) -> Option<f64> {
    record
        .dynamodb()
        .and_then(|d| d.approximate_creation_date_time())
        .map(|t| t.as_secs_f64())
}

fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Whether an SDK error is worth retrying: transport trouble, or a service error the caller
/// names as transient (by its typed variant).
fn transient<E, R>(
    e: &SdkError<E, R>,
    service_transient: impl Fn(&E) -> bool,
) -> Option<&'static str> {
    match e {
        SdkError::DispatchFailure(_) => Some("dispatch failure"),
        SdkError::TimeoutError(_) => Some("timeout"),
        SdkError::ResponseError(_) => Some("unreadable response"),
        SdkError::ServiceError(s) if service_transient(s.err()) => Some("transient service error"),
        _ => None,
    }
}

/// A poller running on its own task.
pub struct PollerHandle {
    stop: watch::Sender<bool>,
    ready: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<PollerStats, StreamError>>,
}

impl PollerHandle {
    /// Waits until the poller reads every shard (see [`Poller::ready`]), or it ended.
    pub async fn ready(&mut self) {
        let _ = self.ready.wait_for(|r| *r).await;
    }

    /// Whether the task has ended (an error, or a stop).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Signals shutdown and waits for the poller to end.
    pub async fn stop(self) -> Result<PollerStats, StreamError> {
        self.stop.send_replace(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(StreamError::Task(e.to_string())),
        }
    }
}

impl<I: Invoke + 'static> Poller<I> {
    /// Runs the poller on a new task.
    pub fn spawn(self) -> PollerHandle {
        let (stop, shutdown) = watch::channel(false);
        let ready = self.ready();
        PollerHandle {
            stop,
            ready,
            task: tokio::spawn(self.run(shutdown)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};
    use std::collections::HashMap;

    fn attr(v: &Value) -> AttributeValue {
        let (k, v) = v.as_object().unwrap().iter().next().unwrap();
        match k.as_str() {
            "S" => AttributeValue::S(v.as_str().unwrap().into()),
            "N" => AttributeValue::N(v.as_str().unwrap().into()),
            "BOOL" => AttributeValue::Bool(v.as_bool().unwrap()),
            "NULL" => AttributeValue::Null(true),
            "SS" => AttributeValue::Ss(serde_json::from_value(v.clone()).unwrap()),
            "NS" => AttributeValue::Ns(serde_json::from_value(v.clone()).unwrap()),
            "B" => AttributeValue::B(aws_smithy_types::Blob::new(
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap(),
            )),
            "L" => AttributeValue::L(v.as_array().unwrap().iter().map(attr).collect()),
            "M" => AttributeValue::M(item(v)),
            other => panic!("{other}"),
        }
    }

    fn item(v: &Value) -> HashMap<String, AttributeValue> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), attr(v)))
            .collect()
    }

    fn record(seq: &str, image: &Value) -> Record {
        Record::builder()
            .event_id(format!("id-{seq}"))
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(aws_smithy_types::DateTime::from_secs(
                        1_700_000_000,
                    ))
                    .set_keys(Some(item(&json!({"pk": image["pk"].clone()}))))
                    .set_new_image(Some(item(image)))
                    .sequence_number(seq)
                    .size_bytes(42)
                    .stream_view_type(StreamViewType::NewImage)
                    .build(),
            )
            .build()
    }

    /// Every attribute type, nested.
    fn full_image() -> Value {
        json!({
            "pk": {"S": "inv-1"},
            "total": {"N": "12.50"},
            "paid": {"BOOL": false},
            "note": {"NULL": true},
            "tags": {"SS": ["a", "b"]},
            "sizes": {"NS": ["1", "2.5"]},
            "blob": {"B": "aGVsbG8="},
            "lines": {"L": [{"M": {"qty": {"N": "2"}, "sku": {"S": "x"}}}, {"S": "free"}]},
            "customer": {"M": {"name": {"S": "Ada"}, "vip": {"BOOL": true}}}
        })
    }

    #[test]
    fn event_has_lambdas_shape_and_deserializes_as_a_dynamodb_event() {
        let image = full_image();
        let arn =
            "arn:aws:dynamodb:eu-west-1:123456789012:table/invoices/stream/2026-01-01T00:00:00.000";
        let event = lambda_event(
            &[record("100", &image), record("101", &image)],
            "eu-west-1",
            arn,
        );
        let r = &event["Records"][0];
        assert_eq!(r["eventVersion"], "1.1");
        assert_eq!(r["eventSource"], "aws:dynamodb");
        assert_eq!(r["eventName"], "INSERT");
        assert_eq!(r["awsRegion"], "eu-west-1");
        assert_eq!(r["eventSourceARN"], arn);
        assert_eq!(
            r["dynamodb"]["NewImage"], image,
            "attribute values in DynamoDB JSON"
        );
        assert_eq!(r["dynamodb"]["Keys"], json!({"pk": {"S": "inv-1"}}));
        assert_eq!(r["dynamodb"]["ApproximateCreationDateTime"], 1_700_000_000);
        assert_eq!(r["dynamodb"]["StreamViewType"], "NEW_IMAGE");
        assert_eq!(r["dynamodb"]["SequenceNumber"], "100");

        let typed: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_value(event).expect("the functions' event type reads it");
        assert_eq!(typed.records.len(), 2);
        let change = &typed.records[1].change;
        assert_eq!(change.sequence_number.as_deref(), Some("101"));
        assert_eq!(change.size_bytes, 42);
        assert_eq!(
            change.approximate_creation_date_time.timestamp(),
            1_700_000_000
        );
        assert_eq!(typed.records[0].event_source_arn.as_deref(), Some(arn));
        let round_trip = serde_json::to_value(&change.new_image).unwrap();
        assert_eq!(round_trip["customer"]["M"]["name"]["S"], "Ada");
        assert_eq!(round_trip["lines"]["L"][0]["M"]["qty"]["N"], "2");
    }

    fn ok(v: Value) -> Result<InvokeOutcome, LocalError> {
        Ok(InvokeOutcome::Ok(v))
    }

    #[test]
    fn batch_item_failures_are_read_as_lambda_does() {
        let image = json!({"pk": {"S": "k"}});
        let batch: Vec<Record> = ["7", "8", "9"].iter().map(|s| record(s, &image)).collect();
        let failures = |ids: &[&str]| {
            ok(
                json!({"batchItemFailures": ids.iter().map(|i| json!({"itemIdentifier": i})).collect::<Vec<_>>()}),
            )
        };
        assert_eq!(
            batch_result(&ok(Value::Null), &batch, true),
            BatchResult::Success
        );
        assert_eq!(
            batch_result(&ok(json!({})), &batch, true),
            BatchResult::Success
        );
        assert_eq!(
            batch_result(&ok(json!({"batchItemFailures": null})), &batch, true),
            BatchResult::Success
        );
        assert_eq!(
            batch_result(&failures(&[]), &batch, true),
            BatchResult::Success
        );
        assert_eq!(
            batch_result(&failures(&["9", "8"]), &batch, true),
            BatchResult::FailedFrom(1)
        );
        assert!(matches!(
            batch_result(&failures(&[""]), &batch, true),
            BatchResult::Failed(_)
        ));
        assert!(matches!(
            batch_result(&failures(&["42"]), &batch, true),
            BatchResult::Failed(_)
        ));
        assert!(matches!(
            batch_result(
                &ok(json!({"batchItemFailures": [{"id": "8"}]})),
                &batch,
                true
            ),
            BatchResult::Failed(_)
        ));
        // Without ReportBatchItemFailures the response is not looked at.
        assert_eq!(
            batch_result(&failures(&["8"]), &batch, false),
            BatchResult::Success
        );
        let err = Ok(InvokeOutcome::FunctionError {
            error_type: "E".into(),
            message: "m".into(),
        });
        assert!(matches!(
            batch_result(&err, &batch, true),
            BatchResult::Failed(_)
        ));
    }

    #[test]
    fn sequence_numbers_compare_numerically_beyond_u128() {
        assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
        assert_eq!(
            compare_sequence_numbers(
                "9999999999999999999999999999999999999999",
                "10000000000000000000000000000000000000000"
            ),
            Ordering::Less
        );
        assert_eq!(compare_sequence_numbers("0042", "42"), Ordering::Equal);
    }

    #[test]
    fn function_names_and_qualifiers() {
        assert_eq!(
            split_function("generate-pdf-local"),
            ("generate-pdf-local", None)
        );
        assert_eq!(split_function("f:live"), ("f", Some("live")));
        assert_eq!(
            split_function("arn:aws:lambda:us-east-1:123456789012:function:f:live"),
            ("f", Some("live"))
        );
        assert_eq!(
            split_function("arn:aws:lambda:us-east-1:123456789012:function:f"),
            ("f", None)
        );
        assert_eq!(target_rank(Some("live"), Some("live")), Some(0));
        assert_eq!(
            target_rank(Some("live"), Some("3")),
            Some(1),
            "moto stores the alias's version"
        );
        assert_eq!(target_rank(Some("live"), Some("other")), None);
        assert_eq!(target_rank(None, Some("live")), Some(0));
        assert!(is_dynamodb_stream(
            "arn:aws:dynamodb:us-east-1:1:table/t/stream/2026"
        ));
        assert!(!is_dynamodb_stream("arn:aws:sqs:us-east-1:1:q"));
    }

    #[test]
    fn checkpoints_of_another_stream_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let checkpoints = Checkpoints {
            shards: BTreeMap::from([("shard-1".to_owned(), "123".to_owned())]),
            latest_since: BTreeMap::from([("shard-2".to_owned(), 1_700_000_000.5)]),
        };
        save_checkpoints(&path, "arn:old", &checkpoints).unwrap();
        assert_eq!(load_checkpoints(&path, "arn:old").unwrap(), checkpoints);
        assert_eq!(
            load_checkpoints(&path, "arn:new").unwrap(),
            Checkpoints::default()
        );
        assert!(
            load_checkpoints(&dir.path().join("none.json"), "arn:old").unwrap()
                == Checkpoints::default()
        );
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            load_checkpoints(&path, "arn:old"),
            Err(StreamError::CheckpointFormat { .. })
        ));
    }
}
