//! Usage plans: throttle and quota for the keys attached, bound to one API stage, with this
//! stack's API key attached.
//!
//! The plan refers to the API and the key by id, which only exist once they are created, so
//! both are looked up by name when the plan is read and again when it is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_apigateway::error::SdkError;
use aws_sdk_apigateway::operation::create_usage_plan::CreateUsagePlanOutput;
use aws_sdk_apigateway::operation::create_usage_plan_key::CreateUsagePlanKeyError;
use aws_sdk_apigateway::operation::delete_usage_plan::DeleteUsagePlanError;
use aws_sdk_apigateway::types::{
    ApiStage, Op, PatchOperation, QuotaPeriodType, QuotaSettings, ThrottleSettings,
};
use serde_json::Value;
use stacks::UsagePlanSpec;

use super::apigw;
use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What a usage plan's diff compares.
    pub enum PlanField {
        ApiStages = "api_stages",
        Throttle = "throttle",
        Quota = "quota",
        Keys = "keys",
        Tags = "tags",
    }
}

pub struct UsagePlan;

/// What the plan shows for an id that does not exist yet.
const AFTER_APPLY: &str = "(known after apply)";

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPlan {
    pub id: String,
    /// `apiId:stage` of every bound stage.
    pub api_stages: BTreeSet<String>,
    pub throttle: Option<(f64, i32)>,
    pub quota: Option<(i32, String)>,
    pub key_ids: BTreeSet<String>,
    pub tags: BTreeMap<String, String>,
    /// Ids of this stack's API and key, as found when this plan was read.
    pub api_id: Option<String>,
    pub key_id: Option<String>,
}

fn wanted_stage(spec: &UsagePlanSpec, api_id: Option<&str>) -> String {
    format!("{}:{}", api_id.unwrap_or(AFTER_APPLY), spec.stage_name)
}

fn throttle(spec: &UsagePlanSpec) -> (f64, i32) {
    (spec.rate_limit, spec.burst_limit as i32)
}

fn quota(spec: &UsagePlanSpec) -> (i32, String) {
    (spec.quota_limit as i32, spec.quota_period.clone())
}

async fn find(ctx: &Ctx, name: &str) -> Result<Option<aws_sdk_apigateway::types::UsagePlan>> {
    crate::engine::lookup::once(&format!("apigateway.GetUsagePlans.{name}"), || {
        find_now(ctx, name)
    })
    .await
}

async fn find_now(ctx: &Ctx, name: &str) -> Result<Option<aws_sdk_apigateway::types::UsagePlan>> {
    let mut position = None;
    loop {
        let page = ctx
            .aws
            .apigateway
            .get_usage_plans()
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("GetUsagePlans")?;
        if let Some(p) = page.items().iter().find(|p| p.name() == Some(name)) {
            return Ok(Some(p.clone()));
        }
        match page.position() {
            Some(p) if !p.is_empty() && !page.items().is_empty() => position = Some(p.to_string()),
            _ => return Ok(None),
        }
    }
}

super::not_found_errors!(DeleteUsagePlanError::NotFoundException,);

/// CreateUsagePlan for the spec's stage, with its throttle, quota and tags.
async fn create_plan(ctx: &Ctx, spec: &UsagePlanSpec) -> Result<CreateUsagePlanOutput> {
    let api_id = apigw::rest_api_id(ctx, &spec.api_name).await?;
    ctx.aws
        .apigateway
        .create_usage_plan()
        .name(&spec.name)
        .api_stages(
            ApiStage::builder()
                .api_id(&api_id)
                .stage(&spec.stage_name)
                .build(),
        )
        .throttle(
            ThrottleSettings::builder()
                .rate_limit(spec.rate_limit)
                .burst_limit(spec.burst_limit as i32)
                .build(),
        )
        .quota(
            QuotaSettings::builder()
                .limit(spec.quota_limit as i32)
                .period(QuotaPeriodType::from(spec.quota_period.as_str()))
                .build(),
        )
        .set_tags(Some(
            spec.tags.clone().into_iter().collect::<HashMap<_, _>>(),
        ))
        .send()
        .await
        .context("CreateUsagePlan")
}

#[async_trait]
impl Provider for UsagePlan {
    type Spec = UsagePlanSpec;
    type Observed = ObservedPlan;
    type Field = PlanField;
    const KIND: &'static str = "usage_plan";
    /// GetUsagePlans, then the plan's keys.
    const READ_ROUND_TRIPS: u32 = 2;
    const ROUND_TRIPS: u32 = 3;

    async fn read(&self, ctx: &Ctx, spec: &UsagePlanSpec) -> Result<Option<ObservedPlan>> {
        let Some(p) = find(ctx, &spec.name).await? else {
            return Ok(None);
        };
        let id = p.id().unwrap_or_default().to_string();
        let (keys, api, key) = tokio::join!(
            ctx.aws
                .apigateway
                .get_usage_plan_keys()
                .usage_plan_id(&id)
                .limit(500)
                .send(),
            apigw::find_rest_api(ctx, &spec.api_name),
            apigw::find_api_key(ctx, &spec.key_name),
        );
        Ok(Some(ObservedPlan {
            api_stages: p
                .api_stages()
                .iter()
                .map(|s| {
                    format!(
                        "{}:{}",
                        s.api_id().unwrap_or_default(),
                        s.stage().unwrap_or_default()
                    )
                })
                .collect(),
            throttle: p.throttle().map(|t| (t.rate_limit(), t.burst_limit())),
            quota: p.quota().map(|q| {
                (
                    q.limit(),
                    q.period()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default(),
                )
            }),
            key_ids: keys
                .context("GetUsagePlanKeys")?
                .items()
                .iter()
                .filter_map(|k| k.id().map(str::to_string))
                .collect(),
            tags: apigw::tags(p.tags()),
            api_id: api?.and_then(|a| a.id().map(str::to_string)),
            key_id: key?.and_then(|k| k.id().map(str::to_string)),
            id,
        }))
    }

    fn tags(o: &ObservedPlan) -> Option<&BTreeMap<String, String>> {
        Some(&o.tags)
    }

    fn describe(spec: &UsagePlanSpec) -> Diff<PlanField> {
        let mut d = Diff::default();
        d.push(
            PlanField::ApiStages,
            &Value::Null,
            &[format!("{}:{}", spec.api_name, spec.stage_name)],
            false,
        );
        d.push(PlanField::Throttle, &Value::Null, &throttle(spec), false);
        d.push(PlanField::Quota, &Value::Null, &quota(spec), false);
        d.push(PlanField::Keys, &Value::Null, &[&spec.key_name], false);
        d.push(PlanField::Tags, &Value::Null, &spec.tags, false);
        d
    }

    fn diff(spec: &UsagePlanSpec, o: &ObservedPlan) -> Diff<PlanField> {
        let mut d = Diff::default();
        d.field(
            PlanField::ApiStages,
            BTreeSet::from([wanted_stage(spec, o.api_id.as_deref())]),
            o.api_stages.clone(),
        );
        d.field(PlanField::Throttle, Some(throttle(spec)), o.throttle);
        d.field(PlanField::Quota, Some(quota(spec)), o.quota.clone());
        let attached = o.key_id.as_ref().is_some_and(|k| o.key_ids.contains(k));
        if !attached {
            d.push(
                PlanField::Keys,
                &o.key_ids,
                &[o.key_id.as_deref().unwrap_or(AFTER_APPLY)],
                false,
            );
        }
        d.field(PlanField::Tags, &spec.tags, &o.tags);
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &UsagePlanSpec) -> Result<()> {
        // The key is looked up beside the create: it is needed only to attach it.
        let (created, key) = tokio::join!(create_plan(ctx, spec), key_id(ctx, spec));
        let (created, key) = (created?, key?);
        attach_key(ctx, created.id().unwrap_or_default(), &key).await
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &UsagePlanSpec,
        o: &ObservedPlan,
        changes: &[PlanField],
    ) -> Result<()> {
        let (mut keys, mut tags) = (false, false);
        let op = |op: Op, path: &str, value: String| {
            PatchOperation::builder()
                .op(op)
                .path(path)
                .value(value)
                .build()
        };
        let mut patch = Vec::new();
        for field in changes {
            match field {
                PlanField::ApiStages => {
                    // Looked up again: the API may have been created by this very apply.
                    let api_id = apigw::rest_api_id(ctx, &spec.api_name).await?;
                    let want = wanted_stage(spec, Some(&api_id));
                    for s in &o.api_stages {
                        if s != &want {
                            patch.push(op(Op::Remove, "/apiStages", s.clone()));
                        }
                    }
                    if !o.api_stages.contains(&want) {
                        patch.push(op(Op::Add, "/apiStages", want));
                    }
                }
                PlanField::Throttle => {
                    let (rate, burst) = (spec.rate_limit, spec.burst_limit);
                    patch.push(op(Op::Replace, "/throttle/rateLimit", rate.to_string()));
                    patch.push(op(Op::Replace, "/throttle/burstLimit", burst.to_string()));
                }
                PlanField::Quota => {
                    let limit = spec.quota_limit.to_string();
                    patch.push(op(Op::Replace, "/quota/limit", limit));
                    patch.push(op(Op::Replace, "/quota/period", spec.quota_period.clone()));
                }
                PlanField::Keys => keys = true,
                PlanField::Tags => tags = true,
            }
        }
        if !patch.is_empty() {
            ctx.aws
                .apigateway
                .update_usage_plan()
                .usage_plan_id(&o.id)
                .set_patch_operations(Some(patch))
                .send()
                .await
                .context("UpdateUsagePlan")?;
        }
        if keys {
            attach_key(ctx, &o.id, &key_id(ctx, spec).await?).await?;
        }
        if tags {
            let arn = apigw::resource_arn(&ctx.region, &format!("/usageplans/{}", o.id));
            super::rest_api::update_tags(ctx, &arn, &spec.tags, &o.tags).await?;
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, _spec: &UsagePlanSpec, o: &ObservedPlan) -> Result<()> {
        let gw = &ctx.aws.apigateway;
        // AWS refuses to delete a plan that is still bound to stages.
        if !o.api_stages.is_empty() {
            let patch = o
                .api_stages
                .iter()
                .map(|s| {
                    PatchOperation::builder()
                        .op(Op::Remove)
                        .path("/apiStages")
                        .value(s)
                        .build()
                })
                .collect();
            gw.update_usage_plan()
                .usage_plan_id(&o.id)
                .set_patch_operations(Some(patch))
                .send()
                .await
                .context("UpdateUsagePlan (unbinding stages)")?;
        }
        match gw.delete_usage_plan().usage_plan_id(&o.id).send().await {
            Ok(_) => Ok(()),
            Err(e) if super::not_found(&e) => Ok(()),
            Err(e) => Err(e).context("DeleteUsagePlan"),
        }
    }
}

/// The id of the plan's API key, which must exist.
async fn key_id(ctx: &Ctx, spec: &UsagePlanSpec) -> Result<String> {
    if let Some(id) = apigw::recall_api_key(&spec.key_name) {
        return Ok(id);
    }
    apigw::find_api_key(ctx, &spec.key_name)
        .await?
        .and_then(|k| k.id().map(str::to_string))
        .with_context(|| format!("API key {} does not exist", spec.key_name))
}

async fn attach_key(ctx: &Ctx, plan_id: &str, key: &str) -> Result<()> {
    match ctx
        .aws
        .apigateway
        .create_usage_plan_key()
        .usage_plan_id(plan_id)
        .key_id(key)
        .key_type("API_KEY")
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already attached (an earlier run stopped after this call).
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), CreateUsagePlanKeyError::ConflictException(_)) =>
        {
            Ok(())
        }
        Err(e) => Err(e).context("CreateUsagePlanKey"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UsagePlanSpec {
        UsagePlanSpec {
            name: "plan".into(),
            api_name: "api".into(),
            stage_name: "v1".into(),
            key_name: "key".into(),
            rate_limit: 20.0,
            burst_limit: 40,
            quota_limit: 1000,
            quota_period: "MONTH".into(),
            tags: BTreeMap::new(),
        }
    }

    fn live() -> ObservedPlan {
        ObservedPlan {
            id: "p".into(),
            api_stages: BTreeSet::from(["a1:v1".to_string()]),
            throttle: Some((20.0, 40)),
            quota: Some((1000, "MONTH".into())),
            key_ids: BTreeSet::from(["k1".to_string()]),
            tags: BTreeMap::new(),
            api_id: Some("a1".into()),
            key_id: Some("k1".into()),
        }
    }

    #[test]
    fn matching_plan_has_no_diff() {
        assert!(UsagePlan::diff(&spec(), &live()).0.is_empty());
    }

    #[test]
    fn a_recreated_api_or_key_rebinds_the_plan() {
        let mut o = live();
        o.api_id = None;
        o.key_id = Some("k2".into());
        let d = UsagePlan::diff(&spec(), &o);
        assert!(d.has("api_stages") && d.has("keys"));
        assert_eq!(d.0[0].new, serde_json::json!(["(known after apply):v1"]));
    }

    #[test]
    fn limits_are_compared() {
        let mut s = spec();
        s.quota_period = "DAY".into();
        s.burst_limit = 41;
        let d = UsagePlan::diff(&s, &live());
        assert!(d.has("quota") && d.has("throttle"));
    }
}
