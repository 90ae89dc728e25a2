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

    /// The same stack with every resource absent: what `destroy` plans.
    pub fn into_absent(mut self) -> Stack {
        for r in &mut self.resources {
            r.ensure = Ensure::Absent;
        }
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
    pub sha256_hex: String,
    /// Base64 of the same digest: Lambda's `CodeSha256`.
    pub sha256_b64: String,
}

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
    pub function_name: String,
    pub alias: String,
    pub starting_position: String,
    pub batch_size: u32,
    pub batching_window_secs: u32,
    pub bisect_on_error: bool,
    pub max_retries: u32,
    pub report_batch_item_failures: bool,
}
