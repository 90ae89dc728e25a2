//! Target-tracking scaling policies on DynamoDB scalable targets.
//!
//! PutScalingPolicy is an upsert keyed by policy name and target; like targets, policies
//! cannot carry tags and belong to the owner of their table.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_applicationautoscaling::error::SdkError;
use aws_sdk_applicationautoscaling::operation::delete_scaling_policy::DeleteScalingPolicyError;
use aws_sdk_applicationautoscaling::operation::put_scaling_policy::PutScalingPolicyError;
use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use serde_json::Value;
use stacks::ScalingPolicySpec;

use crate::engine::retry::{Backoff, retry};
use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What a scaling policy's diff compares.
    pub enum PolicyField {
        Metric = "metric",
        TargetValue = "target_value",
        ScaleInCooldownSecs = "scale_in_cooldown_secs",
        ScaleOutCooldownSecs = "scale_out_cooldown_secs",
    }
}

pub struct ScalingPolicy;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPolicy {
    pub metric: String,
    pub target_value: f64,
    pub scale_in_cooldown_secs: u32,
    pub scale_out_cooldown_secs: u32,
}

/// Target values are floats that round-trip through JSON; compare to a hundredth of a percent.
fn same_target(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.01
}

super::not_found_errors!(DeleteScalingPolicyError::ObjectNotFoundException,);

#[async_trait]
impl Provider for ScalingPolicy {
    type Spec = ScalingPolicySpec;
    type Observed = ObservedPolicy;
    type Field = PolicyField;
    const KIND: &'static str = "scaling_policy";
    const CREATE_CONVERGES: bool = true;

    async fn read(&self, ctx: &Ctx, spec: &ScalingPolicySpec) -> Result<Option<ObservedPolicy>> {
        // One listing of the namespace per plan pass serves every policy of the stack.
        let all = crate::engine::lookup::once("autoscaling.DescribeScalingPolicies", || async {
            let mut all = Vec::new();
            let mut token = None;
            loop {
                let page = ctx
                    .aws
                    .autoscaling
                    .describe_scaling_policies()
                    .service_namespace(ServiceNamespace::Dynamodb)
                    .set_next_token(token)
                    .send()
                    .await
                    .context("DescribeScalingPolicies")?;
                all.extend(page.scaling_policies().iter().cloned());
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => return Ok(all),
                }
            }
        })
        .await?;
        Ok(all
            .iter()
            .find(|p| {
                p.policy_name() == spec.name
                    && p.resource_id() == spec.resource_id
                    && p.scalable_dimension().as_str() == spec.dimension
            })
            .map(|p| {
                let c = p.target_tracking_scaling_policy_configuration();
                ObservedPolicy {
                    metric: c
                        .and_then(|c| c.predefined_metric_specification())
                        .map(|m| m.predefined_metric_type().as_str().to_string())
                        .unwrap_or_default(),
                    target_value: c.map(|c| c.target_value()).unwrap_or_default(),
                    scale_in_cooldown_secs: c
                        .and_then(|c| c.scale_in_cooldown())
                        .unwrap_or_default()
                        .max(0) as u32,
                    scale_out_cooldown_secs: c
                        .and_then(|c| c.scale_out_cooldown())
                        .unwrap_or_default()
                        .max(0) as u32,
                }
            }))
    }

    fn tags(_: &ObservedPolicy) -> Option<&BTreeMap<String, String>> {
        None
    }

    fn describe(spec: &ScalingPolicySpec) -> Diff<PolicyField> {
        let mut d = Diff::default();
        d.push(PolicyField::Metric, &Value::Null, &spec.metric, false);
        d.push(
            PolicyField::TargetValue,
            &Value::Null,
            &spec.target_value,
            false,
        );
        d.push(
            PolicyField::ScaleInCooldownSecs,
            &Value::Null,
            &spec.scale_in_cooldown_secs,
            false,
        );
        d.push(
            PolicyField::ScaleOutCooldownSecs,
            &Value::Null,
            &spec.scale_out_cooldown_secs,
            false,
        );
        d
    }

    fn diff(spec: &ScalingPolicySpec, o: &ObservedPolicy) -> Diff<PolicyField> {
        let mut d = Diff::default();
        d.field(PolicyField::Metric, &spec.metric, &o.metric);
        if !same_target(spec.target_value, o.target_value) {
            d.push(
                PolicyField::TargetValue,
                &o.target_value,
                &spec.target_value,
                false,
            );
        }
        d.field(
            PolicyField::ScaleInCooldownSecs,
            spec.scale_in_cooldown_secs,
            o.scale_in_cooldown_secs,
        );
        d.field(
            PolicyField::ScaleOutCooldownSecs,
            spec.scale_out_cooldown_secs,
            o.scale_out_cooldown_secs,
        );
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &ScalingPolicySpec) -> Result<()> {
        put(ctx, spec).await
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &ScalingPolicySpec,
        _o: &ObservedPolicy,
        _changes: &[PolicyField],
    ) -> Result<()> {
        put(ctx, spec).await
    }

    async fn delete(&self, ctx: &Ctx, spec: &ScalingPolicySpec, _o: &ObservedPolicy) -> Result<()> {
        let result = ctx
            .aws
            .autoscaling
            .delete_scaling_policy()
            .policy_name(&spec.name)
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(&spec.resource_id)
            .scalable_dimension(ScalableDimension::from(spec.dimension.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if super::not_found(&e) => Ok(()),
            Err(e) => Err(e).context("DeleteScalingPolicy"),
        }
    }
}

async fn put(ctx: &Ctx, spec: &ScalingPolicySpec) -> Result<()> {
    let config = TargetTrackingScalingPolicyConfiguration::builder()
        .target_value(spec.target_value)
        .predefined_metric_specification(
            PredefinedMetricSpecification::builder()
                .predefined_metric_type(MetricType::from(spec.metric.as_str()))
                .build()?,
        )
        .scale_in_cooldown(spec.scale_in_cooldown_secs as i32)
        .scale_out_cooldown(spec.scale_out_cooldown_secs as i32)
        .build()?;
    let req = ctx
        .aws
        .autoscaling
        .put_scaling_policy()
        .policy_name(&spec.name)
        .policy_type(PolicyType::TargetTrackingScaling)
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_id(&spec.resource_id)
        .scalable_dimension(ScalableDimension::from(spec.dimension.as_str()))
        .target_tracking_scaling_policy_configuration(config);
    retry(
        &format!("PutScalingPolicy {}", spec.name),
        Backoff::wait(ctx.wait_timeout.min(TARGET_SETTLE)),
        || req.clone().send(),
        put_retry_reason,
    )
    .await
    .context("PutScalingPolicy")?;
    Ok(())
}

/// How long a just-registered scalable target may stay invisible to PutScalingPolicy.
const TARGET_SETTLE: Duration = Duration::from_secs(120);

/// Why a PutScalingPolicy error is worth retrying. Right after RegisterScalableTarget (which
/// creates the service-linked role on an account's first use) the target or the role may not
/// be visible yet: ObjectNotFound / FailedResourceAccess for a few seconds. Both are bounded
/// by the caller, so a target that really is missing still fails.
pub fn put_retry_reason<R>(e: &SdkError<PutScalingPolicyError, R>) -> Option<&'static str> {
    match e {
        SdkError::ServiceError(s) => match s.err() {
            PutScalingPolicyError::ObjectNotFoundException(_) => {
                Some("the scalable target just registered is not visible yet")
            }
            PutScalingPolicyError::FailedResourceAccessException(_) => {
                Some("the service-linked role is not usable yet")
            }
            PutScalingPolicyError::ConcurrentUpdateException(_) => {
                Some("another change to the target is in progress")
            }
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_value_compares_with_tolerance() {
        let spec = ScalingPolicySpec {
            name: "p".into(),
            resource_id: "table/t".into(),
            dimension: "dynamodb:table:ReadCapacityUnits".into(),
            metric: "DynamoDBReadCapacityUtilization".into(),
            target_value: 70.0,
            scale_in_cooldown_secs: 60,
            scale_out_cooldown_secs: 60,
        };
        let mut o = ObservedPolicy {
            metric: spec.metric.clone(),
            target_value: 70.000_001,
            scale_in_cooldown_secs: 60,
            scale_out_cooldown_secs: 60,
        };
        assert!(ScalingPolicy::diff(&spec, &o).0.is_empty());
        o.target_value = 50.0;
        let d = ScalingPolicy::diff(&spec, &o);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].field, "target_value");
    }
}
