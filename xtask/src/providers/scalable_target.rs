//! Application Auto Scaling scalable targets (DynamoDB read/write capacity bounds).
//!
//! Registering is an upsert, so create and update are the same call. Targets cannot carry
//! tags here; they belong to whoever owns the table they scale.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_applicationautoscaling::operation::deregister_scalable_target::DeregisterScalableTargetError;
use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use serde_json::Value;
use stacks::ScalableTargetSpec;

use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What a scalable target's diff compares.
    pub enum TargetField {
        Dimension = "dimension",
        Min = "min",
        Max = "max",
    }
}

pub struct ScalableTarget;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedTarget {
    pub min: u32,
    pub max: u32,
}

super::not_found_errors!(DeregisterScalableTargetError::ObjectNotFoundException,);

#[async_trait]
impl Provider for ScalableTarget {
    type Spec = ScalableTargetSpec;
    type Observed = ObservedTarget;
    type Field = TargetField;
    const KIND: &'static str = "scalable_target";
    const CREATE_CONVERGES: bool = true;

    async fn read(&self, ctx: &Ctx, spec: &ScalableTargetSpec) -> Result<Option<ObservedTarget>> {
        // One listing of the namespace per plan pass serves every target of the stack.
        let all = crate::engine::lookup::once("autoscaling.DescribeScalableTargets", || async {
            let mut all = Vec::new();
            let mut token = None;
            loop {
                let page = ctx
                    .aws
                    .autoscaling
                    .describe_scalable_targets()
                    .service_namespace(ServiceNamespace::Dynamodb)
                    .set_next_token(token)
                    .send()
                    .await
                    .context("DescribeScalableTargets")?;
                all.extend(page.scalable_targets().iter().cloned());
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => return Ok(all),
                }
            }
        })
        .await?;
        Ok(all
            .iter()
            .find(|t| {
                t.resource_id() == spec.resource_id
                    && t.scalable_dimension().as_str() == spec.dimension
            })
            .map(|t| ObservedTarget {
                min: t.min_capacity().max(0) as u32,
                max: t.max_capacity().max(0) as u32,
            }))
    }

    fn tags(_: &ObservedTarget) -> Option<&BTreeMap<String, String>> {
        None
    }

    fn describe(spec: &ScalableTargetSpec) -> Diff<TargetField> {
        let mut d = Diff::default();
        d.push(TargetField::Dimension, &Value::Null, &spec.dimension, false);
        d.push(TargetField::Min, &Value::Null, &spec.min, false);
        d.push(TargetField::Max, &Value::Null, &spec.max, false);
        d
    }

    fn diff(spec: &ScalableTargetSpec, o: &ObservedTarget) -> Diff<TargetField> {
        let mut d = Diff::default();
        d.field(TargetField::Min, spec.min, o.min);
        d.field(TargetField::Max, spec.max, o.max);
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &ScalableTargetSpec) -> Result<()> {
        register(ctx, spec).await
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &ScalableTargetSpec,
        _o: &ObservedTarget,
        _changes: &[TargetField],
    ) -> Result<()> {
        register(ctx, spec).await
    }

    async fn delete(
        &self,
        ctx: &Ctx,
        spec: &ScalableTargetSpec,
        _o: &ObservedTarget,
    ) -> Result<()> {
        let result = ctx
            .aws
            .autoscaling
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(&spec.resource_id)
            .scalable_dimension(ScalableDimension::from(spec.dimension.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if super::not_found(&e) => Ok(()),
            Err(e) => Err(e).context("DeregisterScalableTarget"),
        }
    }
}

async fn register(ctx: &Ctx, spec: &ScalableTargetSpec) -> Result<()> {
    ctx.aws
        .autoscaling
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_id(&spec.resource_id)
        .scalable_dimension(ScalableDimension::from(spec.dimension.as_str()))
        .min_capacity(spec.min as i32)
        .max_capacity(spec.max as i32)
        .send()
        .await
        .context("RegisterScalableTarget")?;
    Ok(())
}
