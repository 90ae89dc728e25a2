//! AWS clients for one command run, and the interceptor that counts and logs every call.
//!
//! One [`CallLog`] sees every SDK operation of every client: `--verbose` prints from it, the
//! summary reports reads and writes from it, and the tests assert "zero writes" with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
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
}

/// Every SDK call of this process, in completion order.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<Call>>,
    verbose: bool,
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
        })
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
    // ValidateTemplate checks a template and changes nothing.
    [
        "Get", "Describe", "List", "Head", "Query", "Scan", "Validate",
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
        let millis = cfg
            .load::<Started>()
            .map(|s| s.0.elapsed())
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        self.0.record(Call {
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
    pub log: Arc<CallLog>,
    pub emulator: bool,
}

impl Clients {
    pub async fn new(target: &Target, log: Arc<CallLog>) -> Clients {
        // Throttling and transient errors are retried by the SDK itself with jittered backoff;
        // domain-level waits (table ACTIVE, ...) go through `engine::retry`.
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(8));
        let emulator = matches!(target, Target::Emulator { .. });
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
        let sdk = loader.load().await;
        Clients::from_sdk(sdk, log, emulator)
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
        let apigateway = aws_sdk_apigateway::config::Builder::from(&sdk)
            .interceptor(counter.clone())
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
        assert!(!is_read_operation("PutBucketTagging"));
        assert!(!is_read_operation("CreateTable"));
        assert!(!is_read_operation("RegisterScalableTarget"));
    }
}
