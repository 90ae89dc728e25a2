//! An environment's configuration: the typed, strict form of `config/<env>.toml`.
//!
//! Layering is built-in defaults <- the file <- environment variables <- CLI `--set` flags.
//! Every value is checked before anything talks to AWS, and every error names where the bad
//! value came from: the file with line and column, the environment variable, or the flag.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override config keys; `__` separates path segments,
/// because keys themselves contain single underscores (`XTASK__INVOICES_TABLE__READ_CAPACITY=10`).
pub const ENV_PREFIX: &str = "XTASK__";

/// The whole configuration of one environment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Application name: used in resource names and in the `app` tag.
    pub app: String,
    /// Prepended to every physical name, e.g. to run two copies of an env side by side.
    pub name_prefix: String,
    /// AWS region. Empty means the SDK's default chain (`AWS_REGION`, profile, ...).
    pub region: String,
    /// When non-empty, credentials of any other account are refused before any write.
    pub allowed_account_ids: Vec<String>,
    /// Extra tags on every taggable resource (the ownership tags are always added).
    pub tags: BTreeMap<String, String>,
    /// Local emulator settings; present only for environments that run against moto.
    pub emulator: Option<EmulatorConfig>,
    pub buckets: BucketsConfig,
    pub invoices_table: InvoicesTableConfig,
    pub processed_table: ProcessedTableConfig,
    pub deploy: DeployConfig,
    pub functions: FunctionsConfig,
    pub stream_trigger: StreamTriggerConfig,
    pub api: ApiConfig,
    pub mock_data: MockDataConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            app: "invoice-app".into(),
            name_prefix: String::new(),
            region: String::new(),
            allowed_account_ids: Vec::new(),
            tags: BTreeMap::new(),
            emulator: None,
            buckets: BucketsConfig::default(),
            invoices_table: InvoicesTableConfig::default(),
            processed_table: ProcessedTableConfig::default(),
            deploy: DeployConfig::default(),
            functions: FunctionsConfig::default(),
            stream_trigger: StreamTriggerConfig::default(),
            api: ApiConfig::default(),
            mock_data: MockDataConfig::default(),
        }
    }
}

/// Where the local emulator listens; xtask starts it there when nothing answers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmulatorConfig {
    pub host: String,
    pub port: u16,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            host: "127.0.0.1".into(),
            port: 4566,
        }
    }
}

impl EmulatorConfig {
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BucketsConfig {
    /// Makes bucket names globally unique. Empty means the AWS account id.
    pub name_suffix: String,
    /// Days after which noncurrent object versions expire; 0 keeps them forever.
    pub noncurrent_version_expiry_days: u32,
    /// Deny every request that is not made over TLS.
    pub tls_only: bool,
    /// `AES256` (SSE-S3) or `aws:kms` (the AWS managed key).
    pub encryption: Encryption,
}

impl Default for BucketsConfig {
    fn default() -> Self {
        BucketsConfig {
            name_suffix: String::new(),
            noncurrent_version_expiry_days: 30,
            tls_only: true,
            encryption: Encryption::Aes256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Encryption {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    AwsKms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingMode {
    Provisioned,
    PayPerRequest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamViewType {
    NewImage,
    OldImage,
    NewAndOldImages,
    KeysOnly,
}

impl StreamViewType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamViewType::NewImage => "NEW_IMAGE",
            StreamViewType::OldImage => "OLD_IMAGE",
            StreamViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
            StreamViewType::KeysOnly => "KEYS_ONLY",
        }
    }
}

/// The invoices table: provisioned with autoscaling by default, streamed to generate-pdf.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvoicesTableConfig {
    pub billing_mode: BillingMode,
    /// Provisioned read capacity units (ignored for PAY_PER_REQUEST).
    pub read_capacity: u32,
    pub write_capacity: u32,
    pub point_in_time_recovery: bool,
    pub deletion_protection: bool,
    /// generate-pdf needs new images: NEW_IMAGE or NEW_AND_OLD_IMAGES.
    pub stream_view_type: StreamViewType,
    pub autoscaling: AutoscalingConfig,
    /// The `CustomerID-Index` global secondary index's own capacity and autoscaling.
    pub gsi: GsiConfig,
}

impl Default for InvoicesTableConfig {
    fn default() -> Self {
        InvoicesTableConfig {
            billing_mode: BillingMode::Provisioned,
            read_capacity: 5,
            write_capacity: 5,
            point_in_time_recovery: true,
            deletion_protection: false,
            stream_view_type: StreamViewType::NewImage,
            autoscaling: AutoscalingConfig::default(),
            gsi: GsiConfig::default(),
        }
    }
}

/// The processed-invoices table: on-demand by default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessedTableConfig {
    pub billing_mode: BillingMode,
    pub read_capacity: u32,
    pub write_capacity: u32,
    pub point_in_time_recovery: bool,
    pub deletion_protection: bool,
    pub autoscaling: AutoscalingConfig,
}

impl Default for ProcessedTableConfig {
    fn default() -> Self {
        ProcessedTableConfig {
            billing_mode: BillingMode::PayPerRequest,
            read_capacity: 5,
            write_capacity: 5,
            point_in_time_recovery: true,
            deletion_protection: false,
            autoscaling: AutoscalingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GsiConfig {
    pub read_capacity: u32,
    pub write_capacity: u32,
    pub autoscaling: AutoscalingConfig,
}

impl Default for GsiConfig {
    fn default() -> Self {
        GsiConfig {
            read_capacity: 5,
            write_capacity: 5,
            autoscaling: AutoscalingConfig::default(),
        }
    }
}

/// Read and write autoscaling of one table or index.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscalingConfig {
    /// Unset means on for PROVISIONED billing (autoscaling does not apply to PAY_PER_REQUEST).
    pub enabled: Option<bool>,
    pub read: ScalingConfig,
    pub write: ScalingConfig,
}

impl AutoscalingConfig {
    /// The autoscaling in force for a billing mode, if any.
    pub fn active(&self, billing: BillingMode) -> Option<&AutoscalingConfig> {
        match (billing, self.enabled) {
            (BillingMode::Provisioned, None | Some(true)) => Some(self),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    pub min: u32,
    pub max: u32,
    /// Target utilisation in percent; AWS accepts 20 to 90.
    pub target_utilization: f64,
    pub scale_in_cooldown_secs: u32,
    pub scale_out_cooldown_secs: u32,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            min: 5,
            max: 20,
            target_utilization: 70.0,
            scale_in_cooldown_secs: 60,
            scale_out_cooldown_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// How many AWS operations apply runs at once.
    pub concurrency: usize,
    /// Upper bound for any single wait (table ACTIVE, ...), in seconds.
    pub wait_timeout_secs: u64,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            concurrency: 8,
            wait_timeout_secs: 600,
        }
    }
}

/// The Lambda functions: defaults for all of them, with optional per-function overrides.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionsConfig {
    /// Deploy the functions (and their roles, log groups, artifacts and trigger). Off lists
    /// them as absent, so switching it off deletes them.
    pub enabled: bool,
    pub memory_mb: u32,
    pub timeout_secs: u32,
    pub architecture: Architecture,
    /// Retention of `/aws/lambda/<name>`; one of the values CloudWatch Logs accepts.
    pub log_retention_days: u32,
    /// `LOG_LEVEL` of every function: error, warn, info, debug or trace.
    pub log_level: String,
    /// Published versions kept per function (the alias target is always kept).
    pub keep_versions: u32,
    /// Per-function settings, keyed by function name (`generate-pdf`).
    pub overrides: BTreeMap<String, FunctionOverride>,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        FunctionsConfig {
            enabled: true,
            memory_mb: 256,
            timeout_secs: 10,
            architecture: Architecture::X86_64,
            log_retention_days: 14,
            log_level: "info".into(),
            keep_versions: 3,
            overrides: BTreeMap::new(),
        }
    }
}

/// What one function may set differently from `[functions]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionOverride {
    pub memory_mb: Option<u32>,
    pub timeout_secs: Option<u32>,
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Architecture {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// The event source mapping from the invoices table's stream to generate-pdf.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamTriggerConfig {
    pub starting_position: StartingPosition,
    pub batch_size: u32,
    pub batching_window_secs: u32,
    /// Split a failing batch in two and retry each half, to isolate a poison record.
    pub bisect_on_error: bool,
    pub max_retries: u32,
    /// generate-pdf reports failed records individually (`ReportBatchItemFailures`).
    pub report_batch_item_failures: bool,
}

impl Default for StreamTriggerConfig {
    fn default() -> Self {
        StreamTriggerConfig {
            starting_position: StartingPosition::Latest,
            batch_size: 10,
            batching_window_secs: 0,
            bisect_on_error: true,
            max_retries: 3,
            report_batch_item_failures: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    Latest,
    TrimHorizon,
}

impl StartingPosition {
    pub fn as_str(self) -> &'static str {
        match self {
            StartingPosition::Latest => "LATEST",
            StartingPosition::TrimHorizon => "TRIM_HORIZON",
        }
    }
}

/// The REST API in front of the functions: endpoint, stage, throttling, key and usage plan.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Deploy the API. Off plans the deletion of everything below.
    pub enabled: bool,
    pub endpoint_type: EndpointType,
    /// Origins browsers may call the API from; empty (the default) answers no CORS preflight.
    pub cors_allowed_origins: Vec<String>,
    /// The stage clients call, part of the invoke URL.
    pub stage_name: String,
    /// Throttling of every method of the stage.
    pub method_throttle: ThrottleConfig,
    /// What one API key may do.
    pub usage_plan: UsagePlanConfig,
    /// Retention of the stage's access log group, in days.
    pub access_log_retention_days: u32,
    /// Access logging needs the account's API Gateway CloudWatch role; when this is on and the
    /// account has none, xtask creates one and sets it. When off, apply stops and says what to do.
    pub setup_cloudwatch_role: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            endpoint_type: EndpointType::Regional,
            cors_allowed_origins: Vec::new(),
            stage_name: "v1".into(),
            method_throttle: ThrottleConfig {
                rate_limit: 50.0,
                burst_limit: 100,
            },
            usage_plan: UsagePlanConfig::default(),
            access_log_retention_days: 14,
            setup_cloudwatch_role: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndpointType {
    Regional,
    Edge,
}

impl EndpointType {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::Regional => "REGIONAL",
            EndpointType::Edge => "EDGE",
        }
    }
}

/// Steady-state requests per second and the burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    pub rate_limit: f64,
    pub burst_limit: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsagePlanConfig {
    pub throttle: ThrottleConfig,
    pub quota: QuotaConfig,
}

impl Default for UsagePlanConfig {
    fn default() -> Self {
        UsagePlanConfig {
            throttle: ThrottleConfig {
                rate_limit: 20.0,
                burst_limit: 40,
            },
            quota: QuotaConfig {
                limit: 100_000,
                period: QuotaPeriod::Month,
            },
        }
    }
}

/// Requests one key may make per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub limit: u32,
    pub period: QuotaPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QuotaPeriod {
    Day,
    Week,
    Month,
}

impl QuotaPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Day => "DAY",
            QuotaPeriod::Week => "WEEK",
            QuotaPeriod::Month => "MONTH",
        }
    }
}

/// Sample invoices in the invoices table, as the original project's after-hook seeded them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockDataConfig {
    /// After a successful apply, invoke insert-mock-data's `live` alias once when the invoices
    /// table lacks its sample invoices. Off by default: seeding is something an environment
    /// asks for (local and dev do, prod does not).
    pub enabled: bool,
}

/// Where a value came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    EnvVar(String),
    Flag(String),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Origin::EnvVar(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag --set {flag}"),
            Origin::Default => write!(f, "built-in default"),
        }
    }
}

/// One rejected value.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub origin: Origin,
    /// Dotted key path, e.g. `invoices_table.autoscaling.read.min`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.origin, self.key, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// One line per problem, each starting with where the value came from (`path:line:column`,
/// the environment variable or the flag), compiler style; a count follows when there are several.
fn render_problems(problems: &[Problem]) -> String {
    let mut out = problems
        .iter()
        .map(|p| p.to_string().replace('\n', "\n    "))
        .collect::<Vec<_>>()
        .join("\n");
    if problems.len() > 1 {
        out.push_str(&format!(
            "\n{} problems in the configuration",
            problems.len()
        ));
    }
    out
}

/// One `key.path=value` override from the environment or the command line.
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

impl Override {
    /// Parses `--set a.b=value`.
    pub fn from_flag(arg: &str) -> Result<Override, ConfigError> {
        let (key, value) = arg.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(vec![Problem {
                origin: Origin::Flag(arg.into()),
                key: String::new(),
                message: "expected KEY=VALUE, e.g. --set invoices_table.read_capacity=10".into(),
            }])
        })?;
        Ok(Override {
            key: key.trim().into(),
            value: value.into(),
            origin: Origin::Flag(arg.into()),
        })
    }

    /// Collects `XTASK__A__B=value` variables from an environment listing.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
        let mut out: Vec<Override> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(ENV_PREFIX)?;
                let key = rest
                    .split("__")
                    .map(|s| s.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(".");
                Some(Override {
                    key,
                    value,
                    origin: Origin::EnvVar(name),
                })
            })
            .collect();
        // The process environment has no order; sort so results do not depend on it.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// Loads and validates a config file with its overrides.
pub fn load(path: &Path, env: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, env, overrides)
}

/// Parses config text; `path` is only used in messages.
pub fn parse(
    path: &Path,
    text: &str,
    env: &str,
    overrides: &[Override],
) -> Result<Config, ConfigError> {
    let source = Source { path, text };
    // First the file alone, so syntax errors, unknown keys and wrong types point into it.
    let from_file: Config = toml::from_str(text).map_err(|e| {
        let origin = e
            .span()
            .map(|s| source.origin_at(s.start))
            .unwrap_or(Origin::Default);
        ConfigError::Invalid(vec![Problem {
            origin,
            key: String::new(),
            message: e.message().trim().to_string(),
        }])
    })?;
    let config = if overrides.is_empty() {
        from_file
    } else {
        apply_overrides(text, overrides)?
    };
    let mut found = crate::validate::validate(&config);
    if found.is_empty() {
        // Names are only worth checking once their parts are valid.
        found = crate::validate::validate_names(&config, env);
    }
    let problems: Vec<Problem> = found
        .into_iter()
        .map(|(key, message)| Problem {
            origin: locate(&key, overrides, &source),
            key,
            message,
        })
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn apply_overrides(text: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).expect("file already parsed once");
    let mut problems = Vec::new();
    for o in overrides {
        let value = override_value(&o.key, &o.value);
        let mut parts: Vec<&str> = o.key.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        if last.is_empty() || parts.iter().any(|p| p.is_empty()) {
            problems.push(Problem {
                origin: o.origin.clone(),
                key: o.key.clone(),
                message: "empty key segment".into(),
            });
            continue;
        }
        if let Err(part) = insert_path(&mut table, &parts, last, value) {
            problems.push(Problem {
                origin: o.origin.clone(),
                key: o.key.clone(),
                message: format!("`{part}` is not a table"),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    // The file was fine on its own, so a failure now is an override's fault: find which.
    let de = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let path = e.path().to_string();
        let culprit = overrides
            .iter()
            .rev()
            .find(|o| path.starts_with(&o.key) || o.key.starts_with(&path))
            .or(overrides.last())
            .expect("overrides is not empty");
        ConfigError::Invalid(vec![Problem {
            origin: culprit.origin.clone(),
            key: culprit.key.clone(),
            message: e.into_inner().message().trim().to_string(),
        }])
    })
}

/// Sets `parts.last = value` inside nested tables, creating them; fails with the segment
/// that names a non-table value.
fn insert_path(
    table: &mut toml::Table,
    parts: &[&str],
    last: &str,
    value: toml::Value,
) -> Result<(), String> {
    match parts.split_first() {
        None => {
            table.insert(last.to_string(), value);
            Ok(())
        }
        Some((head, rest)) => match table
            .entry(head.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => insert_path(t, rest, last, value),
            _ => Err(head.to_string()),
        },
    }
}

/// A bare override value is TOML if it parses as such (`10`, `true`, `["a"]`), else a string,
/// so `--set region=eu-west-1` needs no quoting.
fn parse_scalar(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// The value of an override for `key`: like [`parse_scalar`], except that a key holding a
/// string keeps a bare value as text, so `--set tags.cost-center=4711` or
/// `--set buckets.name_suffix=123456789012` is not rejected as an integer.
fn override_value(key: &str, raw: &str) -> toml::Value {
    match parse_scalar(raw) {
        v if v.is_str() || !expects_string(key) => v,
        _ => toml::Value::String(raw.into()),
    }
}

/// Whether `key` names a string in the config (tag values included).
fn expects_string(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    if let ["tags", _] = parts.as_slice() {
        return true;
    }
    let template = Config {
        emulator: Some(EmulatorConfig::default()),
        ..Config::default()
    };
    let Ok(mut value) = toml::Value::try_from(&template) else {
        return false;
    };
    for part in parts {
        match value.get(part) {
            Some(v) => value = v.clone(),
            None => return false,
        }
    }
    value.is_str()
}

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn origin_at(&self, offset: usize) -> Origin {
        let (line, column) = line_col(self.text, offset);
        Origin::File {
            path: self.path.to_owned(),
            line,
            column,
        }
    }

    /// The span of the value at `key` (or of its nearest parent present in the file).
    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        let doc = toml_edit::Document::parse(self.text).ok()?;
        let mut item: &toml_edit::Item = doc.as_item();
        let mut best = None;
        let mut parts = key.split('.');
        while let Some(part) = parts.next() {
            // An array entry (`allowed_account_ids.1`): point at the entry itself.
            if let Some(array) = item.as_array() {
                let entry = part.parse::<usize>().ok().and_then(|i| array.get(i))?;
                return if parts.next().is_none() {
                    entry.span().or(best)
                } else {
                    best
                };
            }
            let table = item.as_table_like()?;
            let (k, v) = table.get_key_value(part)?;
            best = v.span().or_else(|| k.span()).or(best);
            item = v;
        }
        best
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, text[line_start..offset].chars().count() + 1)
}

fn locate(key: &str, overrides: &[Override], source: &Source<'_>) -> Origin {
    if let Some(o) = overrides
        .iter()
        .rev()
        .find(|o| key == o.key || key.starts_with(&format!("{}.", o.key)))
    {
        return o.origin.clone();
    }
    let mut probe = key.to_string();
    loop {
        if let Some(span) = source.span_of(&probe) {
            return source.origin_at(span.start);
        }
        match probe.rfind('.') {
            Some(i) => probe.truncate(i),
            None => return Origin::Default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_col(text, text.rfind('=').unwrap()), (2, 4));
    }

    #[test]
    fn scalar_overrides_parse_as_toml_or_string() {
        assert_eq!(parse_scalar("10"), toml::Value::Integer(10));
        assert_eq!(parse_scalar("false"), toml::Value::Boolean(false));
        assert_eq!(
            parse_scalar("eu-west-1"),
            toml::Value::String("eu-west-1".into())
        );
    }

    #[test]
    fn env_overrides_map_double_underscores_to_dots() {
        let o = Override::from_env(vec![
            (
                "XTASK__INVOICES_TABLE__READ_CAPACITY".to_string(),
                "7".to_string(),
            ),
            ("HOME".to_string(), "/root".to_string()),
        ]);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].key, "invoices_table.read_capacity");
    }
}
