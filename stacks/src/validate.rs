//! Checks of values that parse but that AWS would reject or that make no sense, so they fail
//! here, with the key that holds them, instead of half-way through an apply.

use crate::config::{Architecture, AutoscalingConfig, BillingMode, Config, StreamViewType};
use crate::names;

/// The per-table capacity quota of a default AWS account; larger values need a quota raise.
pub const MAX_CAPACITY: u32 = 40_000;
/// Application Auto Scaling accepts target utilisation between these (percent).
pub const TARGET_RANGE: (f64, f64) = (20.0, 90.0);

/// Returns `(dotted key, message)` for each problem; empty when the config is valid.
pub fn validate(c: &Config) -> Vec<(String, String)> {
    let mut p = Problems::default();
    check_name_part(&mut p, "app", &c.app, 1, 24);
    check_name_part(&mut p, "name_prefix", &c.name_prefix, 0, 16);
    if !c.region.is_empty() && !names::is_region(&c.region) {
        p.push(
            "region",
            format!(
                "`{}` is not an AWS region name; expected e.g. `eu-west-1`",
                c.region
            ),
        );
    }
    for (i, id) in c.allowed_account_ids.iter().enumerate() {
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
            p.push(
                format!("allowed_account_ids.{i}"),
                format!("`{id}` is not an AWS account id (12 digits)"),
            );
        }
    }
    for (k, v) in &c.tags {
        let key = format!("tags.{k}");
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            p.push(&key, "tag keys are 1 to 128 characters, values at most 256");
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            p.push(&key, "the `aws:` prefix is reserved by AWS");
        }
        if names::RESERVED_TAGS.contains(&k.as_str()) {
            p.push(
                &key,
                format!(
                    "`{k}` is set by xtask to prove ownership and cannot be overridden; reserved: {}",
                    names::RESERVED_TAGS.join(", ")
                ),
            );
        }
    }
    if c.tags.len() + names::RESERVED_TAGS.len() > 50 {
        p.push(
            "tags",
            "AWS allows 50 tags per resource, 3 of which xtask sets",
        );
    }
    if let Some(e) = &c.emulator
        && e.port == 0
    {
        p.push("emulator.port", "must be a port number from 1 to 65535");
    }
    let suffix = &c.buckets.name_suffix;
    if !suffix.is_empty() {
        check_name_part(&mut p, "buckets.name_suffix", suffix, 1, 40);
    }
    if c.buckets.noncurrent_version_expiry_days > 36_500 {
        p.push(
            "buckets.noncurrent_version_expiry_days",
            "at most 36500 days (100 years); 0 keeps noncurrent versions forever",
        );
    }
    let t = &c.invoices_table;
    check_table(
        &mut p,
        "invoices_table",
        t.billing_mode,
        (t.read_capacity, t.write_capacity),
        &t.autoscaling,
    );
    check_table(
        &mut p,
        "invoices_table.gsi",
        t.billing_mode,
        (t.gsi.read_capacity, t.gsi.write_capacity),
        &t.gsi.autoscaling,
    );
    let pt = &c.processed_table;
    check_table(
        &mut p,
        "processed_table",
        pt.billing_mode,
        (pt.read_capacity, pt.write_capacity),
        &pt.autoscaling,
    );
    if t.stream_view_type != StreamViewType::NewImage
        && t.stream_view_type != StreamViewType::NewAndOldImages
    {
        p.push(
            "invoices_table.stream_view_type",
            "generate-pdf reads new images from the stream: use NEW_IMAGE or NEW_AND_OLD_IMAGES",
        );
    }
    check_functions(&mut p, c);
    if !(1..=64).contains(&c.deploy.concurrency) {
        p.push("deploy.concurrency", "must be between 1 and 64");
    }
    if !(1..=3600).contains(&c.deploy.wait_timeout_secs) {
        p.push("deploy.wait_timeout_secs", "must be between 1 and 3600");
    }
    check_api(&mut p, &c.api);
    if c.mock_data.enabled && !c.functions.enabled {
        p.push(
            "mock_data.enabled",
            "seeding invokes insert-mock-data, which `functions.enabled = false` does not deploy; turn one of them off",
        );
    }
    p.0
}

fn check_api(p: &mut Problems, a: &crate::config::ApiConfig) {
    let stage_ok = a
        .stage_name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if a.stage_name.is_empty() || a.stage_name.len() > 128 || !stage_ok {
        p.push(
            "api.stage_name",
            "must be 1 to 128 characters of A-Z, a-z, 0-9, `-` and `_`",
        );
    }
    // A MOCK preflight answers one static Access-Control-Allow-Origin; several origins would
    // need code that echoes the caller's origin.
    if a.cors_allowed_origins.len() > 1 {
        p.push(
            "api.cors_allowed_origins",
            "at most one origin (or \"*\"): the preflight answers a single Access-Control-Allow-Origin",
        );
    }
    for (i, o) in a.cors_allowed_origins.iter().enumerate() {
        let ok = o == "*"
            || ((o.starts_with("https://") || o.starts_with("http://"))
                && !o.ends_with('/')
                && !o.contains(char::is_whitespace)
                && !o.contains('\''));
        if !ok {
            p.push(
                format!("api.cors_allowed_origins.{i}"),
                format!(
                    "`{o}` is not an origin: expected `*` or scheme://host[:port] without a path"
                ),
            );
        }
    }
    for (key, t) in [
        ("api.method_throttle", a.method_throttle),
        ("api.usage_plan.throttle", a.usage_plan.throttle),
    ] {
        if !(a_positive(t.rate_limit) && t.rate_limit <= 10_000.0) {
            p.push(
                format!("{key}.rate_limit"),
                "must be greater than 0 and at most 10000 (the account's default limit)",
            );
        }
        if !(1..=5000).contains(&t.burst_limit) {
            p.push(
                format!("{key}.burst_limit"),
                "must be between 1 and 5000 (the account's default limit)",
            );
        }
    }
    if a.usage_plan.quota.limit == 0 {
        p.push("api.usage_plan.quota.limit", "must be at least 1");
    }
    if !LOG_RETENTION_DAYS.contains(&a.access_log_retention_days) {
        p.push(
            "api.access_log_retention_days",
            format!(
                "{} is not a retention CloudWatch Logs accepts; one of {:?}",
                a.access_log_retention_days, LOG_RETENTION_DAYS
            ),
        );
    }
}

fn a_positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// Checks that the names derived from this config are ones AWS accepts, for one environment.
pub fn validate_names(c: &Config, env: &str) -> Vec<(String, String)> {
    let mut p = Problems::default();
    if let Err(e) = names::check_env(env) {
        p.push("", e);
        return p.0;
    }
    // The account id is not known before credentials are resolved; it is always 12 digits.
    let n = names::Names::for_account(c, env, "123456789012");
    for bucket in [n.artifacts_bucket(), n.pdf_bucket()] {
        if let Err(e) = names::check_bucket_name(&bucket) {
            let key = if c.buckets.name_suffix.is_empty() {
                "app"
            } else {
                "buckets.name_suffix"
            };
            p.push(
                key,
                format!("bucket name `{bucket}` would be rejected by S3: {e}"),
            );
        }
    }
    p.0
}

/// The retention values CloudWatch Logs accepts (PutRetentionPolicy).
pub const LOG_RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

fn check_function_values(
    p: &mut Problems,
    key: &str,
    memory: Option<u32>,
    timeout: Option<u32>,
    level: Option<&str>,
) {
    if let Some(m) = memory
        && !(128..=10_240).contains(&m)
    {
        p.push(
            format!("{key}.memory_mb"),
            format!("{m} is out of range; Lambda allows 128 to 10240 MB"),
        );
    }
    if let Some(t) = timeout
        && !(1..=900).contains(&t)
    {
        p.push(
            format!("{key}.timeout_secs"),
            format!("{t} is out of range; Lambda allows 1 to 900 seconds"),
        );
    }
    if let Some(l) = level
        && !LOG_LEVELS.contains(&l)
    {
        p.push(
            format!("{key}.log_level"),
            format!("`{l}` is not one of {}", LOG_LEVELS.join(", ")),
        );
    }
}

fn check_functions(p: &mut Problems, c: &Config) {
    let f = &c.functions;
    check_function_values(
        p,
        "functions",
        Some(f.memory_mb),
        Some(f.timeout_secs),
        Some(&f.log_level),
    );
    if f.architecture != Architecture::X86_64 {
        p.push(
            "functions.architecture",
            "the build produces x86_64 binaries only; use \"x86_64\"",
        );
    }
    if !LOG_RETENTION_DAYS.contains(&f.log_retention_days) {
        p.push(
            "functions.log_retention_days",
            format!(
                "{} is not a retention CloudWatch Logs accepts; use one of {:?}",
                f.log_retention_days, LOG_RETENTION_DAYS
            ),
        );
    }
    if !(1..=100).contains(&f.keep_versions) {
        p.push("functions.keep_versions", "must be between 1 and 100");
    }
    for (name, o) in &f.overrides {
        let key = format!("functions.overrides.{name}");
        if !crate::invoice_app::FUNCTIONS.contains(&name.as_str()) {
            p.push(
                &key,
                format!(
                    "unknown function `{name}`; functions: {}",
                    crate::invoice_app::FUNCTIONS.join(", ")
                ),
            );
        }
        check_function_values(p, &key, o.memory_mb, o.timeout_secs, o.log_level.as_deref());
    }
    let s = &c.stream_trigger;
    if !(1..=10_000).contains(&s.batch_size) {
        p.push(
            "stream_trigger.batch_size",
            format!(
                "{} is out of range; DynamoDB streams allow 1 to 10000",
                s.batch_size
            ),
        );
    }
    if s.batching_window_secs > 300 {
        p.push("stream_trigger.batching_window_secs", "at most 300 seconds");
    }
    if s.max_retries > 10_000 {
        p.push("stream_trigger.max_retries", "at most 10000");
    }
}

#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, msg: impl Into<String>) {
        self.0.push((key.into(), msg.into()));
    }
}

fn check_name_part(p: &mut Problems, key: &str, value: &str, min: usize, max: usize) {
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if value.len() < min || value.len() > max || !ok_chars {
        p.push(
            key,
            format!(
                "`{value}` must be {min} to {max} characters of a-z, 0-9 and `-` (it becomes part of bucket and table names)"
            ),
        );
    }
}

fn check_table(
    p: &mut Problems,
    key: &str,
    billing: BillingMode,
    (read, write): (u32, u32),
    scaling: &AutoscalingConfig,
) {
    match billing {
        BillingMode::PayPerRequest => {
            if scaling.enabled == Some(true) {
                p.push(
                    format!("{key}.autoscaling.enabled"),
                    "autoscaling applies to PROVISIONED billing only; remove it or set billing_mode = \"PROVISIONED\"",
                );
            }
        }
        BillingMode::Provisioned => {
            check_capacity(p, key, read, write, scaling.active(billing));
        }
    }
}

fn check_capacity(
    p: &mut Problems,
    key: &str,
    read: u32,
    write: u32,
    scaling: Option<&AutoscalingConfig>,
) {
    for (name, value) in [("read_capacity", read), ("write_capacity", write)] {
        if !(1..=MAX_CAPACITY).contains(&value) {
            p.push(
                format!("{key}.{name}"),
                format!("{value} is out of range; allowed 1 to {MAX_CAPACITY} capacity units"),
            );
        }
    }
    let Some(s) = scaling else { return };
    for (dim, sc, capacity) in [("read", &s.read, read), ("write", &s.write, write)] {
        let k = format!("{key}.autoscaling.{dim}");
        if !(1..=MAX_CAPACITY).contains(&sc.min) {
            p.push(
                format!("{k}.min"),
                format!("{} is out of range; allowed 1 to {MAX_CAPACITY}", sc.min),
            );
        }
        if !(1..=MAX_CAPACITY).contains(&sc.max) {
            p.push(
                format!("{k}.max"),
                format!("{} is out of range; allowed 1 to {MAX_CAPACITY}", sc.max),
            );
        }
        if sc.min > sc.max {
            p.push(
                format!("{k}.min"),
                format!("min ({}) is greater than max ({})", sc.min, sc.max),
            );
        } else if capacity < sc.min || capacity > sc.max {
            p.push(
                format!("{key}.{dim}_capacity"),
                format!(
                    "{capacity} is outside the autoscaling range {}..={}; start inside it",
                    sc.min, sc.max
                ),
            );
        }
        let (lo, hi) = TARGET_RANGE;
        if !(lo..=hi).contains(&sc.target_utilization) || sc.target_utilization.is_nan() {
            p.push(
                format!("{k}.target_utilization"),
                format!(
                    "{} is outside {lo}..={hi} percent, the range Application Auto Scaling accepts",
                    sc.target_utilization
                ),
            );
        }
        for (n, v) in [
            ("scale_in_cooldown_secs", sc.scale_in_cooldown_secs),
            ("scale_out_cooldown_secs", sc.scale_out_cooldown_secs),
        ] {
            if v > 86_400 {
                p.push(format!("{k}.{n}"), "at most 86400 seconds");
            }
        }
    }
}
