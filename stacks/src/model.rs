//! The typed desired state of a stack: resources, their specs and their dependencies.
//!
//! These types say what should exist, never how to make it so; the deployer maps each
//! [`Spec`] variant to the provider that knows the AWS API.

use std::collections::BTreeMap;

use serde::Serialize;

use serde_json::Value;

use crate::config::{Encryption, StreamViewType};

/// A stable logical id such as `dynamodb_table.invoices`: how plans and dependencies name a
/// resource, independent of its physical name.
pub type ResourceId = String;

/// Whether the resource should exist. Stacks list every resource they may own, so turning a
/// feature off (autoscaling, say) plans the deletion of what it had created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ensure {
    Present,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub id: ResourceId,
    /// Resources that must exist (and be ready) before this one is created.
    pub depends_on: Vec<ResourceId>,
    pub ensure: Ensure,
    pub spec: Spec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Spec {
    Bucket(BucketSpec),
    Table(TableSpec),
    ScalableTarget(ScalableTargetSpec),
    ScalingPolicy(ScalingPolicySpec),
    Role(RoleSpec),
    LogGroup(LogGroupSpec),
    Object(ObjectSpec),
    Function(FunctionSpec),
    EventSourceMapping(EventSourceMappingSpec),
    ApiAccount(ApiAccountSpec),
    RestApi(RestApiSpec),
    ApiStage(ApiStageSpec),
    ApiKey(ApiKeySpec),
    UsagePlan(UsagePlanSpec),
    LambdaPermission(LambdaPermissionSpec),
    Seed(SeedSpec),
}

impl Spec {
    /// The physical name, as shown in plans.
    pub fn name(&self) -> &str {
        match self {
            Spec::Bucket(b) => &b.name,
            Spec::Table(t) => &t.name,
            Spec::ScalableTarget(s) => &s.resource_id,
            Spec::ScalingPolicy(p) => &p.name,
            Spec::Role(r) => &r.name,
            Spec::LogGroup(l) => &l.name,
            Spec::Object(o) => &o.key,
            Spec::Function(f) => &f.name,
            Spec::EventSourceMapping(m) => &m.name,
            Spec::ApiAccount(a) => &a.role_name,
            Spec::RestApi(a) => &a.name,
            Spec::ApiStage(s) => &s.stage_name,
            Spec::ApiKey(k) => &k.name,
            Spec::UsagePlan(u) => &u.name,
            Spec::LambdaPermission(p) => &p.statement_id,
            Spec::Seed(s) => &s.name,
        }
    }
}

/// A whole environment's desired state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stack {
    pub app: String,
    pub env: String,
    /// The tags that prove a resource belongs to this stack.
    pub ownership_tags: BTreeMap<String, String>,
    pub resources: Vec<Resource>,
}

impl Stack {
    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }

    /// The same stack with every resource absent: what `destroy` plans. Account-wide settings
    /// (the API Gateway CloudWatch role) serve every API of the account and outlive any one
    /// stack, so they are left out rather than undone; so is the seed, whose data goes with
    /// the table and which has nothing of its own to delete.
    pub fn into_absent(mut self) -> Stack {
        let outlives = |s: &Spec| matches!(s, Spec::ApiAccount(_) | Spec::Seed(_));
        let kept: Vec<ResourceId> = self
            .resources
            .iter()
            .filter(|r| outlives(&r.spec))
            .map(|r| r.id.clone())
            .collect();
        self.resources.retain(|r| !outlives(&r.spec));
        for r in &mut self.resources {
            r.depends_on.retain(|d| !kept.contains(d));
            r.ensure = Ensure::Absent;
        }
        self
    }

    /// The same stack without its seed step (`--no-seed`). Nothing depends on a seed, and
    /// leaving it out (rather than marking it absent) touches no data that is already there.
    pub fn without_seed(mut self) -> Stack {
        self.resources.retain(|r| !matches!(r.spec, Spec::Seed(_)));
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketSpec {
    pub name: String,
    pub versioning: bool,
    pub encryption: Encryption,
    /// All four public access block settings on.
    pub block_public_access: bool,
    /// `BucketOwnerEnforced`: ACLs disabled.
    pub owner_enforced: bool,
    /// `None` keeps noncurrent versions forever.
    pub noncurrent_version_expiry_days: Option<u32>,
    /// A bucket policy that denies requests not made over TLS.
    pub tls_only: bool,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AttrType {
    S,
    N,
    B,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::S => "S",
            AttrType::N => "N",
            AttrType::B => "B",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyAttr {
    pub name: String,
    pub attr_type: AttrType,
}

impl KeyAttr {
    pub fn string(name: &str) -> KeyAttr {
        KeyAttr {
            name: name.into(),
            attr_type: AttrType::S,
        }
    }
}

/// Provisioned capacity of a table or index. When autoscaling manages it, any live value
/// inside `autoscaled` is what the stack wants: autoscaling moved it, nobody drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    pub read: u32,
    pub write: u32,
    pub read_range: Option<(u32, u32)>,
    pub write_range: Option<(u32, u32)>,
}

impl Capacity {
    /// Whether a live value is acceptable for this desired capacity.
    pub fn accepts(desired: u32, range: Option<(u32, u32)>, live: u32) -> bool {
        match range {
            Some((min, max)) => (min..=max).contains(&live),
            None => desired == live,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Billing {
    Provisioned(Capacity),
    PayPerRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GsiSpec {
    pub name: String,
    pub hash_key: KeyAttr,
    pub range_key: Option<KeyAttr>,
    /// Projection type ALL; the only one this stack uses.
    pub projection_all: bool,
    /// `None` when the table is PAY_PER_REQUEST.
    pub capacity: Option<Capacity>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableSpec {
    pub name: String,
    pub hash_key: KeyAttr,
    pub range_key: Option<KeyAttr>,
    pub billing: Billing,
    pub gsis: Vec<GsiSpec>,
    pub stream: Option<StreamViewType>,
    /// Server-side encryption with the AWS managed KMS key (rather than the AWS owned key).
    pub sse_kms: bool,
    pub point_in_time_recovery: bool,
    pub deletion_protection: bool,
    pub tags: BTreeMap<String, String>,
}

/// An Application Auto Scaling scalable target for DynamoDB capacity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalableTargetSpec {
    /// `table/<name>` or `table/<name>/index/<index>`.
    pub resource_id: String,
    /// e.g. `dynamodb:table:ReadCapacityUnits`.
    pub dimension: String,
    pub min: u32,
    pub max: u32,
}

/// A target-tracking scaling policy on a scalable target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingPolicySpec {
    pub name: String,
    pub resource_id: String,
    pub dimension: String,
    /// e.g. `DynamoDBReadCapacityUtilization`.
    pub metric: String,
    pub target_value: f64,
    pub scale_in_cooldown_secs: u32,
    pub scale_out_cooldown_secs: u32,
}

/// An IAM role assumed by one AWS service, with managed and one inline policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleSpec {
    pub name: String,
    /// The service principal of the trust policy, e.g. `lambda.amazonaws.com`.
    pub service: String,
    pub managed_policy_arns: Vec<String>,
    pub inline_policy_name: String,
    /// The inline policy document; compared with the live one as JSON sets.
    pub inline_policy: Value,
    pub tags: BTreeMap<String, String>,
}

impl RoleSpec {
    /// The trust policy that lets `service` assume the role.
    pub fn trust_policy(&self) -> Value {
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": self.service},
                "Action": "sts:AssumeRole"
            }]
        })
    }
}

/// A CloudWatch Logs log group with a retention.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogGroupSpec {
    pub name: String,
    pub retention_days: u32,
    pub tags: BTreeMap<String, String>,
}

/// A local file stored in S3 under a content-addressed key: uploaded only when absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectSpec {
    pub bucket: String,
    pub key: String,
    /// Where the bytes come from on this machine.
    pub source: std::path::PathBuf,
    /// SHA-256 of the content, base64 (what S3's `ChecksumSHA256` carries).
    pub sha256_b64: String,
}

/// A deployed function's code: the zip built locally, by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Code {
    pub zip_path: std::path::PathBuf,
    /// The zip's size: whether Lambda takes it with the call (see [`DIRECT_UPLOAD_LIMIT`]).
    pub size_bytes: u64,
    pub sha256_hex: String,
    /// Base64 of the same digest: Lambda's `CodeSha256`.
    pub sha256_b64: String,
}

/// The largest zip Lambda takes with CreateFunction / UpdateFunctionCode itself (its 50 MB
/// direct-upload quota); larger code is read from S3.
pub const DIRECT_UPLOAD_LIMIT: u64 = 50_000_000;

/// A Lambda function, its published versions and its alias.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionSpec {
    pub name: String,
    pub role_arn: String,
    pub runtime: String,
    pub handler: String,
    pub architecture: String,
    pub memory_mb: u32,
    pub timeout_secs: u32,
    pub environment: BTreeMap<String, String>,
    pub code_bucket: String,
    pub code_key: String,
    /// The zip sent with the call (Lambda's `ZipFile`) when within [`DIRECT_UPLOAD_LIMIT`]:
    /// the function then does not wait for its artifact's upload to S3 (which still happens,
    /// for CloudFormation and the local runtime). `None`: Lambda reads `code_bucket/code_key`.
    #[serde(skip)]
    pub code_zip: Option<std::path::PathBuf>,
    pub code_sha256_hex: String,
    pub code_sha256_b64: String,
    /// The alias that always points at the newest published version.
    pub alias: String,
    /// Published versions kept; older ones are deleted, never the alias target.
    pub keep_versions: u32,
    pub tags: BTreeMap<String, String>,
}

/// A stream trigger from a DynamoDB table's current stream to a function alias.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSourceMappingSpec {
    /// Display name: `<table> -> <function>:<alias>`.
    pub name: String,
    /// The stream ARN is not known before the table exists: the provider reads it.
    pub table_name: String,
    /// The table's stream view type: changing it gives the table a new stream, which the
    /// mapping must follow (a mapping cannot be moved to another stream in place).
    pub stream_view_type: String,
    pub function_name: String,
    pub alias: String,
    pub starting_position: String,
    pub batch_size: u32,
    pub batching_window_secs: u32,
    pub bisect_on_error: bool,
    pub max_retries: u32,
    pub report_batch_item_failures: bool,
}

/// The account-level API Gateway setting access logging needs: a CloudWatch Logs role.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiAccountSpec {
    /// Create `role_name` and set it when the account has no role; otherwise only check.
    pub setup: bool,
    pub role_name: String,
}

/// One method of the API, proxied to a Lambda alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSpec {
    /// `/insert-invoice`: one path segment under the root.
    pub path: String,
    pub method: String,
    pub api_key_required: bool,
    /// Query string parameters and whether API Gateway rejects requests without them.
    pub query_params: BTreeMap<String, bool>,
    /// The method has a request validator checking parameters: without one, API Gateway
    /// documents required parameters but lets requests without them through.
    pub validate_params: bool,
    /// The function name, alias-qualified ARN and AWS_PROXY integration URI.
    pub function_name: String,
    pub function_arn: String,
    pub integration_uri: String,
}

/// A gateway response: how API Gateway answers errors it raises itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayResponseSpec {
    /// `INVALID_API_KEY`, `THROTTLED`, ...
    pub response_type: String,
    pub status_code: String,
    /// `application/json` template.
    pub template: String,
    /// Response header name -> static value (already quoted as API Gateway wants: `'*'`).
    pub headers: BTreeMap<String, String>,
}

/// A REST API with its resources, methods and integrations, as one unit: the deployment hash
/// covers all of them, so they change together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestApiSpec {
    pub name: String,
    pub description: String,
    pub endpoint_type: crate::config::EndpointType,
    pub routes: Vec<RouteSpec>,
    /// One origin (or `*`) answered by OPTIONS preflights; `None`: no CORS.
    pub cors_origin: Option<String>,
    pub gateway_responses: Vec<GatewayResponseSpec>,
    pub tags: BTreeMap<String, String>,
}

impl RestApiSpec {
    /// A content hash of everything a deployment freezes: routes, their integration targets,
    /// CORS and gateway responses. Name, description, endpoint type and tags take effect
    /// without a deployment and are left out, so changing them never redeploys.
    pub fn deployment_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        #[derive(Serialize)]
        struct Deployed<'a> {
            routes: Vec<&'a RouteSpec>,
            cors_origin: &'a Option<String>,
            gateway_responses: Vec<&'a GatewayResponseSpec>,
        }
        // Order-independent: the same API listed in another order is the same API.
        let mut routes: Vec<&RouteSpec> = self.routes.iter().collect();
        routes.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
        let mut gateway_responses: Vec<&GatewayResponseSpec> =
            self.gateway_responses.iter().collect();
        gateway_responses.sort_by(|a, b| a.response_type.cmp(&b.response_type));
        let doc = serde_json::to_vec(&Deployed {
            routes,
            cors_origin: &self.cors_origin,
            gateway_responses,
        })
        .expect("the API definition serialises");
        hex::encode(Sha256::digest(&doc))
    }
}

/// The prefix of a deployment description that records the hash it deployed.
pub const DEPLOYMENT_HASH_PREFIX: &str = "xtask-definition-sha256:";

/// A stage with its current deployment, access logs and method throttling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiStageSpec {
    pub api_name: String,
    pub stage_name: String,
    /// [`RestApiSpec::deployment_hash`] of the API this stage must serve.
    pub deployment_hash: String,
    pub access_log_group_arn: String,
    /// JSON access log format.
    pub access_log_format: String,
    pub throttle_rate: f64,
    pub throttle_burst: u32,
    pub tags: BTreeMap<String, String>,
}

/// An API key; AWS generates its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeySpec {
    pub name: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
}

/// A usage plan bound to one API stage, with throttle, quota and one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsagePlanSpec {
    pub name: String,
    pub api_name: String,
    pub stage_name: String,
    pub key_name: String,
    pub rate_limit: f64,
    pub burst_limit: u32,
    pub quota_limit: u32,
    /// `DAY`, `WEEK` or `MONTH`.
    pub quota_period: String,
    pub tags: BTreeMap<String, String>,
}

/// Permission for API Gateway to invoke one function alias from one method of one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LambdaPermissionSpec {
    pub function_name: String,
    pub qualifier: String,
    /// Stable, so re-applying finds the statement instead of adding another.
    pub statement_id: String,
    pub principal: String,
    pub api_name: String,
    /// `<stage>/<METHOD>/<path>`: appended to `arn:...:execute-api:<region>:<account>:<api id>/`.
    pub source_arn_suffix: String,
}

/// How a seed's function is invoked: decided by where the environment is deployed, not by the
/// stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum SeedInvoke {
    /// Lambda's Invoke API on the alias: the function runs where it is deployed (AWS).
    Lambda,
    /// The local Lambda runtime runs the alias's deployed code on this machine, talking to
    /// `endpoint`: for the emulator and for rehearsals against it, which store functions but
    /// cannot run them.
    LocalRuntime { endpoint: String },
}

/// Sample data in a table, written once by invoking a function's alias: present when every
/// sample key is in the table. insert-mock-data writes `INV1`..`INV<invoices>`, invoice `n`
/// for customer `CUST<(n - 1) % customers + 1>` (its `sample_invoice`), idempotently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedSpec {
    /// Display name: `<function>:<alias> -> <table>`.
    pub name: String,
    pub table_name: String,
    pub function_name: String,
    pub alias: String,
    /// Where the function's code is, for the local runtime (found by the version's digest).
    pub artifacts_bucket: String,
    pub invoices: u32,
    pub customers: u32,
    pub invoke: SeedInvoke,
}

impl SeedSpec {
    /// The `(InvoiceID, CustomerID)` key of every sample invoice, in order.
    pub fn keys(&self) -> Vec<(String, String)> {
        (1..=self.invoices)
            .map(|n| {
                (
                    format!("INV{n}"),
                    format!("CUST{}", (n - 1) % self.customers.max(1) + 1),
                )
            })
            .collect()
    }
}
