//! Event source mappings from a DynamoDB table's stream to a function alias.
//!
//! The stream ARN carries a timestamp chosen by DynamoDB, so the stack cannot name it: the
//! provider reads the table's `LatestStreamArn` itself, at plan time for an existing table and
//! again at create time (the table may have been created moments before). Every setting is
//! updated in place; only a different stream (the table was replaced) means a new mapping.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::create_event_source_mapping::CreateEventSourceMappingError;
use aws_sdk_lambda::operation::update_event_source_mapping::UpdateEventSourceMappingError;
use aws_sdk_lambda::types::{EventSourcePosition, FunctionResponseType};
use serde_json::Value;
use stacks::EventSourceMappingSpec;

use crate::engine::retry::{Backoff, retry, wait_until};
use crate::engine::{Change, Ctx, Diff, Provider};

pub struct EventSourceMapping;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedMapping {
    pub uuid: String,
    pub stream_arn: String,
    /// The function or alias ARN it invokes.
    pub function_arn: String,
    /// The table's current stream; `None` when the table has no stream (any more).
    pub current_stream_arn: Option<String>,
    pub starting_position: String,
    pub batch_size: u32,
    pub batching_window_secs: u32,
    pub bisect_on_error: bool,
    pub max_retries: u32,
    pub report_batch_item_failures: bool,
}

/// The qualifier of a function ARN (`...:function:f:live` -> `live`), if any.
fn qualifier(function_arn: &str) -> Option<&str> {
    let parts: Vec<&str> = function_arn.split(':').collect();
    (parts.len() == 8).then(|| parts[7])
}

fn function_name(function_arn: &str) -> &str {
    function_arn.split(':').nth(6).unwrap_or(function_arn)
}

/// The table's current stream ARN.
async fn stream_arn(ctx: &Ctx, table: &str) -> Result<Option<String>> {
    match ctx
        .aws
        .dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
    {
        Ok(t) => Ok(t
            .table()
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_string)),
        Err(aws_sdk_dynamodb::error::SdkError::ServiceError(e))
            if matches!(e.err(), DescribeTableError::ResourceNotFoundException(_)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).context("DescribeTable"),
    }
}

/// Lambda settles a mapping (Creating, Updating, Deleting) before it accepts the next change.
fn in_transition(state: Option<&str>) -> bool {
    matches!(
        state,
        Some("Creating" | "Updating" | "Enabling" | "Disabling" | "Deleting")
    )
}

#[async_trait]
impl Provider for EventSourceMapping {
    type Spec = EventSourceMappingSpec;
    type Observed = ObservedMapping;
    const KIND: &'static str = "event_source_mapping";

    async fn read(
        &self,
        ctx: &Ctx,
        spec: &EventSourceMappingSpec,
    ) -> Result<Option<ObservedMapping>> {
        let current = stream_arn(ctx, &spec.table_name).await?;
        let Some(stream) = &current else {
            // No table or no stream: no mapping of ours can be alive on it.
            return Ok(None);
        };
        // By stream rather than by function name: the function ARN's qualifier is what we
        // compare, and filtering by it would hide a mapping pointing at the wrong one.
        let page = ctx
            .aws
            .lambda
            .list_event_source_mappings()
            .event_source_arn(stream)
            .send()
            .await
            .context("ListEventSourceMappings")?;
        let Some(m) = page.event_source_mappings().iter().find(|m| {
            m.function_arn()
                .is_some_and(|f| function_name(f) == spec.function_name)
        }) else {
            return Ok(None);
        };
        Ok(Some(ObservedMapping {
            uuid: m.uuid().unwrap_or_default().to_string(),
            stream_arn: m.event_source_arn().unwrap_or_default().to_string(),
            function_arn: m.function_arn().unwrap_or_default().to_string(),
            current_stream_arn: current.clone(),
            starting_position: m
                .starting_position()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            batch_size: m.batch_size().unwrap_or_default() as u32,
            batching_window_secs: m.maximum_batching_window_in_seconds().unwrap_or_default() as u32,
            bisect_on_error: m.bisect_batch_on_function_error().unwrap_or_default(),
            max_retries: m.maximum_retry_attempts().unwrap_or_default().max(0) as u32,
            report_batch_item_failures: m
                .function_response_types()
                .contains(&FunctionResponseType::ReportBatchItemFailures),
        }))
    }

    /// A mapping belongs to the function it invokes.
    fn tags(_observed: &ObservedMapping) -> Option<&BTreeMap<String, String>> {
        None
    }

    fn describe(spec: &EventSourceMappingSpec) -> Diff {
        let mut d = Diff::default();
        d.push(
            "function",
            &Value::Null,
            &format!("{}:{}", spec.function_name, spec.alias),
            false,
        );
        d.push(
            "stream",
            &Value::Null,
            &"(latest stream of the table)",
            false,
        );
        d.push(
            "starting_position",
            &Value::Null,
            &spec.starting_position,
            false,
        );
        d.push("batch_size", &Value::Null, &spec.batch_size, false);
        d.push(
            "batching_window_secs",
            &Value::Null,
            &spec.batching_window_secs,
            false,
        );
        d.push(
            "bisect_on_error",
            &Value::Null,
            &spec.bisect_on_error,
            false,
        );
        d.push("max_retries", &Value::Null, &spec.max_retries, false);
        d.push(
            "report_batch_item_failures",
            &Value::Null,
            &spec.report_batch_item_failures,
            false,
        );
        d
    }

    fn diff(spec: &EventSourceMappingSpec, o: &ObservedMapping) -> Diff {
        let mut d = Diff::default();
        d.field(
            "function",
            format!("{}:{}", spec.function_name, spec.alias),
            format!(
                "{}:{}",
                function_name(&o.function_arn),
                qualifier(&o.function_arn).unwrap_or("$LATEST")
            ),
        );
        // Only a mapping on the current stream is read at all, so this is informational.
        d.replace_field(
            "stream",
            o.current_stream_arn.clone(),
            Some(o.stream_arn.clone()),
        );
        // The starting position is fixed at creation.
        d.replace_field(
            "starting_position",
            spec.starting_position.clone(),
            o.starting_position.clone(),
        );
        d.field("batch_size", spec.batch_size, o.batch_size);
        d.field(
            "batching_window_secs",
            spec.batching_window_secs,
            o.batching_window_secs,
        );
        d.field("bisect_on_error", spec.bisect_on_error, o.bisect_on_error);
        d.field("max_retries", spec.max_retries, o.max_retries);
        d.field(
            "report_batch_item_failures",
            spec.report_batch_item_failures,
            o.report_batch_item_failures,
        );
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &EventSourceMappingSpec) -> Result<()> {
        // The table was possibly created a moment ago: its stream appears with it, but wait
        // for it rather than fail.
        let stream = wait_until(
            &format!("a stream on table {}", spec.table_name),
            Backoff::wait(ctx.wait_timeout),
            || stream_arn(ctx, &spec.table_name),
        )
        .await?;
        let function = alias_arn(ctx, spec);
        let lambda = &ctx.aws.lambda;
        retry(
            &format!("CreateEventSourceMapping {}", spec.name),
            Backoff {
                first: Duration::from_secs(1),
                max: Duration::from_secs(10),
                deadline: ctx.wait_timeout.min(Duration::from_secs(90)),
            },
            || {
                lambda
                    .create_event_source_mapping()
                    .event_source_arn(&stream)
                    .function_name(&function)
                    .starting_position(EventSourcePosition::from(spec.starting_position.as_str()))
                    .batch_size(spec.batch_size as i32)
                    .maximum_batching_window_in_seconds(spec.batching_window_secs as i32)
                    .bisect_batch_on_function_error(spec.bisect_on_error)
                    .maximum_retry_attempts(spec.max_retries as i32)
                    .set_function_response_types(
                        spec.report_batch_item_failures
                            .then(|| vec![FunctionResponseType::ReportBatchItemFailures]),
                    )
                    .send()
            },
            // On AWS the role's stream permissions propagate like the role itself.
            |e| match e {
                SdkError::ServiceError(s)
                    if matches!(
                        s.err(),
                        CreateEventSourceMappingError::InvalidParameterValueException(_)
                    ) && s.err().code() == Some("InvalidParameterValueException") =>
                {
                    Some("the function's role may not have its stream permissions yet (IAM propagation)")
                }
                _ => None,
            },
        )
        .await
        .context("CreateEventSourceMapping")?;
        Ok(())
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &EventSourceMappingSpec,
        o: &ObservedMapping,
        changes: &[Change],
    ) -> Result<()> {
        let lambda = &ctx.aws.lambda;
        let has = |f: &str| changes.iter().any(|c| c.field == f);
        let function = alias_arn(ctx, spec);
        wait_settled(ctx, &o.uuid).await?;
        retry(
            &format!("UpdateEventSourceMapping {}", spec.name),
            Backoff::wait(ctx.wait_timeout),
            || {
                lambda
                    .update_event_source_mapping()
                    .uuid(&o.uuid)
                    .set_function_name(has("function").then(|| function.clone()))
                    .batch_size(spec.batch_size as i32)
                    .maximum_batching_window_in_seconds(spec.batching_window_secs as i32)
                    .bisect_batch_on_function_error(spec.bisect_on_error)
                    .maximum_retry_attempts(spec.max_retries as i32)
                    // An empty list is how the setting is switched off.
                    .set_function_response_types(Some(if spec.report_batch_item_failures {
                        vec![FunctionResponseType::ReportBatchItemFailures]
                    } else {
                        vec![]
                    }))
                    .send()
            },
            |e| match e {
                SdkError::ServiceError(s)
                    if matches!(
                        s.err(),
                        UpdateEventSourceMappingError::ResourceInUseException(_)
                            | UpdateEventSourceMappingError::ResourceConflictException(_)
                    ) =>
                {
                    Some("the mapping is still changing")
                }
                _ => None,
            },
        )
        .await
        .context("UpdateEventSourceMapping")?;
        Ok(())
    }

    async fn delete(
        &self,
        ctx: &Ctx,
        _spec: &EventSourceMappingSpec,
        o: &ObservedMapping,
    ) -> Result<()> {
        match ctx
            .aws
            .lambda
            .delete_event_source_mapping()
            .uuid(&o.uuid)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(e).context("DeleteEventSourceMapping"),
        }
    }
}

fn alias_arn(ctx: &Ctx, spec: &EventSourceMappingSpec) -> String {
    format!(
        "arn:{}:lambda:{}:{}:function:{}:{}",
        stacks::names::partition(&ctx.region),
        ctx.region,
        ctx.account_id,
        spec.function_name,
        spec.alias
    )
}

async fn wait_settled(ctx: &Ctx, uuid: &str) -> Result<()> {
    wait_until(
        &format!("event source mapping {uuid} to settle"),
        Backoff::wait(ctx.wait_timeout),
        || async {
            let m = ctx
                .aws
                .lambda
                .get_event_source_mapping()
                .uuid(uuid)
                .send()
                .await
                .context("GetEventSourceMapping")?;
            Ok((!in_transition(m.state())).then_some(()))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EventSourceMappingSpec {
        EventSourceMappingSpec {
            name: "t -> f:live".into(),
            table_name: "t".into(),
            function_name: "f".into(),
            alias: "live".into(),
            starting_position: "LATEST".into(),
            batch_size: 10,
            batching_window_secs: 0,
            bisect_on_error: true,
            max_retries: 3,
            report_batch_item_failures: true,
        }
    }

    fn observed() -> ObservedMapping {
        ObservedMapping {
            uuid: "u".into(),
            stream_arn: "s1".into(),
            function_arn: "arn:aws:lambda:eu-west-1:1:function:f:live".into(),
            current_stream_arn: Some("s1".into()),
            starting_position: "LATEST".into(),
            batch_size: 10,
            batching_window_secs: 0,
            bisect_on_error: true,
            max_retries: 3,
            report_batch_item_failures: true,
        }
    }

    #[test]
    fn settings_update_in_place_and_the_target_is_the_alias() {
        let s = spec();
        assert!(EventSourceMapping::diff(&s, &observed()).0.is_empty());
        let mut o = observed();
        o.batch_size = 100;
        o.function_arn = "arn:aws:lambda:eu-west-1:1:function:f:3".into();
        let d = EventSourceMapping::diff(&s, &o);
        let fields: Vec<_> = d.0.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["function", "batch_size"]);
        assert!(d.0.iter().all(|c| !c.forces_replacement));
    }

    #[test]
    fn arn_parts() {
        assert_eq!(
            qualifier("arn:aws:lambda:r:1:function:f:live"),
            Some("live")
        );
        assert_eq!(qualifier("arn:aws:lambda:r:1:function:f"), None);
        assert_eq!(function_name("arn:aws:lambda:r:1:function:f:live"), "f");
        assert!(in_transition(Some("Updating")));
        assert!(!in_transition(Some("Enabled")));
    }
}
