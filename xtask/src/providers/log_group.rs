//! CloudWatch Logs log groups: created with tags and a retention policy.
//!
//! Generic on purpose: Lambda functions use it for `/aws/lambda/<name>` (created before the
//! function, so Lambda never creates it itself without retention), and API Gateway access logs
//! can use it the same way.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::error::SdkError;
use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupError;
use aws_sdk_cloudwatchlogs::operation::delete_log_group::DeleteLogGroupError;
use aws_sdk_cloudwatchlogs::types::LogGroup as LiveGroup;
use serde_json::Value;
use stacks::LogGroupSpec;

use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What a log group's diff compares.
    pub enum LogGroupField {
        RetentionDays = "retention_days",
        Tags = "tags",
    }
}

pub struct LogGroup;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedLogGroup {
    pub arn: String,
    pub retention_days: Option<u32>,
    pub tags: BTreeMap<String, String>,
}

super::not_found_errors!(DeleteLogGroupError::ResourceNotFoundException,);

#[async_trait]
impl Provider for LogGroup {
    type Spec = LogGroupSpec;
    type Observed = ObservedLogGroup;
    type Field = LogGroupField;
    const KIND: &'static str = "log_group";
    const CREATE_CONVERGES: bool = true;
    const ROUND_TRIPS: u32 = 2;

    async fn read(&self, ctx: &Ctx, spec: &LogGroupSpec) -> Result<Option<ObservedLogGroup>> {
        let logs = &ctx.aws.logs;
        // Every log group this plan pass reads, in one DescribeLogGroups (by exact names, up to
        // 50 a call) instead of one prefix search each.
        let names = crate::engine::lookup::peers(Self::KIND, &spec.name);
        let key = format!("logs.DescribeLogGroups.{}", names.join(","));
        let groups = crate::engine::lookup::once(&key, || describe(ctx, names.clone()));
        // The tags are asked by the ARN the group would have, beside the description: a
        // group that exists costs one round-trip instead of two; for one that does not, the
        // answer (not found) is dropped.
        let expected_arn = stacks::names::log_group_arn(&ctx.region, &ctx.account_id, &spec.name);
        let tags = logs
            .list_tags_for_resource()
            .resource_arn(&expected_arn)
            .send();
        let (groups, tags) = tokio::join!(groups, tags);
        let Some(group) = groups?
            .iter()
            .find(|g| g.log_group_name() == Some(spec.name.as_str()))
            .cloned()
        else {
            return Ok(None);
        };
        // The ARN without the trailing `:*` that DescribeLogGroups appends.
        let arn = group
            .arn()
            .unwrap_or_default()
            .trim_end_matches(":*")
            .to_string();
        let tags = match tags {
            Ok(t) if arn == expected_arn => t,
            // Another partition's ARN form, or a group made between the two calls: ask again.
            _ => logs
                .list_tags_for_resource()
                .resource_arn(&arn)
                .send()
                .await
                .context("ListTagsForResource")?,
        };
        let tags = tags
            .tags()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Some(ObservedLogGroup {
            arn,
            retention_days: group.retention_in_days().map(|d| d as u32),
            tags,
        }))
    }

    fn tags(observed: &ObservedLogGroup) -> Option<&BTreeMap<String, String>> {
        Some(&observed.tags)
    }

    fn describe(spec: &LogGroupSpec) -> Diff<LogGroupField> {
        let mut d = Diff::default();
        d.push(
            LogGroupField::RetentionDays,
            &Value::Null,
            &spec.retention_days,
            false,
        );
        d.push(LogGroupField::Tags, &Value::Null, &spec.tags, false);
        d
    }

    fn diff(spec: &LogGroupSpec, o: &ObservedLogGroup) -> Diff<LogGroupField> {
        let mut d = Diff::default();
        d.field(
            LogGroupField::RetentionDays,
            Some(spec.retention_days),
            o.retention_days,
        );
        d.field(LogGroupField::Tags, &spec.tags, &o.tags);
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &LogGroupSpec) -> Result<()> {
        let created = ctx
            .aws
            .logs
            .create_log_group()
            .log_group_name(&spec.name)
            .set_tags(Some(spec.tags.clone().into_iter().collect()))
            .send()
            .await;
        match created {
            Ok(_) => {}
            // An earlier run stopped after creating it: carry on.
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    CreateLogGroupError::ResourceAlreadyExistsException(_)
                ) => {}
            Err(e) => return Err(e).context("CreateLogGroup"),
        }
        put_retention(ctx, spec).await
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &LogGroupSpec,
        o: &ObservedLogGroup,
        changes: &[LogGroupField],
    ) -> Result<()> {
        for field in changes {
            match field {
                LogGroupField::RetentionDays => put_retention(ctx, spec).await?,
                LogGroupField::Tags => put_tags(ctx, spec, o).await?,
            }
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, spec: &LogGroupSpec, _o: &ObservedLogGroup) -> Result<()> {
        match ctx
            .aws
            .logs
            .delete_log_group()
            .log_group_name(&spec.name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if super::not_found(&e) => Ok(()),
            Err(e) => Err(e).context("DeleteLogGroup"),
        }
    }
}

async fn put_retention(ctx: &Ctx, spec: &LogGroupSpec) -> Result<()> {
    ctx.aws
        .logs
        .put_retention_policy()
        .log_group_name(&spec.name)
        .retention_in_days(spec.retention_days as i32)
        .send()
        .await
        .context("PutRetentionPolicy")?;
    Ok(())
}

async fn put_tags(ctx: &Ctx, spec: &LogGroupSpec, o: &ObservedLogGroup) -> Result<()> {
    let logs = &ctx.aws.logs;
    let delta = crate::engine::tags::delta(&spec.tags, &o.tags);
    if !delta.remove.is_empty() {
        logs.untag_resource()
            .resource_arn(&o.arn)
            .set_tag_keys(Some(delta.remove))
            .send()
            .await
            .context("UntagResource")?;
    }
    if !delta.set.is_empty() {
        logs.tag_resource()
            .resource_arn(&o.arn)
            .set_tags(Some(delta.set.into_iter().collect()))
            .send()
            .await
            .context("TagResource")?;
    }
    Ok(())
}

/// The log groups named `names` that exist. `logGroupIdentifiers` takes up to 50 names and
/// excludes every other filter; the answer is still checked name by name, as an emulator may
/// not filter.
async fn describe(ctx: &Ctx, names: Vec<String>) -> Result<Vec<LiveGroup>> {
    let mut found = Vec::new();
    for chunk in names.chunks(50) {
        let mut pages = ctx
            .aws
            .logs
            .describe_log_groups()
            .set_log_group_identifiers(Some(chunk.to_vec()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.context("DescribeLogGroups")?;
            found.extend(
                page.log_groups()
                    .iter()
                    .filter(|g| {
                        g.log_group_name()
                            .is_some_and(|n| chunk.iter().any(|c| c == n))
                    })
                    .cloned(),
            );
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_and_tags_are_diffed() {
        let spec = LogGroupSpec {
            name: "/aws/lambda/f".into(),
            retention_days: 14,
            tags: BTreeMap::from([("app".into(), "x".into())]),
        };
        let mut o = ObservedLogGroup {
            arn: "arn".into(),
            retention_days: Some(14),
            tags: spec.tags.clone(),
        };
        assert!(LogGroup::diff(&spec, &o).0.is_empty());
        o.retention_days = None;
        let d = LogGroup::diff(&spec, &o);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].field, "retention_days");
    }
}
