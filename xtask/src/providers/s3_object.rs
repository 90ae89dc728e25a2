//! Content-addressed S3 objects (function zips in the artifacts bucket).
//!
//! The key contains the content's SHA-256, so an object that exists is by construction the
//! right one: reading is knowing whether the key exists, and there is never an update, only an
//! upload when the key is absent. One listing of the key's folder per plan pass answers that
//! for every artifact of the stack (they share `functions/`), instead of one HeadObject each. S3 verifies the upload against the `ChecksumSHA256` we send, so a corrupted
//! transfer fails instead of being stored.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_s3::operation::delete_object::DeleteObjectError;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use serde_json::Value;
use stacks::ObjectSpec;

use super::{fields, not_found, not_found_errors, response_summary};
use crate::engine::{Ctx, Diff, Provider};

pub struct S3Object;

fields! {
    /// What an object's plan shows: only its upload, as the key names its content.
    pub enum ObjectField {
        Upload = "upload",
    }
}

not_found_errors!(
    ListObjectsV2Error::NoSuchBucket,
    DeleteObjectError = "NoSuchBucket",
);

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedObject {
    pub size: i64,
}

/// Every key under `prefix` with its size; `None` when the bucket does not exist (yet, on a
/// first apply, or any more, after destroy).
async fn list(ctx: &Ctx, bucket: &str, prefix: &str) -> Result<Option<HashMap<String, i64>>> {
    let mut keys = HashMap::new();
    let mut token = None;
    loop {
        let page = match ctx
            .aws
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e).context("ListObjectsV2"),
        };
        for o in page.contents() {
            if let Some(key) = o.key() {
                keys.insert(key.to_string(), o.size().unwrap_or_default());
            }
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return Ok(Some(keys)),
        }
    }
}

#[async_trait]
impl Provider for S3Object {
    type Spec = ObjectSpec;
    type Observed = ObservedObject;
    type Field = ObjectField;
    const KIND: &'static str = "s3_object";
    const CREATE_CONVERGES: bool = true;

    async fn read(&self, ctx: &Ctx, spec: &ObjectSpec) -> Result<Option<ObservedObject>> {
        // The top folder of the key: `functions/` for every function's zip.
        let folder = match spec.key.split_once('/') {
            Some((top, _)) => format!("{top}/"),
            None => String::new(),
        };
        let listing = crate::engine::lookup::once(
            &format!("s3.ListObjectsV2.{}.{folder}", spec.bucket),
            || list(ctx, &spec.bucket, &folder),
        )
        .await?;
        Ok(listing
            .and_then(|keys| keys.get(&spec.key).copied())
            .map(|size| ObservedObject { size }))
    }

    /// Objects belong to their bucket, which carries the ownership tags.
    fn tags(_observed: &ObservedObject) -> Option<&BTreeMap<String, String>> {
        None
    }

    fn describe(spec: &ObjectSpec) -> Diff<ObjectField> {
        let mut d = Diff::default();
        d.push(
            ObjectField::Upload,
            &Value::Null,
            &spec.source.display().to_string(),
            false,
        );
        d
    }

    /// The key is the content's hash: an existing object never differs.
    fn diff(_spec: &ObjectSpec, _o: &ObservedObject) -> Diff<ObjectField> {
        Diff::default()
    }

    async fn create(&self, ctx: &Ctx, spec: &ObjectSpec) -> Result<()> {
        if spec.sha256_b64.is_empty() {
            anyhow::bail!("no built artifact for {}", spec.key);
        }
        let body = ByteStream::from_path(&spec.source)
            .await
            .with_context(|| format!("reading {}", spec.source.display()))?;
        ctx.aws
            .s3
            .put_object()
            .bucket(&spec.bucket)
            .key(&spec.key)
            .body(body)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&spec.sha256_b64)
            .content_type("application/zip")
            .send()
            .await
            .map_err(|e| {
                let answer = response_summary(&e);
                anyhow::Error::new(e).context(format!(
                    "PutObject {} (ChecksumSHA256 verified by S3): {answer}",
                    spec.key
                ))
            })?;
        Ok(())
    }

    async fn update(
        &self,
        _ctx: &Ctx,
        _spec: &ObjectSpec,
        _o: &ObservedObject,
        changes: &[ObjectField],
    ) -> Result<()> {
        for field in changes {
            match field {
                // Never reported by `diff`: the key names the content, so it never differs.
                ObjectField::Upload => {}
            }
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, spec: &ObjectSpec, _o: &ObservedObject) -> Result<()> {
        match ctx
            .aws
            .s3
            .delete_object()
            .bucket(&spec.bucket)
            .key(&spec.key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e).context("DeleteObject"),
        }
    }
}
