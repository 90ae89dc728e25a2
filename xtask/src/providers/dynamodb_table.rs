//! DynamoDB tables: key schema, billing and capacity, global secondary indexes, stream,
//! server-side encryption, point-in-time recovery, deletion protection and tags.
//!
//! AWS rules this module follows: a new table is CREATING before ACTIVE, and PITR can only be
//! enabled once it is ACTIVE; UpdateTable takes one index change at a time and refuses changes
//! while the table or an index is updating; a stream's view type cannot be changed in place
//! (disable, then enable). Capacity that autoscaling moved within its range is not drift.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_table::DeleteTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::operation::update_continuous_backups::UpdateContinuousBackupsError;
use aws_sdk_dynamodb::operation::update_table::UpdateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction,
    DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate,
    IndexStatus, KeySchemaElement, KeyType, PointInTimeRecoverySpecification, Projection,
    ProjectionType, ProvisionedThroughput, ScalarAttributeType, SseSpecification, SseType,
    StreamSpecification, StreamViewType as SdkView, TableDescription, TableStatus, Tag,
    UpdateGlobalSecondaryIndexAction,
};
use serde_json::Value;
use stacks::{AttrType, Billing, GsiSpec, KeyAttr, TableSpec};

use crate::engine::retry::{Backoff, retry, wait_until};
use crate::engine::{Ctx, Diff, Provider};

pub struct DynamoDbTable;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedGsi {
    pub name: String,
    pub hash_key: Option<KeyAttr>,
    pub range_key: Option<KeyAttr>,
    pub projection_all: bool,
    pub read: u32,
    pub write: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedTable {
    pub name: String,
    pub arn: String,
    pub hash_key: Option<KeyAttr>,
    pub range_key: Option<KeyAttr>,
    pub pay_per_request: bool,
    pub read: u32,
    pub write: u32,
    pub gsis: Vec<ObservedGsi>,
    pub stream: Option<String>,
    pub sse_kms: bool,
    pub point_in_time_recovery: bool,
    pub deletion_protection: bool,
    pub tags: BTreeMap<String, String>,
}

fn attr_type(t: &ScalarAttributeType) -> AttrType {
    match t {
        ScalarAttributeType::N => AttrType::N,
        ScalarAttributeType::B => AttrType::B,
        _ => AttrType::S,
    }
}

fn sdk_attr_type(t: AttrType) -> ScalarAttributeType {
    match t {
        AttrType::S => ScalarAttributeType::S,
        AttrType::N => ScalarAttributeType::N,
        AttrType::B => ScalarAttributeType::B,
    }
}

/// Splits a key schema into hash and range keys with their attribute types.
fn keys(
    schema: &[KeySchemaElement],
    defs: &[AttributeDefinition],
) -> (Option<KeyAttr>, Option<KeyAttr>) {
    let find = |kt: KeyType| {
        schema
            .iter()
            .find(|k| k.key_type() == &kt)
            .map(|k| KeyAttr {
                name: k.attribute_name().to_string(),
                attr_type: defs
                    .iter()
                    .find(|d| d.attribute_name() == k.attribute_name())
                    .map(|d| attr_type(d.attribute_type()))
                    .unwrap_or(AttrType::S),
            })
    };
    (find(KeyType::Hash), find(KeyType::Range))
}

fn observe(t: &TableDescription) -> ObservedTable {
    let defs = t.attribute_definitions();
    let (hash_key, range_key) = keys(t.key_schema(), defs);
    let pay_per_request = t
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .is_some_and(|m| m == &BillingMode::PayPerRequest);
    let (read, write) = t
        .provisioned_throughput()
        .map(|p| {
            (
                p.read_capacity_units().unwrap_or(0) as u32,
                p.write_capacity_units().unwrap_or(0) as u32,
            )
        })
        .unwrap_or((0, 0));
    let gsis = t
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            let (h, r) = keys(g.key_schema(), defs);
            ObservedGsi {
                name: g.index_name().unwrap_or_default().to_string(),
                hash_key: h,
                range_key: r,
                projection_all: g
                    .projection()
                    .and_then(|p| p.projection_type())
                    .is_some_and(|p| p == &ProjectionType::All),
                read: g
                    .provisioned_throughput()
                    .and_then(|p| p.read_capacity_units())
                    .unwrap_or(0) as u32,
                write: g
                    .provisioned_throughput()
                    .and_then(|p| p.write_capacity_units())
                    .unwrap_or(0) as u32,
            }
        })
        .collect();
    let stream = t
        .stream_specification()
        .filter(|s| s.stream_enabled())
        .and_then(|s| s.stream_view_type())
        .map(|v| v.as_str().to_string());
    let sse_kms = t
        .sse_description()
        .is_some_and(|s| s.sse_type() == Some(&SseType::Kms));
    ObservedTable {
        name: t.table_name().unwrap_or_default().to_string(),
        arn: t.table_arn().unwrap_or_default().to_string(),
        hash_key,
        range_key,
        pay_per_request,
        read,
        write,
        gsis,
        stream,
        sse_kms,
        point_in_time_recovery: false,
        deletion_protection: t.deletion_protection_enabled().unwrap_or(false),
        tags: BTreeMap::new(),
    }
}

/// The capacity a provisioned table or index should have, given what it has now: the spec's
/// value, or under autoscaling the live value clamped into the range (the least disruptive
/// change, and where autoscaling itself would take it).
fn wanted(desired: u32, range: Option<(u32, u32)>, live: u32) -> u32 {
    match range {
        Some((min, max)) => live.clamp(min, max),
        None => desired,
    }
}

fn billing_name(pay_per_request: bool) -> &'static str {
    if pay_per_request {
        "PAY_PER_REQUEST"
    } else {
        "PROVISIONED"
    }
}

/// `InvoiceID (S)`: how plans show a key attribute.
fn key_str(k: &KeyAttr) -> String {
    format!("{} ({})", k.name, k.attr_type.as_str())
}

fn opt_key_str(k: Option<&KeyAttr>) -> Option<String> {
    k.map(key_str)
}

/// One line describing an index, for plans.
fn gsi_str(g: &GsiSpec) -> String {
    let mut out = format!("hash {}", key_str(&g.hash_key));
    if let Some(r) = &g.range_key {
        out.push_str(&format!(", range {}", key_str(r)));
    }
    out.push_str(if g.projection_all {
        ", projection ALL"
    } else {
        ", projection KEYS_ONLY"
    });
    if let Some(c) = g.capacity {
        out.push_str(&format!(", capacity {}/{}", c.read, c.write));
        if let (Some((rl, rh)), Some((wl, wh))) = (c.read_range, c.write_range) {
            out.push_str(&format!(" (autoscaled read {rl}..{rh}, write {wl}..{wh})"));
        }
    }
    out
}

/// What a table's diff compares. Each global secondary index has fields of its own, named by
/// the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableField {
    HashKey,
    RangeKey,
    BillingMode,
    ReadCapacity,
    WriteCapacity,
    /// An index the spec adds or drops.
    Gsi(String),
    /// An index whose keys or projection differ: it is dropped and rebuilt.
    GsiKeys(String),
    GsiReadCapacity(String),
    GsiWriteCapacity(String),
    Stream,
    SseKms,
    PointInTimeRecovery,
    DeletionProtection,
    Tags,
}

impl std::fmt::Display for TableField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableField::HashKey => f.write_str("hash_key"),
            TableField::RangeKey => f.write_str("range_key"),
            TableField::BillingMode => f.write_str("billing_mode"),
            TableField::ReadCapacity => f.write_str("read_capacity"),
            TableField::WriteCapacity => f.write_str("write_capacity"),
            TableField::Gsi(name) => write!(f, "gsi.{name}"),
            TableField::GsiKeys(name) => write!(f, "gsi.{name}.keys"),
            TableField::GsiReadCapacity(name) => write!(f, "gsi.{name}.read_capacity"),
            TableField::GsiWriteCapacity(name) => write!(f, "gsi.{name}.write_capacity"),
            TableField::Stream => f.write_str("stream"),
            TableField::SseKms => f.write_str("sse_kms"),
            TableField::PointInTimeRecovery => f.write_str("point_in_time_recovery"),
            TableField::DeletionProtection => f.write_str("deletion_protection"),
            TableField::Tags => f.write_str("tags"),
        }
    }
}

#[async_trait]
impl Provider for DynamoDbTable {
    type Spec = TableSpec;
    type Observed = ObservedTable;
    type Field = TableField;
    const KIND: &'static str = "dynamodb_table";
    const CREATE_CONVERGES: bool = true;
    const ROUND_TRIPS: u32 = 3;

    async fn read(&self, ctx: &Ctx, spec: &TableSpec) -> Result<Option<ObservedTable>> {
        // The tags and the backup settings go out with DescribeTable, by the ARN AWS gives
        // every table: for a table that exists that saves a round-trip, for one that does not
        // their answers are dropped.
        let db = &ctx.aws.dynamodb;
        let arn = stacks::names::table_arn(&ctx.region, &ctx.account_id, &spec.name);
        let (t, tags, backups) = tokio::join!(
            describe_once(ctx, &spec.name),
            db.list_tags_of_resource().resource_arn(&arn).send(),
            db.describe_continuous_backups()
                .table_name(&spec.name)
                .send()
        );
        let Some(t) = t? else {
            return Ok(None);
        };
        if t.table_status() == Some(&TableStatus::Deleting) {
            // A table on its way out is as good as gone, once it is.
            wait_gone(ctx, &spec.name).await?;
            return Ok(None);
        }
        let mut o = observe(&t);
        o.tags = tags
            .context("ListTagsOfResource")?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        o.point_in_time_recovery = backups
            .context("DescribeContinuousBackups")?
            .continuous_backups_description()
            .and_then(|c| c.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status())
            .is_some_and(|s| s.as_str() == "ENABLED");
        Ok(Some(o))
    }

    fn tags(o: &ObservedTable) -> Option<&BTreeMap<String, String>> {
        Some(&o.tags)
    }

    fn describe(spec: &TableSpec) -> Diff<TableField> {
        let mut d = Diff::default();
        let none = Value::Null;
        d.push(TableField::HashKey, &none, &key_str(&spec.hash_key), false);
        if let Some(r) = &spec.range_key {
            d.push(TableField::RangeKey, &none, &key_str(r), false);
        }
        match spec.billing {
            Billing::PayPerRequest => {
                d.push(TableField::BillingMode, &none, &"PAY_PER_REQUEST", false)
            }
            Billing::Provisioned(c) => {
                d.push(TableField::BillingMode, &none, &"PROVISIONED", false);
                d.push(TableField::ReadCapacity, &none, &c.read, false);
                d.push(TableField::WriteCapacity, &none, &c.write, false);
            }
        }
        for g in &spec.gsis {
            d.push(TableField::Gsi(g.name.clone()), &none, &gsi_str(g), false);
        }
        d.push(
            TableField::Stream,
            &none,
            &spec.stream.map(|s| s.as_str()),
            false,
        );
        d.push(TableField::SseKms, &none, &spec.sse_kms, false);
        d.push(
            TableField::PointInTimeRecovery,
            &none,
            &spec.point_in_time_recovery,
            false,
        );
        d.push(
            TableField::DeletionProtection,
            &none,
            &spec.deletion_protection,
            false,
        );
        d.push(TableField::Tags, &none, &spec.tags, false);
        d
    }

    fn diff(spec: &TableSpec, o: &ObservedTable) -> Diff<TableField> {
        let mut d = Diff::default();
        d.replace_field(
            TableField::HashKey,
            opt_key_str(Some(&spec.hash_key)),
            opt_key_str(o.hash_key.as_ref()),
        );
        d.replace_field(
            TableField::RangeKey,
            opt_key_str(spec.range_key.as_ref()),
            opt_key_str(o.range_key.as_ref()),
        );
        let want_ppr = spec.billing == Billing::PayPerRequest;
        d.field(
            TableField::BillingMode,
            billing_name(want_ppr),
            billing_name(o.pay_per_request),
        );
        if let Billing::Provisioned(c) = spec.billing {
            let (r, w) = (
                wanted(c.read, c.read_range, o.read),
                wanted(c.write, c.write_range, o.write),
            );
            d.field(TableField::ReadCapacity, r, o.read);
            d.field(TableField::WriteCapacity, w, o.write);
        }
        for g in &spec.gsis {
            match o.gsis.iter().find(|x| x.name == g.name) {
                None => d.push(
                    TableField::Gsi(g.name.clone()),
                    &Value::Null,
                    &gsi_str(g),
                    false,
                ),
                Some(live) => {
                    let keys_differ = Some(&g.hash_key) != live.hash_key.as_ref()
                        || g.range_key != live.range_key
                        || g.projection_all != live.projection_all;
                    if keys_differ {
                        // An index's keys cannot change in place: it is dropped and rebuilt.
                        let live_keys = format!(
                            "hash {}, range {}",
                            opt_key_str(live.hash_key.as_ref()).unwrap_or_default(),
                            opt_key_str(live.range_key.as_ref()).unwrap_or_else(|| "none".into())
                        );
                        let field = TableField::GsiKeys(g.name.clone());
                        d.push(field, &live_keys, &gsi_str(g), false);
                    }
                    if let (Some(c), false) = (g.capacity, want_ppr) {
                        let r = wanted(c.read, c.read_range, live.read);
                        let w = wanted(c.write, c.write_range, live.write);
                        d.field(TableField::GsiReadCapacity(g.name.clone()), r, live.read);
                        d.field(TableField::GsiWriteCapacity(g.name.clone()), w, live.write);
                    }
                }
            }
        }
        for live in &o.gsis {
            if !spec.gsis.iter().any(|g| g.name == live.name) {
                d.push(
                    TableField::Gsi(live.name.clone()),
                    &live.name,
                    &Value::Null,
                    false,
                );
            }
        }
        d.field(
            TableField::Stream,
            spec.stream.map(|s| s.as_str().to_string()),
            o.stream.clone(),
        );
        d.field(TableField::SseKms, spec.sse_kms, o.sse_kms);
        d.field(
            TableField::PointInTimeRecovery,
            spec.point_in_time_recovery,
            o.point_in_time_recovery,
        );
        d.field(
            TableField::DeletionProtection,
            spec.deletion_protection,
            o.deletion_protection,
        );
        let live_tags: BTreeMap<_, _> = o
            .tags
            .iter()
            .filter(|(k, _)| !k.starts_with("aws:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        d.field(TableField::Tags, &spec.tags, &live_tags);
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &TableSpec) -> Result<()> {
        let db = &ctx.aws.dynamodb;
        let mut defs: Vec<AttributeDefinition> = Vec::new();
        let mut add_def = |k: &KeyAttr| -> Result<()> {
            if !defs.iter().any(|d| d.attribute_name() == k.name) {
                defs.push(
                    AttributeDefinition::builder()
                        .attribute_name(&k.name)
                        .attribute_type(sdk_attr_type(k.attr_type))
                        .build()?,
                );
            }
            Ok(())
        };
        add_def(&spec.hash_key)?;
        if let Some(r) = &spec.range_key {
            add_def(r)?;
        }
        for g in &spec.gsis {
            add_def(&g.hash_key)?;
            if let Some(r) = &g.range_key {
                add_def(r)?;
            }
        }
        let mut req = db
            .create_table()
            .table_name(&spec.name)
            .set_key_schema(Some(key_schema(&spec.hash_key, spec.range_key.as_ref())?))
            .set_attribute_definitions(Some(defs))
            .deletion_protection_enabled(spec.deletion_protection)
            .sse_specification(sse(spec.sse_kms))
            // Tags in the create call itself: no window in which the table exists unowned.
            .set_tags(Some(tags(&spec.tags)?));
        req = match spec.billing {
            Billing::PayPerRequest => req.billing_mode(BillingMode::PayPerRequest),
            Billing::Provisioned(c) => req
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(throughput(c.read, c.write)?),
        };
        for g in &spec.gsis {
            let mut gb = GlobalSecondaryIndex::builder()
                .index_name(&g.name)
                .set_key_schema(Some(key_schema(&g.hash_key, g.range_key.as_ref())?))
                .projection(projection(g));
            if let (Billing::Provisioned(_), Some(c)) = (spec.billing, g.capacity) {
                gb = gb.provisioned_throughput(throughput(c.read, c.write)?);
            }
            req = req.global_secondary_indexes(gb.build()?);
        }
        if let Some(view) = spec.stream {
            req = req.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(SdkView::from(view.as_str()))
                    .build()?,
            );
        }
        req.send().await.context("CreateTable")?;
        wait_active(ctx, &spec.name).await?;
        if spec.point_in_time_recovery {
            set_pitr(ctx, &spec.name, true).await?;
        }
        Ok(())
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &TableSpec,
        o: &ObservedTable,
        changes: &[TableField],
    ) -> Result<()> {
        let steps = Steps::of(changes);
        let name = spec.name.as_str();
        wait_active(ctx, name).await?;
        if steps.tags {
            sync_tags(ctx, &o.arn, &spec.tags, &o.tags).await?;
        }
        if steps.deletion_protection {
            update_table(ctx, name, |r| {
                r.deletion_protection_enabled(spec.deletion_protection)
            })
            .await?;
        }
        if steps.capacity {
            update_capacity(ctx, spec, o).await?;
        }
        // Index changes: one per UpdateTable call, waiting for each to settle.
        for g in &spec.gsis {
            let live = o.gsis.iter().find(|x| x.name == g.name);
            let rebuilt = steps.rebuilt.contains(&g.name);
            if live.is_some() && rebuilt {
                delete_index(ctx, name, &g.name).await?;
            }
            if live.is_none() || rebuilt {
                create_index(ctx, spec, g).await?;
            }
        }
        for live in &o.gsis {
            if !spec.gsis.iter().any(|g| g.name == live.name) {
                delete_index(ctx, name, &live.name).await?;
            }
        }
        if steps.stream {
            update_stream(ctx, spec, o).await?;
        }
        if steps.sse_kms {
            update_table(ctx, name, |r| r.sse_specification(sse(spec.sse_kms))).await?;
        }
        if steps.point_in_time_recovery {
            set_pitr(ctx, name, spec.point_in_time_recovery).await?;
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, spec: &TableSpec, o: &ObservedTable) -> Result<()> {
        if o.deletion_protection {
            if !ctx.options.override_deletion_protection {
                bail!(
                    "table {} has deletion protection; pass --override-deletion-protection to delete it",
                    spec.name
                );
            }
            update_table(ctx, &spec.name, |r| r.deletion_protection_enabled(false)).await?;
        }
        let db = &ctx.aws.dynamodb;
        let result = retry(
            &format!("delete table {}", spec.name),
            Backoff::wait(ctx.wait_timeout),
            || db.delete_table().table_name(&spec.name).send(),
            |e| match e {
                SdkError::ServiceError(s)
                    if matches!(s.err(), DeleteTableError::ResourceInUseException(_)) =>
                {
                    Some("table is being created or updated")
                }
                _ => None,
            },
        )
        .await;
        match result {
            Ok(_) => {}
            Err(e) if super::not_found(&e) => {}
            Err(e) => return Err(e).context("DeleteTable"),
        }
        wait_gone(ctx, &spec.name).await
    }

    async fn deletion_details(&self, ctx: &Ctx, o: &ObservedTable) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if o.deletion_protection {
            out.push(if ctx.options.override_deletion_protection {
                "deletion protection will be turned off first".to_string()
            } else {
                "has deletion protection: destroy will refuse without --override-deletion-protection".to_string()
            });
        }
        if self.holds_data(ctx, o).await? {
            out.push("holds items, which are deleted with it".to_string());
        }
        Ok(out)
    }

    async fn holds_data(&self, ctx: &Ctx, o: &ObservedTable) -> Result<bool> {
        // ItemCount in DescribeTable is refreshed only every few hours; a one-item scan is exact.
        let page = ctx
            .aws
            .dynamodb
            .scan()
            .table_name(&o.name)
            .limit(1)
            .send()
            .await
            .context("Scan")?;
        Ok(page.count() > 0)
    }
}

super::not_found_errors!(
    DeleteTableError::ResourceNotFoundException,
    DescribeTableError::ResourceNotFoundException,
);

/// Billing mode and capacity, of the table and its indexes, together: switching to
/// PROVISIONED needs capacities.
async fn update_capacity(ctx: &Ctx, spec: &TableSpec, o: &ObservedTable) -> Result<()> {
    let name = spec.name.as_str();
    match spec.billing {
        Billing::PayPerRequest => {
            update_table(ctx, name, |r| r.billing_mode(BillingMode::PayPerRequest)).await?
        }
        Billing::Provisioned(c) => {
            let r_cap = wanted(c.read, c.read_range, o.read);
            let w_cap = wanted(c.write, c.write_range, o.write);
            let mut gsi_updates = Vec::new();
            for g in &spec.gsis {
                let Some(live) = o.gsis.iter().find(|x| x.name == g.name) else {
                    continue;
                };
                let Some(gc) = g.capacity else { continue };
                let (gr, gw) = (
                    wanted(gc.read, gc.read_range, live.read),
                    wanted(gc.write, gc.write_range, live.write),
                );
                // UpdateTable rejects an index update that would not change its
                // throughput ("... will not change"); under autoscaling the wanted
                // value is the live one clamped to the range, so usually it does not.
                if !o.pay_per_request && (gr, gw) == (live.read, live.write) {
                    continue;
                }
                gsi_updates.push(
                    GlobalSecondaryIndexUpdate::builder()
                        .update(
                            UpdateGlobalSecondaryIndexAction::builder()
                                .index_name(&g.name)
                                .provisioned_throughput(throughput(gr, gw)?)
                                .build()?,
                        )
                        .build(),
                );
            }
            let switching = o.pay_per_request;
            let table_changes = switching || r_cap != o.read || w_cap != o.write;
            // The same rule for the table itself: a call that changes nothing fails.
            if !table_changes && gsi_updates.is_empty() {
                tracing::debug!(table = name, "capacity already as wanted");
            } else {
                let tp = throughput(r_cap, w_cap)?;
                update_table(ctx, name, |mut r| {
                    r = r.billing_mode(BillingMode::Provisioned);
                    if table_changes {
                        r = r.provisioned_throughput(tp.clone());
                    }
                    r.set_global_secondary_index_updates(
                        (!gsi_updates.is_empty()).then(|| gsi_updates.clone()),
                    )
                })
                .await?;
            }
        }
    }
    Ok(())
}

/// A stream's view type cannot change in place: the old stream is disabled first.
async fn update_stream(ctx: &Ctx, spec: &TableSpec, o: &ObservedTable) -> Result<()> {
    let name = spec.name.as_str();
    if o.stream.is_some() {
        update_table(ctx, name, |r| {
            r.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(false)
                    .build()
                    .expect("stream_enabled is set"),
            )
        })
        .await?;
    }
    if let Some(view) = spec.stream {
        update_table(ctx, name, |r| {
            r.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(SdkView::from(view.as_str()))
                    .build()
                    .expect("stream_enabled is set"),
            )
        })
        .await?;
    }
    Ok(())
}

/// What an update does, decided once per changed field.
#[derive(Debug, Default)]
struct Steps {
    tags: bool,
    deletion_protection: bool,
    capacity: bool,
    /// Indexes whose keys changed.
    rebuilt: Vec<String>,
    stream: bool,
    sse_kms: bool,
    point_in_time_recovery: bool,
}

impl Steps {
    fn of(changes: &[TableField]) -> Steps {
        let mut steps = Steps::default();
        for field in changes {
            match field {
                // `diff` marks key changes as forcing a replacement: never updated in place.
                TableField::HashKey | TableField::RangeKey => {}
                TableField::BillingMode
                | TableField::ReadCapacity
                | TableField::WriteCapacity
                | TableField::GsiReadCapacity(_)
                | TableField::GsiWriteCapacity(_) => steps.capacity = true,
                // The index pass compares the spec's indexes with the live ones.
                TableField::Gsi(_) => {}
                TableField::GsiKeys(index) => steps.rebuilt.push(index.clone()),
                TableField::Stream => steps.stream = true,
                TableField::SseKms => steps.sse_kms = true,
                TableField::PointInTimeRecovery => steps.point_in_time_recovery = true,
                TableField::DeletionProtection => steps.deletion_protection = true,
                TableField::Tags => steps.tags = true,
            }
        }
        steps
    }
}

fn key_schema(hash: &KeyAttr, range: Option<&KeyAttr>) -> Result<Vec<KeySchemaElement>> {
    let mut v = vec![
        KeySchemaElement::builder()
            .attribute_name(&hash.name)
            .key_type(KeyType::Hash)
            .build()?,
    ];
    if let Some(r) = range {
        v.push(
            KeySchemaElement::builder()
                .attribute_name(&r.name)
                .key_type(KeyType::Range)
                .build()?,
        );
    }
    Ok(v)
}

fn throughput(read: u32, write: u32) -> Result<ProvisionedThroughput> {
    Ok(ProvisionedThroughput::builder()
        .read_capacity_units(read as i64)
        .write_capacity_units(write as i64)
        .build()?)
}

fn projection(g: &GsiSpec) -> Projection {
    Projection::builder()
        .projection_type(if g.projection_all {
            ProjectionType::All
        } else {
            ProjectionType::KeysOnly
        })
        .build()
}

fn sse(kms: bool) -> SseSpecification {
    let b = SseSpecification::builder().enabled(kms);
    if kms { b.sse_type(SseType::Kms) } else { b }.build()
}

fn tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
    tags.iter()
        .map(|(k, v)| Ok(Tag::builder().key(k).value(v).build()?))
        .collect()
}

/// The table as DescribeTable shows it, asked once per plan pass: the table's own read and the
/// stream mapping's (which needs the table's current stream) share one call. Waits poll with
/// [`describe`], which always asks afresh.
pub async fn describe_once(ctx: &Ctx, name: &str) -> Result<Option<TableDescription>> {
    crate::engine::lookup::once(&format!("dynamodb.DescribeTable.{name}"), || {
        describe(ctx, name)
    })
    .await
}

async fn describe(ctx: &Ctx, name: &str) -> Result<Option<TableDescription>> {
    match ctx
        .aws
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
    {
        Ok(o) => Ok(o.table().cloned()),
        Err(e) if super::not_found(&e) => Ok(None),
        Err(e) => Err(e).context("DescribeTable"),
    }
}

/// Waits until the table and all its indexes are ACTIVE.
pub async fn wait_active(ctx: &Ctx, name: &str) -> Result<()> {
    wait_until(
        &format!("table {name} to become ACTIVE"),
        Backoff::wait(ctx.wait_timeout),
        || async {
            let t = describe(ctx, name)
                .await?
                .with_context(|| format!("table {name} disappeared while waiting for it"))?;
            let ready = t.table_status() == Some(&TableStatus::Active)
                && t.global_secondary_indexes()
                    .iter()
                    .all(|g| g.index_status() == Some(&IndexStatus::Active));
            Ok(ready.then_some(()))
        },
    )
    .await
}

async fn wait_gone(ctx: &Ctx, name: &str) -> Result<()> {
    wait_until(
        &format!("table {name} to be deleted"),
        Backoff::wait(ctx.wait_timeout),
        || async { Ok(describe(ctx, name).await?.is_none().then_some(())) },
    )
    .await
}

/// One UpdateTable call, retried while the table is busy, then waited on until ACTIVE.
async fn update_table(
    ctx: &Ctx,
    name: &str,
    build: impl Fn(
        aws_sdk_dynamodb::operation::update_table::builders::UpdateTableFluentBuilder,
    ) -> aws_sdk_dynamodb::operation::update_table::builders::UpdateTableFluentBuilder,
) -> Result<()> {
    let db = &ctx.aws.dynamodb;
    retry(
        &format!("update table {name}"),
        Backoff::wait(ctx.wait_timeout),
        || build(db.update_table().table_name(name)).send(),
        |e| match e {
            SdkError::ServiceError(s)
                if matches!(s.err(), UpdateTableError::ResourceInUseException(_)) =>
            {
                Some("table or index is still updating")
            }
            SdkError::ServiceError(s)
                if matches!(s.err(), UpdateTableError::LimitExceededException(_)) =>
            {
                Some("too many concurrent table operations")
            }
            _ => None,
        },
    )
    .await
    .context("UpdateTable")?;
    wait_active(ctx, name).await
}

async fn create_index(ctx: &Ctx, spec: &TableSpec, g: &GsiSpec) -> Result<()> {
    let mut a = CreateGlobalSecondaryIndexAction::builder()
        .index_name(&g.name)
        .set_key_schema(Some(key_schema(&g.hash_key, g.range_key.as_ref())?))
        .projection(projection(g));
    if let (Billing::Provisioned(_), Some(c)) = (spec.billing, g.capacity) {
        a = a.provisioned_throughput(throughput(c.read, c.write)?);
    }
    let update = GlobalSecondaryIndexUpdate::builder()
        .create(a.build()?)
        .build();
    let mut defs = vec![
        AttributeDefinition::builder()
            .attribute_name(&g.hash_key.name)
            .attribute_type(sdk_attr_type(g.hash_key.attr_type))
            .build()?,
    ];
    if let Some(r) = &g.range_key {
        defs.push(
            AttributeDefinition::builder()
                .attribute_name(&r.name)
                .attribute_type(sdk_attr_type(r.attr_type))
                .build()?,
        );
    }
    update_table(ctx, &spec.name, |r| {
        r.set_attribute_definitions(Some(defs.clone()))
            .global_secondary_index_updates(update.clone())
    })
    .await
}

async fn delete_index(ctx: &Ctx, table: &str, index: &str) -> Result<()> {
    let update = GlobalSecondaryIndexUpdate::builder()
        .delete(
            DeleteGlobalSecondaryIndexAction::builder()
                .index_name(index)
                .build()?,
        )
        .build();
    update_table(ctx, table, |r| {
        r.global_secondary_index_updates(update.clone())
    })
    .await
}

async fn set_pitr(ctx: &Ctx, name: &str, enabled: bool) -> Result<()> {
    let db = &ctx.aws.dynamodb;
    retry(
        &format!("point-in-time recovery on {name}"),
        Backoff::wait(ctx.wait_timeout),
        || {
            db.update_continuous_backups()
                .table_name(name)
                .point_in_time_recovery_specification(
                    PointInTimeRecoverySpecification::builder()
                        .point_in_time_recovery_enabled(enabled)
                        .build()
                        .expect("enabled is set"),
                )
                .send()
        },
        // Continuous backups take a moment to become available on a new table.
        |e| match e {
            SdkError::ServiceError(s)
                if matches!(
                    s.err(),
                    UpdateContinuousBackupsError::ContinuousBackupsUnavailableException(_)
                ) =>
            {
                Some("continuous backups not yet available")
            }
            _ => None,
        },
    )
    .await
    .context("UpdateContinuousBackups")?;
    Ok(())
}

async fn sync_tags(
    ctx: &Ctx,
    arn: &str,
    desired: &BTreeMap<String, String>,
    live: &BTreeMap<String, String>,
) -> Result<()> {
    let db = &ctx.aws.dynamodb;
    let delta = crate::engine::tags::delta(desired, live);
    if !delta.remove.is_empty() {
        db.untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(delta.remove))
            .send()
            .await
            .context("UntagResource")?;
    }
    if !delta.set.is_empty() {
        db.tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags(&delta.set)?))
            .send()
            .await
            .context("TagResource")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stacks::Capacity;

    fn spec(billing: Billing) -> TableSpec {
        TableSpec {
            name: "invoices-table-dev".into(),
            hash_key: KeyAttr::string("InvoiceID"),
            range_key: Some(KeyAttr::string("CustomerID")),
            billing,
            gsis: vec![GsiSpec {
                name: "CustomerID-Index".into(),
                hash_key: KeyAttr::string("CustomerID"),
                range_key: None,
                projection_all: true,
                capacity: match billing {
                    Billing::Provisioned(c) => Some(c),
                    Billing::PayPerRequest => None,
                },
            }],
            stream: Some(stacks::config::StreamViewType::NewImage),
            sse_kms: true,
            point_in_time_recovery: true,
            deletion_protection: false,
            tags: BTreeMap::from([("app".into(), "invoice-app".into())]),
        }
    }

    fn autoscaled() -> Billing {
        Billing::Provisioned(Capacity {
            read: 5,
            write: 5,
            read_range: Some((5, 20)),
            write_range: Some((5, 20)),
        })
    }

    fn live(s: &TableSpec, read: u32, write: u32) -> ObservedTable {
        ObservedTable {
            name: s.name.clone(),
            arn: "arn:aws:dynamodb:eu-west-1:123456789012:table/x".into(),
            hash_key: Some(s.hash_key.clone()),
            range_key: s.range_key.clone(),
            pay_per_request: s.billing == Billing::PayPerRequest,
            read,
            write,
            gsis: vec![ObservedGsi {
                name: "CustomerID-Index".into(),
                hash_key: Some(KeyAttr::string("CustomerID")),
                range_key: None,
                projection_all: true,
                read,
                write,
            }],
            stream: Some("NEW_IMAGE".into()),
            sse_kms: true,
            point_in_time_recovery: true,
            deletion_protection: false,
            tags: s.tags.clone(),
        }
    }

    #[test]
    fn capacity_moved_by_autoscaling_within_range_is_not_drift() {
        let s = spec(autoscaled());
        assert!(DynamoDbTable::diff(&s, &live(&s, 17, 9)).0.is_empty());
        assert!(DynamoDbTable::diff(&s, &live(&s, 20, 5)).0.is_empty());
    }

    #[test]
    fn capacity_outside_the_range_is_clamped_back() {
        let s = spec(autoscaled());
        let d = DynamoDbTable::diff(&s, &live(&s, 25, 5));
        let fields: Vec<String> = d.0.iter().map(|c| c.field.to_string()).collect();
        assert_eq!(
            fields,
            ["read_capacity", "gsi.CustomerID-Index.read_capacity"]
        );
        assert_eq!(d.0[0].old, json!(25));
        assert_eq!(d.0[0].new, json!(20));
    }

    #[test]
    fn fixed_capacity_must_match_exactly() {
        let s = spec(Billing::Provisioned(Capacity {
            read: 5,
            write: 5,
            read_range: None,
            write_range: None,
        }));
        let d = DynamoDbTable::diff(&s, &live(&s, 6, 5));
        assert_eq!(d.0[0].field, TableField::ReadCapacity);
        assert_eq!(d.0[0].new, json!(5));
    }

    #[test]
    fn key_schema_change_forces_replacement() {
        let s = spec(autoscaled());
        let mut o = live(&s, 5, 5);
        o.range_key = None;
        let d = DynamoDbTable::diff(&s, &o);
        assert_eq!(d.0.len(), 1);
        assert!(d.0[0].forces_replacement);
        assert_eq!(d.0[0].field, TableField::RangeKey);
    }

    #[test]
    fn pitr_and_billing_changes_are_in_place() {
        let s = spec(Billing::PayPerRequest);
        let mut o = live(&spec(autoscaled()), 5, 5);
        o.point_in_time_recovery = false;
        let d = DynamoDbTable::diff(&s, &o);
        let fields: Vec<String> = d.0.iter().map(|c| c.field.to_string()).collect();
        assert_eq!(fields, ["billing_mode", "point_in_time_recovery"]);
        assert!(d.0.iter().all(|c| !c.forces_replacement));
    }

    #[test]
    fn missing_and_extra_indexes_are_changes() {
        let s = spec(autoscaled());
        let mut o = live(&s, 5, 5);
        o.gsis[0].name = "Old-Index".into();
        let d = DynamoDbTable::diff(&s, &o);
        let fields: Vec<String> = d.0.iter().map(|c| c.field.to_string()).collect();
        assert_eq!(fields, ["gsi.CustomerID-Index", "gsi.Old-Index"]);
    }
}
