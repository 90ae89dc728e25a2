//! The invoice app's resources, derived from one environment's config.

use crate::config::{AutoscalingConfig, BillingMode, Config, ScalingConfig};
use crate::model::*;
use crate::names::Names;

pub const INVOICES_GSI: &str = "CustomerID-Index";

pub const ARTIFACTS_BUCKET: &str = "s3_bucket.artifacts";
pub const PDF_BUCKET: &str = "s3_bucket.pdfs";
pub const INVOICES_TABLE: &str = "dynamodb_table.invoices";
pub const PROCESSED_TABLE: &str = "dynamodb_table.processed";

/// Builds the desired state. `bucket_suffix` is the configured suffix or, by default, the
/// account id, which keeps bucket names globally unique without a random component.
pub fn invoice_app(config: &Config, env: &str, account_id: &str) -> Stack {
    invoice_app_in(config, env, account_id, "us-east-1")
}

/// Like [`invoice_app`], for the region the SDK resolved when the config names none.
pub fn invoice_app_in(config: &Config, env: &str, account_id: &str, region: &str) -> Stack {
    let suffix = if config.buckets.name_suffix.is_empty() {
        account_id
    } else {
        &config.buckets.name_suffix
    };
    let names = Names::new(config, env, suffix);
    let mut tags = config.tags.clone();
    tags.extend(names.ownership_tags());

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
        &mut resources,
        INVOICES_TABLE,
        "invoices",
        &invoices,
        None,
        table_scaling,
    );
    scaling(
        &mut resources,
        INVOICES_TABLE,
        "invoices_gsi",
        &invoices,
        Some(INVOICES_GSI),
        gsi_scaling,
    );

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
        &mut resources,
        PROCESSED_TABLE,
        "processed",
        &processed,
        None,
        processed_scaling,
    );

    let region = if config.region.is_empty() {
        region
    } else {
        config.region.as_str()
    };
    resources.extend(crate::api::resources(
        config, &names, account_id, region, &tags,
    ));

    Stack {
        app: config.app.clone(),
        env: env.into(),
        ownership_tags: names.ownership_tags(),
        resources,
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
