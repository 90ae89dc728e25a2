//! Event source mappings from a DynamoDB table's stream to a function alias.
//!
//! The stream ARN carries a timestamp chosen by DynamoDB, so the stack cannot name it: the
//! provider reads the table's `LatestStreamArn` itself, at plan time for an existing table and
//! again at create time (the table may have been created moments before). Every setting is
//! updated in place; only a different stream means a new mapping: the table was replaced, or
//! its stream view type changed (DynamoDB then disables the stream and makes a new one, with
//! a new ARN). The spec carries the view type the table will have, so a plan that changes it
//! replaces the mapping after the table's update. Mappings of our function left on an older
//! stream of the table (an interrupted run) are found when none is on the current stream, and
//! removed by the next apply's replace or by destroy.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::create_event_source_mapping::CreateEventSourceMappingError;
use aws_sdk_lambda::operation::delete_event_source_mapping::DeleteEventSourceMappingError;
use aws_sdk_lambda::operation::get_event_source_mapping::GetEventSourceMappingError;
use aws_sdk_lambda::operation::update_event_source_mapping::UpdateEventSourceMappingError;
use aws_sdk_lambda::types::{
    EventSourceMappingConfiguration, EventSourcePosition, FunctionResponseType,
};
use serde_json::Value;
use stacks::EventSourceMappingSpec;

use crate::engine::retry::{Backoff, retry, wait_until};
use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What an event source mapping's diff compares.
    pub enum MappingField {
        Function = "function",
        Stream = "stream",
        StreamViewType = "stream_view_type",
        StartingPosition = "starting_position",
        BatchSize = "batch_size",
        BatchingWindowSecs = "batching_window_secs",
        BisectOnError = "bisect_on_error",
        MaxRetries = "max_retries",
        ReportBatchItemFailures = "report_batch_item_failures",
    }
}

pub struct EventSourceMapping;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedMapping {
    pub uuid: String,
    pub stream_arn: String,
    /// The function or alias ARN it invokes.
    pub function_arn: String,
    /// The table's current stream; `None` when the table has no stream (any more).
    pub current_stream_arn: Option<String>,
    /// The view type of the table's current stream.
    pub stream_view_type: Option<String>,
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
    Ok(table_stream(ctx, table).await?.map(|(arn, _)| arn))
}

/// The table's current stream ARN and its view type (from the DescribeTable the table's own
/// read makes in the same plan pass).
async fn table_stream(ctx: &Ctx, table: &str) -> Result<Option<(String, Option<String>)>> {
    Ok(super::dynamodb_table::describe_once(ctx, table)
        .await?
        .and_then(|t| {
            let view = t
                .stream_specification()
                .and_then(|s| s.stream_view_type())
                .map(|v| v.as_str().to_string());
            t.latest_stream_arn().map(|arn| (arn.to_string(), view))
        }))
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
    type Field = MappingField;
    const KIND: &'static str = "event_source_mapping";
    /// The table's stream, then the mappings on it.
    const READ_ROUND_TRIPS: u32 = 2;
    // The stream's lookup, the create, the wait out of Creating.
    const ROUND_TRIPS: u32 = 3;

    async fn read(
        &self,
        ctx: &Ctx,
        spec: &EventSourceMappingSpec,
    ) -> Result<Option<ObservedMapping>> {
        let Some((stream, view)) = table_stream(ctx, &spec.table_name).await? else {
            // No table or no stream: no mapping of ours can be alive on it.
            return Ok(None);
        };
        let current = Some(stream.clone());
        let stream = &stream;
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
        let found = page
            .event_source_mappings()
            .iter()
            .find(|m| {
                m.function_arn()
                    .is_some_and(|f| function_name(f) == spec.function_name)
            })
            .cloned();
        // None on the current stream: one left on an older stream of the table is still ours.
        let m = match found {
            Some(m) => m,
            None => match old_stream_mappings(ctx, spec, stream)
                .await?
                .into_iter()
                .next()
            {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        Ok(Some(ObservedMapping {
            uuid: m.uuid().unwrap_or_default().to_string(),
            stream_arn: m.event_source_arn().unwrap_or_default().to_string(),
            function_arn: m.function_arn().unwrap_or_default().to_string(),
            current_stream_arn: current.clone(),
            stream_view_type: view,
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

    fn describe(spec: &EventSourceMappingSpec) -> Diff<MappingField> {
        let mut d = Diff::default();
        d.push(
            MappingField::Function,
            &Value::Null,
            &format!("{}:{}", spec.function_name, spec.alias),
            false,
        );
        d.push(
            MappingField::Stream,
            &Value::Null,
            &"(latest stream of the table)",
            false,
        );
        d.push(
            MappingField::StartingPosition,
            &Value::Null,
            &spec.starting_position,
            false,
        );
        d.push(
            MappingField::BatchSize,
            &Value::Null,
            &spec.batch_size,
            false,
        );
        d.push(
            MappingField::BatchingWindowSecs,
            &Value::Null,
            &spec.batching_window_secs,
            false,
        );
        d.push(
            MappingField::BisectOnError,
            &Value::Null,
            &spec.bisect_on_error,
            false,
        );
        d.push(
            MappingField::MaxRetries,
            &Value::Null,
            &spec.max_retries,
            false,
        );
        d.push(
            MappingField::ReportBatchItemFailures,
            &Value::Null,
            &spec.report_batch_item_failures,
            false,
        );
        d
    }

    fn diff(spec: &EventSourceMappingSpec, o: &ObservedMapping) -> Diff<MappingField> {
        let mut d = Diff::default();
        d.field(
            MappingField::Function,
            format!("{}:{}", spec.function_name, spec.alias),
            format!(
                "{}:{}",
                function_name(&o.function_arn),
                qualifier(&o.function_arn).unwrap_or("$LATEST")
            ),
        );
        // A mapping left on an older stream of the table must move to the current one.
        d.replace_field(
            MappingField::Stream,
            o.current_stream_arn.clone(),
            Some(o.stream_arn.clone()),
        );
        // The table's update will make a new stream: the mapping follows it.
        if let Some(live) = &o.stream_view_type {
            d.replace_field(
                MappingField::StreamViewType,
                spec.stream_view_type.clone(),
                live.clone(),
            );
        }
        // The starting position is fixed at creation.
        d.replace_field(
            MappingField::StartingPosition,
            spec.starting_position.clone(),
            o.starting_position.clone(),
        );
        d.field(MappingField::BatchSize, spec.batch_size, o.batch_size);
        d.field(
            MappingField::BatchingWindowSecs,
            spec.batching_window_secs,
            o.batching_window_secs,
        );
        d.field(
            MappingField::BisectOnError,
            spec.bisect_on_error,
            o.bisect_on_error,
        );
        d.field(MappingField::MaxRetries, spec.max_retries, o.max_retries);
        d.field(
            MappingField::ReportBatchItemFailures,
            spec.report_batch_item_failures,
            o.report_batch_item_failures,
        );
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &EventSourceMappingSpec) -> Result<()> {
        // The table was possibly created a moment ago: its stream appears with it, but wait
        // for it rather than fail.
        // The table's streams are listed meanwhile: a stream that appears later is the
        // current one, which the search leaves out anyway.
        let waiting = format!("a stream on table {}", spec.table_name);
        let (stream, streams) = tokio::join!(
            wait_until(&waiting, Backoff::wait(ctx.wait_timeout), || stream_arn(
                ctx,
                &spec.table_name
            ),),
            table_streams(ctx, &spec.table_name)
        );
        let stream = stream?;
        // A mapping of ours still on an older stream would keep invoking the function with
        // the old stream's records (and orphan itself when that stream expires).
        for old in mappings_on_older(ctx, spec, &streams?, &stream).await? {
            delete_mapping(ctx, old.uuid().unwrap_or_default()).await?;
        }
        let function = alias_arn(ctx, spec);
        let lambda = &ctx.aws.lambda;
        let young = tokio::sync::OnceCell::new();
        let (stream, function, young) = (&stream, &function, &young);
        let created = retry(
            &format!("CreateEventSourceMapping {}", spec.name),
            Backoff {
                first: Duration::from_secs(1),
                max: Duration::from_secs(10),
                deadline: ctx.wait_timeout.min(Duration::from_secs(90)),
            },
            || async move {
                let sent = lambda
                    .create_event_source_mapping()
                    .event_source_arn(stream)
                    .function_name(function)
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
                    .await;
                match sent {
                    Ok(out) => Ok(out),
                    Err(e) => {
                        let why = match &e {
                            SdkError::ServiceError(s)
                                if matches!(
                                    s.err(),
                                    CreateEventSourceMappingError::InvalidParameterValueException(
                                        _
                                    )
                                ) =>
                            {
                                role_propagation(ctx, spec, young).await
                            }
                            _ => None,
                        };
                        Err((e, why))
                    }
                }
            },
            |(_, why)| *why,
        )
        .await
        .map_err(|(e, _)| e)
        .context("CreateEventSourceMapping")?;
        // A mapping is Creating for a while; with LATEST it delivers only what is written once
        // it is Enabled, so apply returns (and seeds the table) only then. One that fails to
        // start settles Disabled: that fails the create, with Lambda's reason.
        let Some(uuid) = created.uuid() else {
            return Ok(());
        };
        match wait_settled(ctx, uuid).await? {
            (Some(state), reason) if state != "Enabled" => anyhow::bail!(
                "event source mapping {uuid} is {state} after its create: {}",
                reason.unwrap_or_else(|| "Lambda gave no reason".into())
            ),
            _ => Ok(()),
        }
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &EventSourceMappingSpec,
        o: &ObservedMapping,
        changes: &[MappingField],
    ) -> Result<()> {
        let lambda = &ctx.aws.lambda;
        let moves = changes.iter().any(|field| match field {
            MappingField::Function => true,
            // Every update sends all of these: naming one changes nothing.
            MappingField::BatchSize
            | MappingField::BatchingWindowSecs
            | MappingField::BisectOnError
            | MappingField::MaxRetries
            | MappingField::ReportBatchItemFailures => false,
            // Fixed at creation: `diff` marks them as forcing a replacement.
            MappingField::Stream
            | MappingField::StreamViewType
            | MappingField::StartingPosition => false,
        });
        let function = alias_arn(ctx, spec);
        wait_settled(ctx, &o.uuid).await?;
        retry(
            &format!("UpdateEventSourceMapping {}", spec.name),
            Backoff::wait(ctx.wait_timeout),
            || {
                lambda
                    .update_event_source_mapping()
                    .uuid(&o.uuid)
                    .set_function_name(moves.then(|| function.clone()))
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
        spec: &EventSourceMappingSpec,
        o: &ObservedMapping,
    ) -> Result<()> {
        // Destroy leaves nothing of ours on the table's older streams either; they are
        // looked for while the observed mapping goes.
        let older = async {
            let Some(current) = &o.current_stream_arn else {
                return Ok(());
            };
            for old in old_stream_mappings(ctx, spec, current).await? {
                // The observed one may itself be on an old stream: it is being deleted.
                if old.uuid() != Some(o.uuid.as_str()) {
                    delete_mapping(ctx, old.uuid().unwrap_or_default()).await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        let (observed, older) = tokio::join!(delete_mapping(ctx, &o.uuid), older);
        observed?;
        older
    }
}

super::not_found_errors!(
    DeleteEventSourceMappingError::ResourceNotFoundException,
    GetEventSourceMappingError::ResourceNotFoundException,
);

/// Why a DeleteEventSourceMapping error is worth retrying: the mapping is still Creating or
/// Updating (ResourceInUse) or another change to it is in flight (ResourceConflict).
pub fn delete_retry_reason<R>(
    e: &SdkError<DeleteEventSourceMappingError, R>,
) -> Option<&'static str> {
    match e {
        SdkError::ServiceError(s) => match s.err() {
            DeleteEventSourceMappingError::ResourceInUseException(_) => {
                Some("the mapping is still being created or updated")
            }
            DeleteEventSourceMappingError::ResourceConflictException(_) => {
                Some("another change to the mapping is in progress")
            }
            _ => None,
        },
        _ => None,
    }
}

/// Deletes a mapping and waits until it is gone. DeleteEventSourceMapping only starts the
/// deletion (`State=Deleting`); until it ends, a new mapping between the same stream and
/// function is refused as a duplicate, so a replace must wait here before creating.
pub async fn delete_mapping(ctx: &Ctx, uuid: &str) -> Result<()> {
    let lambda = &ctx.aws.lambda;
    let deleted = retry(
        &format!("DeleteEventSourceMapping {uuid}"),
        Backoff::wait(ctx.wait_timeout),
        || lambda.delete_event_source_mapping().uuid(uuid).send(),
        delete_retry_reason,
    )
    .await;
    match deleted {
        Ok(_) => {}
        Err(e) if super::not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(e).context("DeleteEventSourceMapping"),
    }
    wait_until(
        &format!("event source mapping {uuid} to be deleted"),
        Backoff::wait(ctx.wait_timeout),
        || async {
            match lambda.get_event_source_mapping().uuid(uuid).send().await {
                Ok(_) => Ok(None),
                Err(e) if super::not_found(&e) => Ok(Some(())),
                Err(e) => Err(e).context("GetEventSourceMapping"),
            }
        },
    )
    .await
}

/// Whether an InvalidParameterValueException of CreateEventSourceMapping may be IAM
/// propagation: Lambda checks the function's role for the stream permissions, and like the
/// role itself they propagate for a while after the role is created. Lambda uses the same
/// variant for permanent mistakes, so, as for CreateFunction, the role's age decides (see
/// `lambda_function`); it is looked up once per create.
async fn role_propagation(
    ctx: &Ctx,
    spec: &EventSourceMappingSpec,
    young: &tokio::sync::OnceCell<Option<&'static str>>,
) -> Option<&'static str> {
    *young
        .get_or_init(|| async {
            let role = ctx
                .aws
                .lambda
                .get_function_configuration()
                .function_name(&spec.function_name)
                .send()
                .await
                .ok()
                .and_then(|c| c.role().map(str::to_string))?;
            let fresh = tokio::sync::OnceCell::new();
            super::lambda_function::propagation_reason(ctx, &role, &fresh)
                .await
                .map(|_| "the function's role may not have its stream permissions yet (IAM propagation)")
        })
        .await
}

/// Mappings of our function on streams of the table other than `current`. DynamoDB keeps a
/// disabled stream listed (ListStreams) for 24 hours, which is as long as such a mapping can
/// still read from it.
async fn old_stream_mappings(
    ctx: &Ctx,
    spec: &EventSourceMappingSpec,
    current: &str,
) -> Result<Vec<EventSourceMappingConfiguration>> {
    let streams = table_streams(ctx, &spec.table_name).await?;
    mappings_on_older(ctx, spec, &streams, current).await
}

/// Every stream ListStreams gives for `table`, the disabled ones included (all pages).
async fn table_streams(ctx: &Ctx, table: &str) -> Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut after = None;
    loop {
        let page = ctx
            .aws
            .dynamodbstreams
            .list_streams()
            .table_name(table)
            .set_exclusive_start_stream_arn(after)
            .send()
            .await
            .context("ListStreams")?;
        arns.extend(
            page.streams()
                .iter()
                .filter_map(|s| s.stream_arn().map(str::to_string)),
        );
        match page.last_evaluated_stream_arn() {
            Some(last) if !page.streams().is_empty() => after = Some(last.to_string()),
            _ => return Ok(arns),
        }
    }
}

/// Mappings of our function on the `streams` other than `current`.
async fn mappings_on_older(
    ctx: &Ctx,
    spec: &EventSourceMappingSpec,
    streams: &[String],
    current: &str,
) -> Result<Vec<EventSourceMappingConfiguration>> {
    let mut out = Vec::new();
    for old in streams.iter().filter(|arn| *arn != current) {
        let page = ctx
            .aws
            .lambda
            .list_event_source_mappings()
            .event_source_arn(old)
            .send()
            .await
            .context("ListEventSourceMappings")?;
        out.extend(
            page.event_source_mappings()
                .iter()
                .filter(|m| {
                    m.function_arn()
                        .is_some_and(|f| function_name(f) == spec.function_name)
                })
                .cloned(),
        );
    }
    Ok(out)
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

/// Waits out a transition; the state it settled in, and Lambda's reason for it.
async fn wait_settled(ctx: &Ctx, uuid: &str) -> Result<(Option<String>, Option<String>)> {
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
            let settled = (
                m.state().map(str::to_string),
                m.state_transition_reason().map(str::to_string),
            );
            Ok((!in_transition(m.state())).then_some(settled))
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
            stream_view_type: "NEW_IMAGE".into(),
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
            stream_view_type: Some("NEW_IMAGE".into()),
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
    fn a_new_stream_replaces_the_mapping() {
        let mut s = spec();
        s.stream_view_type = "NEW_AND_OLD_IMAGES".into();
        let d = EventSourceMapping::diff(&s, &observed());
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].field, "stream_view_type");
        assert!(d.0[0].forces_replacement);
        // Left on an older stream by an interrupted run: moved to the current one.
        let mut o = observed();
        o.current_stream_arn = Some("s2".into());
        let d = EventSourceMapping::diff(&spec(), &o);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].field, "stream");
        assert!(d.0[0].forces_replacement);
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
