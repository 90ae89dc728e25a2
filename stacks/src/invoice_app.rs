//! The invoice app's resources, derived from one environment's config.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::{AutoscalingConfig, BillingMode, Config, ScalingConfig};
use crate::functions::{APP_FUNCTIONS, AppFunction, On};
use crate::model::*;
use crate::names::Names;

/// The app's functions are described in [`crate::functions`]; these are derived there.
pub use crate::functions::{FUNCTIONS, SEED_FUNCTION, STREAM_FUNCTION};

pub const INVOICES_GSI: &str = "CustomerID-Index";

pub const ARTIFACTS_BUCKET: &str = "s3_bucket.artifacts";
pub const PDF_BUCKET: &str = "s3_bucket.pdfs";
pub const INVOICES_TABLE: &str = "dynamodb_table.invoices";
pub const PROCESSED_TABLE: &str = "dynamodb_table.processed";

/// The alias every function's callers use; not `latest`, which reads too much like `$LATEST`.
pub const ALIAS: &str = "live";
pub const RUNTIME: &str = "provided.al2023";
pub const HANDLER: &str = "bootstrap";
pub const INLINE_POLICY_NAME: &str = "least-privilege";

/// Where the stack is deployed: what ARNs are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub env: &'a str,
    pub account_id: &'a str,
    pub region: &'a str,
}

/// Resource ids of a function's resources.
pub fn function_id(function: &str) -> String {
    format!("lambda_function.{}", function.replace('-', "_"))
}
pub fn role_id(function: &str) -> String {
    format!("iam_role.{}", function.replace('-', "_"))
}
pub fn log_group_id(function: &str) -> String {
    format!("log_group.{}", function.replace('-', "_"))
}
pub fn artifact_id(function: &str) -> String {
    format!("s3_object.{}_code", function.replace('-', "_"))
}
/// The event source mapping feeding the invoices stream to [`STREAM_FUNCTION`].
pub const STREAM_MAPPING: &str = "event_source_mapping.generate_pdf_invoices_stream";
/// The seed step: insert-mock-data's sample invoices in the invoices table.
pub const SEED: &str = "seed.mock_invoices";
/// What the seed function writes (see its crate's `COUNT` and `CUSTOMERS`).
pub const SEED_INVOICES: u32 = 100;
pub const SEED_CUSTOMERS: u32 = 10;

/// The content-addressed key of a function's zip in the artifacts bucket.
pub fn artifact_key(function: &str, sha256_hex: &str) -> String {
    format!("functions/{function}/{sha256_hex}.zip")
}

/// The ARNs the functions' policies name, all derivable before anything exists.
#[derive(Debug, Clone)]
pub struct Arns {
    pub invoices_table: String,
    pub invoices_gsi: String,
    /// The stream's own ARN carries a creation timestamp nobody can predict; every stream
    /// the table ever has lives under this prefix.
    pub invoices_streams: String,
    pub processed_table: String,
    pub pdf_objects: String,
    /// Per function: the streams of its own log group (which the deployer creates, so the
    /// role needs no `logs:CreateLogGroup`). Replaces AWSLambdaBasicExecutionRole, whose
    /// logs grants are on `*`.
    pub log_streams: BTreeMap<&'static str, String>,
}

impl Arns {
    pub fn new(names: &Names, region: &str, account_id: &str) -> Arns {
        let p = crate::names::partition(region);
        let table = |n: String| crate::names::table_arn(region, account_id, &n);
        let invoices_table = table(names.invoices_table());
        Arns {
            invoices_gsi: format!("{invoices_table}/index/{INVOICES_GSI}"),
            invoices_streams: format!("{invoices_table}/stream/*"),
            invoices_table,
            processed_table: table(names.processed_table()),
            pdf_objects: format!("arn:{p}:s3:::{}/*", names.pdf_bucket()),
            log_streams: FUNCTIONS
                .into_iter()
                .map(|f| {
                    let group = names.function_log_group(f);
                    (
                        f,
                        format!(
                            "{}:*",
                            crate::names::log_group_arn(region, account_id, &group)
                        ),
                    )
                })
                .collect(),
        }
    }

    /// The ARN a grant names.
    pub fn of(&self, on: On) -> String {
        match on {
            On::InvoicesTable => self.invoices_table.clone(),
            On::InvoicesGsi => self.invoices_gsi.clone(),
            On::InvoicesStreams => self.invoices_streams.clone(),
            On::ProcessedTable => self.processed_table.clone(),
            On::PdfObjects => self.pdf_objects.clone(),
            On::Any => "*".to_string(),
        }
    }
}

/// The least-privilege inline policy of one function: `(actions, resources)` per statement,
/// exactly what its handler calls (its [`AppFunction::grants`]), on exactly the ARNs it
/// touches, plus writing to its own log group. `None` for an unknown name.
pub fn function_permissions(
    function: &str,
    a: &Arns,
) -> Option<Vec<(Vec<&'static str>, Vec<String>)>> {
    let f = crate::functions::get(function)?;
    let logs = (
        vec!["logs:CreateLogStream", "logs:PutLogEvents"],
        vec![a.log_streams.get(function)?.clone()],
    );
    let mut statements: Vec<_> = f
        .grants
        .iter()
        .map(|g| (g.actions.to_vec(), vec![a.of(g.on)]))
        .collect();
    statements.push(logs);
    Some(statements)
}

/// [`function_permissions`] as an IAM policy document.
pub fn function_policy(function: &str, arns: &Arns) -> Option<Value> {
    let statements: Vec<Value> = function_permissions(function, arns)?
        .into_iter()
        .map(|(actions, resources)| {
            json!({"Effect": "Allow", "Action": actions, "Resource": resources})
        })
        .collect();
    Some(json!({"Version": "2012-10-17", "Statement": statements}))
}

/// The environment variables a function's handler reads.
pub fn function_environment(
    function: &AppFunction,
    names: &Names,
    log_level: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([("LOG_LEVEL".to_string(), log_level.to_string())]);
    for var in function.env {
        env.insert(var.name().into(), var.value(names));
    }
    env
}

/// Builds the desired state. Bucket names end with the configured suffix or, by default, the
/// account id, which keeps them globally unique without a random component. `code` maps a
/// function name to its built zip; a function without one gets an empty code reference, which
/// is fine for plans that delete it and refused by the deployer for anything else.
pub fn invoice_app(config: &Config, target: &Target<'_>, code: &BTreeMap<String, Code>) -> Stack {
    let (env, account_id) = (target.env, target.account_id);
    let names = Names::for_account(config, env, account_id);
    let mut tags = config.tags.clone();
    tags.extend(names.ownership_tags());

    let mut resources = buckets(config, &names, &tags);
    invoices_table(&mut resources, config, &names, &tags);
    processed_table(&mut resources, config, &names, &tags);
    functions(&mut resources, config, target, &names, &tags, code);
    if config.mock_data.enabled && config.functions.enabled {
        resources.push(seed(&names));
    }
    resources.extend(crate::api::resources(
        config,
        &names,
        account_id,
        target.region,
        &tags,
    ));

    Stack {
        app: config.app.clone(),
        env: env.into(),
        ownership_tags: names.ownership_tags(),
        resources,
    }
}

/// The artifacts and PDF buckets: versioned, encrypted, private.
fn buckets(config: &Config, names: &Names, tags: &BTreeMap<String, String>) -> Vec<Resource> {
    let mut resources = Vec::new();
    for (id, name) in [
        (ARTIFACTS_BUCKET, names.artifacts_bucket()),
        (PDF_BUCKET, names.pdf_bucket()),
    ] {
        resources.push(Resource {
            id: id.into(),
            depends_on: vec![],
            ensure: Ensure::Present,
            spec: Spec::Bucket(BucketSpec {
                name,
                versioning: true,
                encryption: config.buckets.encryption,
                block_public_access: true,
                owner_enforced: true,
                noncurrent_version_expiry_days: match config.buckets.noncurrent_version_expiry_days
                {
                    0 => None,
                    d => Some(d),
                },
                tls_only: config.buckets.tls_only,
                tags: tags.clone(),
            }),
        });
    }
    resources
}

/// The invoices table with its customer index and stream, and their capacity scaling.
fn invoices_table(
    resources: &mut Vec<Resource>,
    config: &Config,
    names: &Names,
    tags: &BTreeMap<String, String>,
) {
    let invoices = names.invoices_table();
    let t = &config.invoices_table;
    let table_scaling = t.autoscaling.active(t.billing_mode);
    let gsi_scaling = t.gsi.autoscaling.active(t.billing_mode);
    resources.push(Resource {
        id: INVOICES_TABLE.into(),
        depends_on: vec![],
        ensure: Ensure::Present,
        spec: Spec::Table(TableSpec {
            name: invoices.clone(),
            hash_key: KeyAttr::string("InvoiceID"),
            range_key: Some(KeyAttr::string("CustomerID")),
            billing: billing(
                t.billing_mode,
                t.read_capacity,
                t.write_capacity,
                table_scaling,
            ),
            gsis: vec![GsiSpec {
                name: INVOICES_GSI.into(),
                hash_key: KeyAttr::string("CustomerID"),
                range_key: None,
                projection_all: true,
                capacity: match t.billing_mode {
                    BillingMode::Provisioned => Some(capacity(
                        t.gsi.read_capacity,
                        t.gsi.write_capacity,
                        gsi_scaling,
                    )),
                    BillingMode::PayPerRequest => None,
                },
            }],
            stream: Some(t.stream_view_type),
            sse_kms: true,
            point_in_time_recovery: t.point_in_time_recovery,
            deletion_protection: t.deletion_protection,
            tags: tags.clone(),
        }),
    });
    scaling(
        resources,
        INVOICES_TABLE,
        "invoices",
        &invoices,
        None,
        table_scaling,
    );
    scaling(
        resources,
        INVOICES_TABLE,
        "invoices_gsi",
        &invoices,
        Some(INVOICES_GSI),
        gsi_scaling,
    );
}

/// The processed-invoices table (which PDFs exist) and its capacity scaling.
fn processed_table(
    resources: &mut Vec<Resource>,
    config: &Config,
    names: &Names,
    tags: &BTreeMap<String, String>,
) {
    let processed = names.processed_table();
    let p = &config.processed_table;
    let processed_scaling = p.autoscaling.active(p.billing_mode);
    resources.push(Resource {
        id: PROCESSED_TABLE.into(),
        depends_on: vec![],
        ensure: Ensure::Present,
        spec: Spec::Table(TableSpec {
            name: processed.clone(),
            hash_key: KeyAttr::string("InvoiceID"),
            range_key: None,
            billing: billing(
                p.billing_mode,
                p.read_capacity,
                p.write_capacity,
                processed_scaling,
            ),
            gsis: vec![],
            stream: None,
            sse_kms: true,
            point_in_time_recovery: p.point_in_time_recovery,
            deletion_protection: p.deletion_protection,
            tags: tags.clone(),
        }),
    });
    scaling(
        resources,
        PROCESSED_TABLE,
        "processed",
        &processed,
        None,
        processed_scaling,
    );
}

/// The seed step, after the table, the seeding function's alias and permissions, and the
/// stream trigger (so that, on AWS, the sample invoices get their PDFs as any insert does).
/// Invoked through Lambda unless the deployer knows the environment cannot run functions;
/// then this machine runs the function's artifact, found in the artifacts bucket, so the seed
/// waits for its upload too (a function whose zip goes with the call no longer does).
fn seed(names: &Names) -> Resource {
    let function = names.function(SEED_FUNCTION);
    let table = names.invoices_table();
    Resource {
        id: SEED.into(),
        depends_on: vec![
            INVOICES_TABLE.into(),
            role_id(SEED_FUNCTION),
            function_id(SEED_FUNCTION),
            artifact_id(SEED_FUNCTION),
            STREAM_MAPPING.into(),
        ],
        ensure: Ensure::Present,
        spec: Spec::Seed(SeedSpec {
            name: format!("{function}:{ALIAS} -> {table}"),
            table_name: table,
            function_name: function,
            alias: ALIAS.into(),
            artifacts_bucket: names.artifacts_bucket(),
            invoices: SEED_INVOICES,
            customers: SEED_CUSTOMERS,
            invoke: SeedInvoke::Lambda,
        }),
    }
}

fn billing(
    mode: BillingMode,
    read: u32,
    write: u32,
    scaling: Option<&AutoscalingConfig>,
) -> Billing {
    match mode {
        BillingMode::Provisioned => Billing::Provisioned(capacity(read, write, scaling)),
        BillingMode::PayPerRequest => Billing::PayPerRequest,
    }
}

fn capacity(read: u32, write: u32, scaling: Option<&AutoscalingConfig>) -> Capacity {
    Capacity {
        read,
        write,
        read_range: scaling.map(|s| (s.read.min, s.read.max)),
        write_range: scaling.map(|s| (s.write.min, s.write.max)),
    }
}

/// Scalable targets and target-tracking policies for read and write capacity of a table or
/// index; always emitted, absent when autoscaling is off, so switching it off deletes them.
fn scaling(
    out: &mut Vec<Resource>,
    table_id: &str,
    label: &str,
    table: &str,
    index: Option<&str>,
    cfg: Option<&AutoscalingConfig>,
) {
    let ensure = if cfg.is_some() {
        Ensure::Present
    } else {
        Ensure::Absent
    };
    let (resource_id, scope, policy_base) = match index {
        Some(ix) => (
            format!("table/{table}/index/{ix}"),
            "index",
            format!("{table}-{ix}"),
        ),
        None => (format!("table/{table}"), "table", table.to_string()),
    };
    let default = ScalingConfig::default();
    for (dim, unit, metric) in [
        (
            "read",
            "ReadCapacityUnits",
            "DynamoDBReadCapacityUtilization",
        ),
        (
            "write",
            "WriteCapacityUnits",
            "DynamoDBWriteCapacityUtilization",
        ),
    ] {
        let sc = cfg
            .map(|c| if dim == "read" { &c.read } else { &c.write })
            .unwrap_or(&default);
        let dimension = format!("dynamodb:{scope}:{unit}");
        let target_id = format!("scalable_target.{label}_{dim}");
        out.push(Resource {
            id: target_id.clone(),
            depends_on: vec![table_id.into()],
            ensure,
            spec: Spec::ScalableTarget(ScalableTargetSpec {
                resource_id: resource_id.clone(),
                dimension: dimension.clone(),
                min: sc.min,
                max: sc.max,
            }),
        });
        out.push(Resource {
            id: format!("scaling_policy.{label}_{dim}"),
            depends_on: vec![target_id],
            ensure,
            spec: Spec::ScalingPolicy(ScalingPolicySpec {
                name: format!("{policy_base}-{dim}-capacity-tracking"),
                resource_id: resource_id.clone(),
                dimension,
                metric: metric.into(),
                target_value: sc.target_utilization,
                scale_in_cooldown_secs: sc.scale_in_cooldown_secs,
                scale_out_cooldown_secs: sc.scale_out_cooldown_secs,
            }),
        });
    }
}

/// What every function's resources share.
struct Shared<'a> {
    config: &'a Config,
    names: &'a Names,
    tags: &'a BTreeMap<String, String>,
    ensure: Ensure,
    arns: Arns,
    role_arn_prefix: String,
    artifacts_bucket: String,
}

/// Role, log group, artifact and function per function, and the stream trigger.
fn functions(
    out: &mut Vec<Resource>,
    config: &Config,
    target: &Target<'_>,
    names: &Names,
    tags: &BTreeMap<String, String>,
    code: &BTreeMap<String, Code>,
) {
    let ensure = if config.functions.enabled {
        Ensure::Present
    } else {
        Ensure::Absent
    };
    let partition = crate::names::partition(target.region);
    let shared = Shared {
        config,
        names,
        tags,
        ensure,
        arns: Arns::new(names, target.region, target.account_id),
        role_arn_prefix: format!("arn:{partition}:iam::{}:role/", target.account_id),
        artifacts_bucket: names.artifacts_bucket(),
    };
    for function in APP_FUNCTIONS {
        let c = code.get(function.name).cloned().unwrap_or(Code {
            zip_path: Default::default(),
            size_bytes: 0,
            sha256_hex: String::new(),
            sha256_b64: String::new(),
        });
        function_resources(out, function, &shared, c);
    }
    out.push(stream_mapping(config, names, ensure));
}

/// One function's role, log group, artifact and function (with its alias).
fn function_resources(out: &mut Vec<Resource>, function: &AppFunction, s: &Shared<'_>, c: Code) {
    let (f, names, name) = (&s.config.functions, s.names, function.name);
    let o = f.overrides.get(name).cloned().unwrap_or_default();
    let log_level = o.log_level.unwrap_or_else(|| f.log_level.clone());
    let role = names.function_role(name);
    let key = artifact_key(name, &c.sha256_hex);
    out.push(Resource {
        id: role_id(name),
        depends_on: vec![],
        ensure: s.ensure,
        spec: Spec::Role(RoleSpec {
            name: role.clone(),
            service: "lambda.amazonaws.com".into(),
            // Logging is in the inline policy, scoped to the function's log group.
            managed_policy_arns: vec![],
            inline_policy_name: INLINE_POLICY_NAME.into(),
            inline_policy: function_policy(name, &s.arns).expect("a known function"),
            tags: s.tags.clone(),
        }),
    });
    out.push(Resource {
        id: log_group_id(name),
        depends_on: vec![],
        ensure: s.ensure,
        spec: Spec::LogGroup(LogGroupSpec {
            name: names.function_log_group(name),
            retention_days: f.log_retention_days,
            tags: s.tags.clone(),
        }),
    });
    out.push(Resource {
        id: artifact_id(name),
        depends_on: vec![ARTIFACTS_BUCKET.into()],
        ensure: s.ensure,
        spec: Spec::Object(ObjectSpec {
            bucket: s.artifacts_bucket.clone(),
            key: key.clone(),
            source: c.zip_path.clone(),
            sha256_b64: c.sha256_b64.clone(),
        }),
    });
    // A zip Lambda takes with the call does not wait for its upload to S3.
    let direct = c.size_bytes <= DIRECT_UPLOAD_LIMIT && !c.zip_path.as_os_str().is_empty();
    let code_zip = direct.then(|| c.zip_path.clone());
    let mut depends_on = vec![role_id(name), log_group_id(name)];
    if code_zip.is_none() {
        depends_on.push(artifact_id(name));
    }
    out.push(Resource {
        id: function_id(name),
        // The log group first, so Lambda never creates it itself without retention.
        depends_on,
        ensure: s.ensure,
        spec: Spec::Function(FunctionSpec {
            name: names.function(name),
            role_arn: format!("{}{role}", s.role_arn_prefix),
            runtime: RUNTIME.into(),
            handler: HANDLER.into(),
            architecture: f.architecture.as_str().into(),
            memory_mb: o.memory_mb.unwrap_or(f.memory_mb),
            timeout_secs: o.timeout_secs.unwrap_or(f.timeout_secs),
            environment: function_environment(function, names, &log_level),
            code_bucket: s.artifacts_bucket.clone(),
            code_key: key,
            code_zip,
            code_sha256_hex: c.sha256_hex,
            code_sha256_b64: c.sha256_b64,
            alias: ALIAS.into(),
            keep_versions: f.keep_versions,
            tags: s.tags.clone(),
        }),
    });
}

/// The invoices table's stream triggering [`STREAM_FUNCTION`]'s alias.
fn stream_mapping(config: &Config, names: &Names, ensure: Ensure) -> Resource {
    let s = &config.stream_trigger;
    let function = names.function(STREAM_FUNCTION);
    Resource {
        id: STREAM_MAPPING.into(),
        depends_on: vec![INVOICES_TABLE.into(), function_id(STREAM_FUNCTION)],
        ensure,
        spec: Spec::EventSourceMapping(EventSourceMappingSpec {
            name: format!("{} -> {function}:{ALIAS}", names.invoices_table()),
            table_name: names.invoices_table(),
            stream_view_type: config.invoices_table.stream_view_type.as_str().into(),
            function_name: function,
            alias: ALIAS.into(),
            starting_position: s.starting_position.as_str().into(),
            batch_size: s.batch_size,
            batching_window_secs: s.batching_window_secs,
            bisect_on_error: s.bisect_on_error,
            max_retries: s.max_retries,
            report_batch_item_failures: s.report_batch_item_failures,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arns() -> Arns {
        let c = Config::default();
        Arns::new(
            &Names::new(&c, "dev", "123456789012"),
            "eu-west-1",
            "123456789012",
        )
    }

    /// `(action, resource)` pairs of a policy document, for exact comparison.
    fn grants(policy: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in policy["Statement"].as_array().unwrap() {
            assert_eq!(s["Effect"], "Allow");
            for a in s["Action"].as_array().unwrap() {
                for r in s["Resource"].as_array().unwrap() {
                    out.push((a.as_str().unwrap().into(), r.as_str().unwrap().into()));
                }
            }
        }
        out.sort();
        out
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = list
            .iter()
            .map(|(a, r)| (a.to_string(), r.to_string()))
            .collect();
        v.sort();
        v
    }

    const INVOICES: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/invoices-table-dev";
    const PROCESSED: &str =
        "arn:aws:dynamodb:eu-west-1:123456789012:table/processed-invoices-table-dev";
    const PDFS: &str = "arn:aws:s3:::invoice-app-pdfs-dev-123456789012/*";

    /// The two logging grants on a function's own log group streams.
    fn logs(function: &str) -> [(String, String); 2] {
        let arn =
            format!("arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/{function}-dev:*");
        [
            ("logs:CreateLogStream".into(), arn.clone()),
            ("logs:PutLogEvents".into(), arn),
        ]
    }

    /// `pairs` plus the function's logging grants.
    fn with_logs(function: &str, list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v = pairs(list);
        v.extend(logs(function));
        v.sort();
        v
    }

    #[test]
    fn each_function_gets_exactly_its_actions_on_exact_arns() {
        let a = arns();
        let p = |f| grants(&function_policy(f, &a).unwrap());
        assert_eq!(
            p("insert-invoice"),
            with_logs(
                "insert-invoice",
                &[("dynamodb:PutItem", INVOICES), ("dynamodb:Query", INVOICES)]
            )
        );
        let gsi = format!("{INVOICES}/index/CustomerID-Index");
        assert_eq!(
            p("list-invoices"),
            with_logs("list-invoices", &[("dynamodb:Query", &gsi)])
        );
        let streams = format!("{INVOICES}/stream/*");
        assert_eq!(
            p("generate-pdf"),
            with_logs(
                "generate-pdf",
                &[
                    ("dynamodb:DescribeStream", &streams),
                    ("dynamodb:GetRecords", &streams),
                    ("dynamodb:GetShardIterator", &streams),
                    ("dynamodb:ListStreams", "*"),
                    ("s3:PutObject", PDFS),
                    ("dynamodb:PutItem", PROCESSED),
                ]
            )
        );
        assert_eq!(
            p("download-pdf"),
            with_logs(
                "download-pdf",
                &[
                    ("dynamodb:GetItem", PROCESSED),
                    ("dynamodb:Query", INVOICES),
                    ("s3:GetObject", PDFS),
                ]
            )
        );
        assert_eq!(
            p("insert-mock-data"),
            with_logs(
                "insert-mock-data",
                &[("dynamodb:PutItem", INVOICES), ("dynamodb:Query", INVOICES)]
            )
        );
        assert!(function_policy("unknown", &a).is_none());
    }

    #[test]
    fn list_streams_alone_is_granted_on_every_resource() {
        // IAM accepts only `*` for ListStreams: it must not share a statement with actions
        // that are scoped to the stream.
        let policy = function_policy("generate-pdf", &arns()).unwrap();
        let statements = policy["Statement"].as_array().unwrap();
        let with_list_streams: Vec<&Value> = statements
            .iter()
            .filter(|s| {
                s["Action"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("dynamodb:ListStreams"))
            })
            .collect();
        assert_eq!(
            with_list_streams,
            [&json!({"Effect": "Allow", "Action": ["dynamodb:ListStreams"], "Resource": ["*"]})]
        );
    }

    #[test]
    fn no_policy_has_a_wildcard_action_or_a_bare_wildcard_resource() {
        let a = arns();
        for f in FUNCTIONS {
            for (action, resource) in grants(&function_policy(f, &a).unwrap()) {
                assert!(!action.contains('*'), "{f}: {action}");
                if action == "dynamodb:ListStreams" {
                    continue;
                }
                assert!(resource.starts_with("arn:aws:"), "{f}: {resource}");
                assert_ne!(resource, "*");
                // Only the object, stream and log stream suffixes may end in a wildcard.
                if resource.ends_with('*') {
                    assert!(
                        resource.ends_with("/stream/*")
                            || resource.ends_with("-123456789012/*")
                            || resource.ends_with(&format!("/aws/lambda/{f}-dev:*")),
                        "{f}: {resource}"
                    );
                }
            }
        }
    }

    #[test]
    fn arns_follow_the_region_partition() {
        let c = Config::default();
        let a = Arns::new(&Names::new(&c, "dev", "x"), "cn-north-1", "123456789012");
        assert!(
            a.invoices_table
                .starts_with("arn:aws-cn:dynamodb:cn-north-1:")
        );
        assert!(a.pdf_objects.starts_with("arn:aws-cn:s3:::"));
    }
}
