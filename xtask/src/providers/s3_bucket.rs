//! S3 buckets: versioning, default encryption, public access block, object ownership,
//! noncurrent-version expiry, an optional TLS-only policy, and tags.
//!
//! Deleting a versioned bucket first purges every object version and delete marker, in
//! batches of 1,000 (the DeleteObjects limit), because S3 refuses to delete a bucket that
//! still holds any.
//!
//! S3 is eventually consistent about bucket existence: a bucket just created can answer
//! NoSuchBucket to the configuration calls that follow for a moment, and re-creating a name
//! deleted moments ago answers 409 OperationAborted until the deletion has settled. Both are
//! code-only errors (no modelled variant) and are retried, bounded, through `engine::retry`;
//! so is OperationAborted on the configuration calls of a new bucket, which go out together.
//!
//! CreateBucket with tags (as here: the tags prove ownership from the first moment) needs
//! `s3:TagResource` besides `s3:CreateBucket`; see the README's deploy-role section.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::create_bucket::CreateBucketError;
use aws_sdk_s3::operation::delete_bucket::DeleteBucketError;
use aws_sdk_s3::operation::get_bucket_tagging::GetBucketTaggingError;
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsError;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Delete,
    ExpirationStatus, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
    ObjectIdentifier, ObjectOwnership, OwnershipControls, OwnershipControlsRule,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
    VersioningConfiguration,
};
use serde_json::{Value, json};
use stacks::BucketSpec;
use stacks::config::Encryption;

use super::{error_code, fields, not_found, not_found_errors, partition};
use crate::engine::retry::{Backoff, retry};
use crate::engine::{Ctx, Diff, Provider};

/// How long a bucket may take to become visible after CreateBucket, or a deleted name to
/// become free again.
const BUCKET_SETTLE: Duration = Duration::from_secs(120);

fn settle_backoff(ctx: &Ctx) -> Backoff {
    Backoff::wait(ctx.wait_timeout.min(BUCKET_SETTLE))
}

/// Why an error of a call on a bucket we just created is worth retrying.
pub fn bucket_settling<E: aws_smithy_types::error::metadata::ProvideErrorMetadata, R>(
    e: &SdkError<E, R>,
) -> Option<&'static str> {
    match error_code(e) {
        Some("NoSuchBucket") => Some("the new bucket is not visible yet"),
        // The configuration calls of a new bucket go out together (see `create`); S3 may
        // refuse one while another change of the same bucket is in progress.
        Some("OperationAborted") => Some("another change of this bucket is in progress"),
        _ => None,
    }
}

/// Why a CreateBucket error is worth retrying: the same name was deleted moments ago.
pub fn create_retry_reason<R>(e: &SdkError<CreateBucketError, R>) -> Option<&'static str> {
    (error_code(e) == Some("OperationAborted"))
        .then_some("a deletion of this bucket name is still settling (OperationAborted)")
}

/// One configuration call on the bucket, retried while the new bucket is not visible yet or
/// another change of it is in progress.
async fn settled<T, E, R, F, Fut>(ctx: &Ctx, what: &'static str, op: F) -> Result<T>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
{
    retry(what, settle_backoff(ctx), op, bucket_settling)
        .await
        .context(what)
}

pub struct S3Bucket;

fields! {
    /// What a bucket's diff compares.
    pub enum BucketField {
        Versioning = "versioning",
        Encryption = "encryption",
        BlockPublicAccess = "block_public_access",
        OwnerEnforced = "owner_enforced",
        NoncurrentVersionExpiryDays = "noncurrent_version_expiry_days",
        TlsOnly = "tls_only",
        Tags = "tags",
    }
}

// S3 models a missing bucket as a variant on a few calls only; elsewhere it is a code.
not_found_errors!(
    GetBucketTaggingError = "NoSuchBucket",
    DeleteBucketError = "NoSuchBucket",
    ListObjectVersionsError = "NoSuchBucket",
);

pub const LIFECYCLE_RULE_ID: &str = "expire-noncurrent-versions";
const TLS_SID: &str = "DenyInsecureTransport";
/// DeleteObjects accepts at most this many keys per request.
const DELETE_BATCH: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedBucket {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub versioning: bool,
    pub encryption: Option<String>,
    pub block_public_access: bool,
    pub owner_enforced: bool,
    pub noncurrent_version_expiry_days: Option<u32>,
    pub policy: Option<Value>,
}

fn encryption_name(e: Encryption) -> &'static str {
    match e {
        Encryption::Aes256 => "AES256",
        Encryption::AwsKms => "aws:kms",
    }
}

/// The bucket policy the spec asks for, if any.
pub fn desired_policy(spec: &BucketSpec, region: &str) -> Option<Value> {
    let arn = format!("arn:{}:s3:::{}", partition(region), spec.name);
    spec.tls_only.then(|| {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": TLS_SID,
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn.clone(), format!("{arn}/*")],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}
            }]
        })
    })
}

/// Whether a live policy has our TLS-only statement; compared as JSON, not as text, because
/// S3 reformats policies it returns.
fn has_tls_statement(policy: Option<&Value>) -> bool {
    policy
        .and_then(|p| p.get("Statement"))
        .and_then(Value::as_array)
        .is_some_and(|stmts| {
            stmts.iter().any(|s| {
                s.get("Effect") == Some(&json!("Deny"))
                    && s.pointer("/Condition/Bool/aws:SecureTransport")
                        .is_some_and(|v| v == "false" || v == &json!(false))
            })
        })
}

/// Tags S3 manages itself cannot be set or removed; leave them out of comparisons.
fn managed_tags(tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tags.iter()
        .filter(|(k, _)| !k.starts_with("aws:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[async_trait]
impl Provider for S3Bucket {
    type Spec = BucketSpec;
    type Observed = ObservedBucket;
    type Field = BucketField;
    const KIND: &'static str = "s3_bucket";
    const CREATE_CONVERGES: bool = true;
    const ROUND_TRIPS: u32 = 2;

    async fn read(&self, ctx: &Ctx, spec: &BucketSpec) -> Result<Option<ObservedBucket>> {
        let s3 = &ctx.aws.s3;
        let b = spec.name.as_str();
        // Every part at once, no HeadBucket first: each call names the bucket, and the tagging
        // call's answer says whether it exists (NoSuchBucket) or is another account's (403).
        let (tagging, versioning, encryption, pab, ownership, lifecycle, policy) = tokio::join!(
            s3.get_bucket_tagging().bucket(b).send(),
            s3.get_bucket_versioning().bucket(b).send(),
            s3.get_bucket_encryption().bucket(b).send(),
            s3.get_public_access_block().bucket(b).send(),
            s3.get_bucket_ownership_controls().bucket(b).send(),
            s3.get_bucket_lifecycle_configuration().bucket(b).send(),
            s3.get_bucket_policy().bucket(b).send(),
        );
        let tags = match tagging {
            Ok(t) => t
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
            Err(e) if error_code(&e) == Some("NoSuchTagSet") => BTreeMap::new(),
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(403) => {
                anyhow::bail!(
                    "bucket name {b} is taken by another AWS account (GetBucketTagging: 403); set buckets.name_suffix to choose another"
                )
            }
            Err(e) => return Err(e).context("GetBucketTagging"),
        };
        let versioning = versioning.context("GetBucketVersioning")?.status()
            == Some(&BucketVersioningStatus::Enabled);
        let encryption = match encryption {
            Ok(o) => o
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| d.sse_algorithm().as_str().to_string()),
            Err(e) if error_code(&e) == Some("ServerSideEncryptionConfigurationNotFoundError") => {
                None
            }
            Err(e) => return Err(e).context("GetBucketEncryption"),
        };
        let block_public_access = match pab {
            Ok(o) => o.public_access_block_configuration().is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            }),
            Err(e) if error_code(&e) == Some("NoSuchPublicAccessBlockConfiguration") => false,
            Err(e) => return Err(e).context("GetPublicAccessBlock"),
        };
        let owner_enforced = match ownership {
            Ok(o) => o.ownership_controls().is_some_and(|c| {
                c.rules()
                    .iter()
                    .any(|r| r.object_ownership() == &ObjectOwnership::BucketOwnerEnforced)
            }),
            Err(e) if error_code(&e) == Some("OwnershipControlsNotFoundError") => false,
            Err(e) => return Err(e).context("GetBucketOwnershipControls"),
        };
        let noncurrent_version_expiry_days = match lifecycle {
            Ok(o) => o
                .rules()
                .iter()
                .find(|r| {
                    r.id() == Some(LIFECYCLE_RULE_ID) && r.status() == &ExpirationStatus::Enabled
                })
                .and_then(|r| r.noncurrent_version_expiration())
                .and_then(|e| e.noncurrent_days())
                .map(|d| d as u32),
            Err(e) if error_code(&e) == Some("NoSuchLifecycleConfiguration") => None,
            Err(e) => return Err(e).context("GetBucketLifecycleConfiguration"),
        };
        let policy = match policy {
            Ok(o) => o.policy().and_then(|p| serde_json::from_str(p).ok()),
            Err(e) if error_code(&e) == Some("NoSuchBucketPolicy") => None,
            Err(e) => return Err(e).context("GetBucketPolicy"),
        };
        Ok(Some(ObservedBucket {
            name: spec.name.clone(),
            tags,
            versioning,
            encryption,
            block_public_access,
            owner_enforced,
            noncurrent_version_expiry_days,
            policy,
        }))
    }

    fn tags(observed: &ObservedBucket) -> Option<&BTreeMap<String, String>> {
        Some(&observed.tags)
    }

    fn describe(spec: &BucketSpec) -> Diff<BucketField> {
        let mut d = Diff::default();
        d.push(
            BucketField::Versioning,
            &Value::Null,
            &spec.versioning,
            false,
        );
        d.push(
            BucketField::Encryption,
            &Value::Null,
            &encryption_name(spec.encryption),
            false,
        );
        d.push(
            BucketField::BlockPublicAccess,
            &Value::Null,
            &spec.block_public_access,
            false,
        );
        d.push(
            BucketField::OwnerEnforced,
            &Value::Null,
            &spec.owner_enforced,
            false,
        );
        d.push(
            BucketField::NoncurrentVersionExpiryDays,
            &Value::Null,
            &spec.noncurrent_version_expiry_days,
            false,
        );
        d.push(BucketField::TlsOnly, &Value::Null, &spec.tls_only, false);
        d.push(BucketField::Tags, &Value::Null, &spec.tags, false);
        d
    }

    fn diff(spec: &BucketSpec, o: &ObservedBucket) -> Diff<BucketField> {
        let mut d = Diff::default();
        d.field(BucketField::Versioning, spec.versioning, o.versioning);
        d.field(
            BucketField::Encryption,
            Some(encryption_name(spec.encryption).to_string()),
            o.encryption.clone(),
        );
        d.field(
            BucketField::BlockPublicAccess,
            spec.block_public_access,
            o.block_public_access,
        );
        d.field(
            BucketField::OwnerEnforced,
            spec.owner_enforced,
            o.owner_enforced,
        );
        d.field(
            BucketField::NoncurrentVersionExpiryDays,
            spec.noncurrent_version_expiry_days,
            o.noncurrent_version_expiry_days,
        );
        d.field(
            BucketField::TlsOnly,
            spec.tls_only,
            has_tls_statement(o.policy.as_ref()),
        );
        d.field(
            BucketField::Tags,
            managed_tags(&spec.tags),
            managed_tags(&o.tags),
        );
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &BucketSpec) -> Result<()> {
        let s3 = &ctx.aws.s3;
        // Tags in the create call itself, so no crash can leave a bucket of ours without the
        // tags that prove it is ours; PutBucketTagging below repeats them for endpoints that
        // ignore creation tags.
        let mut config = CreateBucketConfiguration::builder().set_tags(Some(tag_set(spec)?));
        // us-east-1 is the one region that rejects an explicit location constraint.
        if ctx.region != "us-east-1" && !ctx.region.is_empty() {
            config =
                config.location_constraint(BucketLocationConstraint::from(ctx.region.as_str()));
        }
        let req = s3
            .create_bucket()
            .bucket(&spec.name)
            .create_bucket_configuration(config.build());
        let created = retry(
            &format!("CreateBucket {}", spec.name),
            settle_backoff(ctx),
            || req.clone().send(),
            create_retry_reason,
        )
        .await;
        match created {
            Ok(_) => {}
            // A previous run created it and stopped before finishing: carry on from here.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), CreateBucketError::BucketAlreadyOwnedByYou(_)) => {}
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), CreateBucketError::BucketAlreadyExists(_)) =>
            {
                anyhow::bail!(
                    "bucket name {} is taken by another AWS account; set buckets.name_suffix",
                    spec.name
                )
            }
            Err(e) => return Err(e).context("CreateBucket"),
        }
        // The seven settings do not depend on each other (the TLS-only policy only denies, so
        // the public access block never refuses it): they go out together.
        tokio::try_join!(
            put_tags(ctx, spec),
            put_versioning(ctx, spec),
            put_encryption(ctx, spec),
            put_public_access_block(ctx, spec),
            put_ownership(ctx, spec),
            put_lifecycle(ctx, spec),
            put_policy(ctx, spec),
        )?;
        Ok(())
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &BucketSpec,
        _observed: &ObservedBucket,
        changes: &[BucketField],
    ) -> Result<()> {
        for field in changes {
            match field {
                BucketField::Tags => put_tags(ctx, spec).await?,
                BucketField::Versioning => put_versioning(ctx, spec).await?,
                BucketField::Encryption => put_encryption(ctx, spec).await?,
                BucketField::BlockPublicAccess => put_public_access_block(ctx, spec).await?,
                BucketField::OwnerEnforced => put_ownership(ctx, spec).await?,
                BucketField::NoncurrentVersionExpiryDays => put_lifecycle(ctx, spec).await?,
                BucketField::TlsOnly => put_policy(ctx, spec).await?,
            }
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, spec: &BucketSpec, _observed: &ObservedBucket) -> Result<()> {
        let s3 = &ctx.aws.s3;
        let b = spec.name.as_str();
        // The purge stops after the last page it deleted instead of listing once more to see
        // the bucket empty; something written meanwhile makes DeleteBucket refuse, and then
        // the purge runs again.
        for attempt in 1..=PURGE_ATTEMPTS {
            purge(ctx, b).await?;
            match s3.delete_bucket().bucket(b).send().await {
                Ok(_) => return Ok(()),
                Err(e) if not_found(&e) => return Ok(()),
                Err(e) if error_code(&e) == Some("BucketNotEmpty") && attempt < PURGE_ATTEMPTS => {
                    tracing::warn!(
                        bucket = b,
                        attempt,
                        "objects appeared during the purge: purging again"
                    );
                }
                Err(e) => return Err(e).context("DeleteBucket"),
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn deletion_details(&self, ctx: &Ctx, o: &ObservedBucket) -> Result<Vec<String>> {
        let (versions, markers) = count_versions(ctx, &o.name).await?;
        Ok(vec![format!(
            "purges {versions} object version{} and {markers} delete marker{} first",
            if versions == 1 { "" } else { "s" },
            if markers == 1 { "" } else { "s" }
        )])
    }

    async fn holds_data(&self, ctx: &Ctx, o: &ObservedBucket) -> Result<bool> {
        let page = ctx
            .aws
            .s3
            .list_object_versions()
            .bucket(&o.name)
            .max_keys(1)
            .send()
            .await
            .context("ListObjectVersions")?;
        Ok(!page.versions().is_empty() || !page.delete_markers().is_empty())
    }
}

fn tag_set(spec: &BucketSpec) -> Result<Vec<Tag>> {
    Ok(spec
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()?)
}

async fn put_tags(ctx: &Ctx, spec: &BucketSpec) -> Result<()> {
    let tags = tag_set(spec)?;
    let req = ctx
        .aws
        .s3
        .put_bucket_tagging()
        .bucket(&spec.name)
        .tagging(Tagging::builder().set_tag_set(Some(tags)).build()?);
    settled(ctx, "PutBucketTagging", || req.clone().send()).await?;
    Ok(())
}

async fn put_versioning(ctx: &Ctx, spec: &BucketSpec) -> Result<()> {
    // Versioning can only be suspended once enabled, never removed.
    let status = if spec.versioning {
        BucketVersioningStatus::Enabled
    } else {
        BucketVersioningStatus::Suspended
    };
    let req = ctx
        .aws
        .s3
        .put_bucket_versioning()
        .bucket(&spec.name)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build());
    settled(ctx, "PutBucketVersioning", || req.clone().send()).await?;
    Ok(())
}

async fn put_encryption(ctx: &Ctx, spec: &BucketSpec) -> Result<()> {
    let algorithm = ServerSideEncryption::from(encryption_name(spec.encryption));
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(algorithm)
                .build()?,
        )
        // S3 Bucket Keys cut KMS request costs; harmless with AES256.
        .bucket_key_enabled(spec.encryption == Encryption::AwsKms)
        .build();
    let req = ctx
        .aws
        .s3
        .put_bucket_encryption()
        .bucket(&spec.name)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()?,
        );
    settled(ctx, "PutBucketEncryption", || req.clone().send()).await?;
    Ok(())
}

async fn put_public_access_block(ctx: &Ctx, spec: &BucketSpec) -> Result<()> {
    let on = spec.block_public_access;
    let req = ctx
        .aws
        .s3
        .put_public_access_block()
        .bucket(&spec.name)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(on)
                .ignore_public_acls(on)
                .block_public_policy(on)
                .restrict_public_buckets(on)
                .build(),
        );
    settled(ctx, "PutPublicAccessBlock", || req.clone().send()).await?;
    Ok(())
}

async fn put_ownership(ctx: &Ctx, spec: &BucketSpec) -> Result<()> {
    let ownership = if spec.owner_enforced {
        ObjectOwnership::BucketOwnerEnforced
    } else {
        ObjectOwnership::BucketOwnerPreferred
    };
    let req = ctx
        .aws
        .s3
        .put_bucket_ownership_controls()
        .bucket(&spec.name)
        .ownership_controls(
            OwnershipControls::builder()
                .rules(
                    OwnershipControlsRule::builder()
                        .object_ownership(ownership)
                        .build()?,
                )
                .build()?,
        );
    settled(ctx, "PutBucketOwnershipControls", || req.clone().send()).await?;
    Ok(())
}

async fn put_lifecycle(ctx: &Ctx, spec: &BucketSpec) -> Result<()> {
    let s3 = &ctx.aws.s3;
    match spec.noncurrent_version_expiry_days {
        Some(days) => {
            let rule = LifecycleRule::builder()
                .id(LIFECYCLE_RULE_ID)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("").build())
                .noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder()
                        .noncurrent_days(days as i32)
                        .build(),
                )
                .build()?;
            let req = s3
                .put_bucket_lifecycle_configuration()
                .bucket(&spec.name)
                .lifecycle_configuration(
                    aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                        .rules(rule)
                        .build()?,
                );
            settled(ctx, "PutBucketLifecycleConfiguration", || {
                req.clone().send()
            })
            .await?;
        }
        None => {
            let req = s3.delete_bucket_lifecycle().bucket(&spec.name);
            settled(ctx, "DeleteBucketLifecycle", || req.clone().send()).await?;
        }
    }
    Ok(())
}

async fn put_policy(ctx: &Ctx, spec: &BucketSpec) -> Result<()> {
    let s3 = &ctx.aws.s3;
    match desired_policy(spec, &ctx.region) {
        Some(p) => {
            let req = s3
                .put_bucket_policy()
                .bucket(&spec.name)
                .policy(p.to_string());
            settled(ctx, "PutBucketPolicy", || req.clone().send()).await?;
        }
        None => {
            let req = s3.delete_bucket_policy().bucket(&spec.name);
            settled(ctx, "DeleteBucketPolicy", || req.clone().send()).await?;
        }
    }
    Ok(())
}

/// Counts object versions and delete markers (all pages).
pub async fn count_versions(ctx: &Ctx, bucket: &str) -> Result<(usize, usize)> {
    let (mut versions, mut markers) = (0, 0);
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = ctx
            .aws
            .s3
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .context("ListObjectVersions")?;
        versions += page.versions().len();
        markers += page.delete_markers().len();
        if page.is_truncated() != Some(true) {
            return Ok((versions, markers));
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
}

/// How often a bucket's deletion purges it when new objects keep it from being deleted.
const PURGE_ATTEMPTS: u32 = 3;

/// How many rounds of a purge may meet keys S3 was too busy to delete before it gives up.
const PURGE_BUSY_ROUNDS: u32 = 5;

/// Deletes every object version and delete marker, a page (at most 1,000 keys) at a time, and
/// returns after deleting the last page it listed (the bucket may have gained objects since).
pub async fn purge(ctx: &Ctx, bucket: &str) -> Result<()> {
    let s3 = &ctx.aws.s3;
    // DeleteObjects answers 200 with per-key errors, which the SDK does not retry: keys S3
    // was too busy for are listed again on the next round, after a pause.
    let busy = Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(8),
        deadline: ctx.wait_timeout,
    };
    let mut busy_rounds = 0;
    loop {
        // Always re-list from the start: deleting shifts the pagination markers.
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .max_keys(DELETE_BATCH as i32)
            .send()
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(e).context("ListObjectVersions"),
        };
        let mut ids = Vec::new();
        for v in page.versions() {
            ids.push((v.key().unwrap_or_default(), v.version_id()));
        }
        for m in page.delete_markers() {
            ids.push((m.key().unwrap_or_default(), m.version_id()));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let last_page = page.is_truncated() != Some(true);
        for chunk in ids.chunks(DELETE_BATCH) {
            let objects = chunk
                .iter()
                .map(|(k, v)| {
                    ObjectIdentifier::builder()
                        .key(*k)
                        .set_version_id(v.map(str::to_string))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = s3
                .delete_objects()
                .bucket(bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build()?,
                )
                .send()
                .await
                .context("DeleteObjects")?;
            let transient = |code: Option<&str>| {
                matches!(
                    code,
                    Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "OperationAborted")
                )
            };
            if !out.errors().is_empty()
                && out.errors().iter().all(|e| transient(e.code()))
                && busy_rounds < PURGE_BUSY_ROUNDS
            {
                let pause = busy.delay(busy_rounds);
                busy_rounds += 1;
                tracing::warn!(
                    bucket,
                    keys = out.errors().len(),
                    code = out.errors()[0].code().unwrap_or_default(),
                    ?pause,
                    "S3 was too busy to delete some versions: listing them again"
                );
                tokio::time::sleep(pause).await;
                break;
            }
            if let Some(err) = out.errors().first() {
                anyhow::bail!(
                    "could not delete {} version {}: {} {}",
                    err.key().unwrap_or_default(),
                    err.version_id().unwrap_or_default(),
                    err.code().unwrap_or_default(),
                    err.message().unwrap_or_default()
                );
            }
        }
        // After a round with busy keys, listing again finds them (an empty listing ends it).
        if last_page && busy_rounds == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BucketSpec {
        BucketSpec {
            name: "app-pdfs-dev-123456789012".into(),
            versioning: true,
            encryption: Encryption::Aes256,
            block_public_access: true,
            owner_enforced: true,
            noncurrent_version_expiry_days: Some(30),
            tls_only: true,
            tags: BTreeMap::from([("app".into(), "x".into())]),
        }
    }

    /// `spec()`'s bucket as S3 describes it, written out rather than derived from the spec
    /// (the policy as GetBucketPolicy returns it: compact, the statement's keys in S3's order).
    fn observed_matching() -> ObservedBucket {
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"DenyInsecureTransport","Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::app-pdfs-dev-123456789012","arn:aws:s3:::app-pdfs-dev-123456789012/*"],"Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#;
        ObservedBucket {
            name: "app-pdfs-dev-123456789012".into(),
            tags: BTreeMap::from([("app".into(), "x".into())]),
            versioning: true,
            encryption: Some("AES256".into()),
            block_public_access: true,
            owner_enforced: true,
            noncurrent_version_expiry_days: Some(30),
            policy: Some(serde_json::from_str(policy).unwrap()),
        }
    }

    #[test]
    fn matching_bucket_has_no_diff() {
        let s = spec();
        assert!(S3Bucket::diff(&s, &observed_matching()).0.is_empty());
    }

    #[test]
    fn policy_compares_semantically() {
        let s = spec();
        let mut o = observed_matching();
        // S3 returns policies reformatted, with the condition value as a bare boolean.
        o.policy = Some(
            json!({"Statement": [{"Condition": {"Bool": {"aws:SecureTransport": false}}, "Effect": "Deny"}], "Version": "2012-10-17"}),
        );
        assert!(S3Bucket::diff(&s, &o).0.is_empty());
        o.policy = None;
        let d = S3Bucket::diff(&s, &o);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].field, "tls_only");
    }

    #[test]
    fn each_field_is_diffed_in_place() {
        let s = spec();
        let mut o = observed_matching();
        o.noncurrent_version_expiry_days = Some(7);
        o.tags.insert("aws:cloudformation:stack".into(), "x".into());
        let d = S3Bucket::diff(&s, &o);
        assert_eq!(d.0.len(), 1, "aws: tags are ignored: {:?}", d.0);
        assert_eq!(d.0[0].field, "noncurrent_version_expiry_days");
        assert_eq!(d.0[0].old, json!(7));
        assert_eq!(d.0[0].new, json!(30));
        assert!(!d.0[0].forces_replacement);
    }

    #[test]
    fn policy_uses_the_region_partition() {
        let p = desired_policy(&spec(), "cn-north-1").unwrap();
        assert!(p.to_string().contains("arn:aws-cn:s3:::"));
    }
}
