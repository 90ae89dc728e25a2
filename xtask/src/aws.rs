//! AWS clients for one command run, and the interceptor that counts and logs every call.
//!
//! One [`CallLog`] sees every SDK operation of every client: `--verbose` prints from it, the
//! summary reports reads and writes from it, and the tests assert "zero writes" with it. The
//! engine attributes each call to the resource and stage it ran for ([`scoped`]), which is
//! what the engine benchmark builds its critical path from.

pub mod transport;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde::Serialize;

/// One finished SDK operation.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub service: String,
    pub operation: String,
    pub write: bool,
    pub attempts: u32,
    pub millis: u64,
    pub ok: bool,
    /// The engine stage and resource this call was made for, when the engine made it.
    #[serde(skip)]
    pub scope: Option<Scope>,
    /// When the call started.
    #[serde(skip)]
    pub started: Option<Instant>,
    /// When each attempt's answer arrived: AWS rate limits apply to attempts, not to calls.
    #[serde(skip)]
    pub answered: Vec<Instant>,
}

/// What the engine was doing when it made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// A number per plan or apply pass, from [`next_stage`].
    pub stage: u64,
    /// `plan` or `apply`.
    pub kind: &'static str,
    /// The resource id.
    pub node: String,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `f` with every AWS call it makes attributed to `scope`.
pub async fn scoped<F: Future>(scope: Scope, f: F) -> F::Output {
    SCOPE.scope(scope, f).await
}

/// The plan pass the current task reads for, if any.
pub fn current_plan_stage() -> Option<u64> {
    SCOPE
        .try_with(|s| (s.kind == "plan").then_some(s.stage))
        .ok()
        .flatten()
}

/// The apply pass the current task writes for, if any.
pub fn current_apply_stage() -> Option<u64> {
    SCOPE
        .try_with(|s| (s.kind == "apply").then_some(s.stage))
        .ok()
        .flatten()
}

/// A fresh stage number, so the calls of two plans of one run stay apart.
pub fn next_stage() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Every SDK call of this process, in completion order.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<Call>>,
    verbose: bool,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    pub reads: usize,
    pub writes: usize,
    pub retries: usize,
    /// `Service.Operation` -> count, for writes only: what a run changed, call by call (tests
    /// assert "exactly one CreateDeployment" with it).
    pub writes_by_operation: std::collections::BTreeMap<String, usize>,
}

impl CallLog {
    pub fn new(verbose: bool) -> Arc<CallLog> {
        Arc::new(CallLog {
            calls: Mutex::new(Vec::new()),
            verbose,
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
        })
    }

    /// The most calls in flight at once since the last call of this method.
    pub fn take_peak_in_flight(&self) -> usize {
        self.peak_in_flight
            .swap(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("call log poisoned").clone()
    }

    pub fn counts(&self) -> CallCounts {
        let calls = self.calls.lock().expect("call log poisoned");
        CallCounts {
            reads: calls.iter().filter(|c| !c.write).count(),
            writes: calls.iter().filter(|c| c.write).count(),
            retries: calls
                .iter()
                .map(|c| c.attempts.saturating_sub(1) as usize)
                .sum(),
            writes_by_operation: calls.iter().filter(|c| c.write).fold(
                std::collections::BTreeMap::new(),
                |mut m, c| {
                    *m.entry(format!("{}.{}", c.service, c.operation))
                        .or_insert(0) += 1;
                    m
                },
            ),
        }
    }

    fn record(&self, call: Call) {
        if self.verbose {
            eprintln!(
                "aws: {}.{} {} in {} ms{}",
                call.service,
                call.operation,
                if call.ok { "ok" } else { "failed" },
                call.millis,
                if call.attempts > 1 {
                    format!(" after {} attempts", call.attempts)
                } else {
                    String::new()
                }
            );
        }
        self.calls.lock().expect("call log poisoned").push(call);
    }
}

/// Operations that only look. Anything else counts as a write, so a new kind of call can only
/// make the zero-write check stricter, never hide a write.
pub fn is_read_operation(operation: &str) -> bool {
    // ValidateTemplate checks a template and changes nothing; BatchGetItem reads items.
    [
        "Get", "BatchGet", "Describe", "List", "Head", "Query", "Scan", "Validate",
    ]
    .iter()
    .any(|p| operation.starts_with(p))
}

#[derive(Debug, Clone)]
struct Started(Instant);
impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

#[derive(Debug, Clone)]
struct Attempts(u32);
impl Storable for Attempts {
    type Storer = StoreReplace<Self>;
}

/// Creates that carry neither a unique name nor a client token: AWS makes one more of them for
/// every attempt that reaches it, so an SDK retry after a lost answer would make a duplicate
/// (two event source mappings deliver every record twice). A REST API's, API key's, usage
/// plan's and request validator's names are not unique on API Gateway.
pub const UNNAMED_CREATES: &[&str] = &[
    "CreateEventSourceMapping",
    "PublishVersion",
    "CreateDeployment",
    "CreateApiKey",
    "CreateUsagePlan",
    "CreateRestApi",
    "CreateRequestValidator",
];

/// An unnamed create whose answer was lost (no answer, a timeout, or a 5xx): AWS may have
/// executed it, so it is not sent again until someone has looked for what it made.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: the answer was lost and AWS may have made it; not sent again before looking")]
pub struct LostAnswer {
    pub operation: String,
}

/// Whether `e` is (or was caused by) a [`LostAnswer`].
pub fn lost_answer(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<LostAnswer>())
}

/// Whether a call's failure leaves open that AWS executed it: no answer arrived (the
/// connection failed or closed, or the call timed out), the answer could not be read, or AWS
/// answered with a server error. For a create without name or client token, the caller must
/// look for what it may have made before sending it again.
pub fn answer_lost<E>(
    e: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> bool {
    use aws_smithy_runtime_api::client::result::SdkError;
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => s.raw().status().is_server_error(),
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct Ambiguous;
impl Storable for Ambiguous {
    type Storer = StoreReplace<Self>;
}

#[derive(Debug, Clone)]
struct Answered(Vec<Instant>);
impl Storable for Answered {
    type Storer = StoreReplace<Self>;
}

#[derive(Debug, Clone)]
struct Counter(Arc<CallLog>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "xtask-call-counter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Ok(())
    }

    fn read_after_transmit(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut answered = cfg
            .load::<Answered>()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        answered.push(Instant::now());
        cfg.interceptor_state().store_put(Answered(answered));
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let n = cfg.load::<Attempts>().map(|a| a.0).unwrap_or(0);
        cfg.interceptor_state().store_put(Attempts(n + 1));
        if cfg.load::<Ambiguous>().is_some() {
            let operation = cfg
                .load::<Metadata>()
                .map(|m| m.name().to_string())
                .unwrap_or_default();
            if UNNAMED_CREATES.contains(&operation.as_str()) {
                return Err(Box::new(LostAnswer { operation }));
            }
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // No answer at all, or a server error: the request may have been executed.
        let ambiguous = match context.inner().response() {
            None => context.inner().is_failed(),
            Some(r) => r.status().is_server_error(),
        };
        if ambiguous {
            cfg.interceptor_state().store_put(Ambiguous);
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        let started = cfg.load::<Started>().map(|s| s.0);
        let millis = started
            .map(|s| s.elapsed())
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        self.0.record(Call {
            scope: SCOPE.try_with(Scope::clone).ok(),
            started,
            answered: cfg
                .load::<Answered>()
                .map(|a| a.0.clone())
                .unwrap_or_default(),
            write: !is_read_operation(&operation),
            service,
            operation,
            attempts: cfg.load::<Attempts>().map(|a| a.0).unwrap_or(1),
            millis,
            ok: !context.inner().is_failed(),
        });
        Ok(())
    }
}

/// Where the SDK sends requests: AWS itself, or a local emulator.
#[derive(Debug, Clone)]
pub enum Target {
    /// The default credential chain and region (optionally a configured region).
    Aws { region: Option<String> },
    /// A local emulator: fixed dummy credentials, path-style S3.
    Emulator { endpoint: String, region: String },
}

/// The clients of one run, all reporting to the same [`CallLog`].
#[derive(Debug, Clone)]
pub struct Clients {
    pub sdk: SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// DynamoDB Streams: read by the local stream poller (`local::streams`).
    pub dynamodbstreams: aws_sdk_dynamodbstreams::Client,
    pub autoscaling: aws_sdk_applicationautoscaling::Client,
    pub sts: aws_sdk_sts::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub apigateway: aws_sdk_apigateway::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    /// Paces the API Gateway client's calls to the account's quotas.
    pub pacer: Arc<transport::Pacer>,
    pub log: Arc<CallLog>,
    pub emulator: bool,
}

/// The HTTPS client every AWS client of this crate uses: hyper with rustls and ring, the same
/// connector as the functions' (see the workspace manifest for why not the SDK's default).
/// Certificates come from the platform's store, as with the SDK's default client.
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The SDK configuration every client of a run is built from: the default credential chain
/// and region (or the emulator's), our HTTPS client, `latency` added to every attempt.
///
/// The HTTP client is always set here, never left to the SDK's default: the API Gateway pacer
/// and the benchmark's latency decorate it (see [`Clients::from_sdk`]), and an `SdkConfig`
/// loaded without one has none to decorate. Until this was so, neither decorator was in place.
pub async fn sdk_config(target: &Target, latency: Option<Duration>) -> SdkConfig {
    let http = match latency {
        Some(latency) => transport::delayed(https_client(), latency),
        None => https_client(),
    };
    // Throttling and transient errors are retried by the SDK itself with jittered backoff;
    // domain-level waits (table ACTIVE, ...) go through `engine::retry`.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::standard().with_max_attempts(8));
    match target {
        Target::Aws { region } => {
            if let Some(r) = region {
                loader = loader.region(Region::new(r.clone()));
            }
        }
        Target::Emulator { endpoint, region } => {
            loader = loader
                .endpoint_url(endpoint)
                .region(Region::new(region.clone()))
                .credentials_provider(Credentials::new(
                    "testing", "testing", None, None, "emulator",
                ));
        }
    }
    loader.load().await
}

impl Clients {
    pub async fn new(target: &Target, log: Arc<CallLog>) -> Clients {
        Clients::with_latency(target, log, None).await
    }

    /// Like [`Clients::new`], with `latency` added to every attempt (the engine benchmark's
    /// stand-in for the distance to AWS).
    pub async fn with_latency(
        target: &Target,
        log: Arc<CallLog>,
        latency: Option<Duration>,
    ) -> Clients {
        let emulator = matches!(target, Target::Emulator { .. });
        Clients::from_sdk(sdk_config(target, latency).await, log, emulator)
    }

    pub fn from_sdk(sdk: SdkConfig, log: Arc<CallLog>, emulator: bool) -> Clients {
        let counter = Counter(log.clone());
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            // Emulator endpoints are IP addresses, which virtual-hosted style cannot address.
            .force_path_style(emulator)
            .interceptor(counter.clone())
            .build();
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build();
        let dynamodbstreams = aws_sdk_dynamodbstreams::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build();
        let autoscaling = aws_sdk_applicationautoscaling::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build();
        let sts = aws_sdk_sts::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build();
        let ssm = aws_sdk_ssm::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build();
        let iam = aws_sdk_iam::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build();
        let lambda = aws_sdk_lambda::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build();
        let logs = aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build();
        let http = sdk.http_client().expect(
            "an SdkConfig with an HTTP client (see aws::sdk_config): API Gateway's pacer wraps it",
        );
        let pacer = transport::Pacer::new();
        let apigateway = aws_sdk_apigateway::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .http_client(transport::paced(http, pacer.clone()))
            .build();
        let cloudformation = aws_sdk_cloudformation::config::Builder::from(&sdk)
            .interceptor(counter)
            .build();
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            dynamodbstreams: aws_sdk_dynamodbstreams::Client::from_conf(dynamodbstreams),
            autoscaling: aws_sdk_applicationautoscaling::Client::from_conf(autoscaling),
            sts: aws_sdk_sts::Client::from_conf(sts),
            ssm: aws_sdk_ssm::Client::from_conf(ssm),
            iam: aws_sdk_iam::Client::from_conf(iam),
            lambda: aws_sdk_lambda::Client::from_conf(lambda),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(logs),
            apigateway: aws_sdk_apigateway::Client::from_conf(apigateway),
            cloudformation: aws_sdk_cloudformation::Client::from_conf(cloudformation),
            pacer,
            sdk,
            log,
            emulator,
        }
    }

    pub fn region(&self) -> String {
        self.sdk.region().map(|r| r.to_string()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_recognised_by_verb() {
        assert!(is_read_operation("DescribeTable"));
        assert!(is_read_operation("GetBucketTagging"));
        assert!(is_read_operation("ListObjectVersions"));
        assert!(is_read_operation("HeadBucket"));
        assert!(is_read_operation("BatchGetItem"));
        assert!(!is_read_operation("BatchWriteItem"));
        assert!(!is_read_operation("Invoke"));
        assert!(!is_read_operation("PutBucketTagging"));
        assert!(!is_read_operation("CreateTable"));
        assert!(!is_read_operation("RegisterScalableTarget"));
    }

    /// The bug this guards: the SDK's default client left `SdkConfig::http_client()` empty,
    /// so neither the benchmark's latency nor API Gateway's pacer was ever put in place.
    #[tokio::test]
    async fn every_client_goes_through_our_decorated_http_client() {
        let target = Target::Emulator {
            endpoint: "http://127.0.0.1:9".into(),
            region: "us-east-1".into(),
        };
        let clients =
            Clients::with_latency(&target, CallLog::new(false), Some(Duration::from_millis(7)))
                .await;
        let http = |c: Option<aws_smithy_runtime_api::client::http::SharedHttpClient>| {
            format!("{:?}", c.expect("an HTTP client"))
        };
        let s3 = http(clients.s3.config().http_client());
        assert!(s3.contains("Latency(7ms)"), "{s3}");
        let apigateway = http(clients.apigateway.config().http_client());
        assert!(apigateway.contains("Pace("), "{apigateway}");
        assert!(apigateway.contains("Latency(7ms)"), "{apigateway}");
        let plain = http(sdk_config(&target, None).await.http_client());
        assert!(!plain.contains("Latency"), "{plain}");
    }
}
