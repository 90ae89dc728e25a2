//! A REST API stage together with the deployment it serves.
//!
//! Changes to an API reach clients only through a new deployment that the stage is moved to.
//! The deployment's description records the content hash of the API definition it froze
//! ([`stacks::RestApiSpec::deployment_hash`]), so the plan compares hashes: equal means the
//! stage serves exactly the wanted API and nothing is deployed; different (or a deployment
//! without our hash) means exactly one new deployment. CreateDeployment is limited to one
//! every 5 s per account, so it goes through the retry helper with that interval; a lost
//! answer is followed by a look for the deployment it may have made ([`deploy`]).
//!
//! The stage also carries JSON access logs and method throttling. Access logging needs the
//! account's API Gateway CloudWatch role: checked before the stage is configured, with a
//! message saying how to fix it.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use aws_sdk_apigateway::error::SdkError;
use aws_sdk_apigateway::operation::create_deployment::CreateDeploymentError;
use aws_sdk_apigateway::operation::delete_deployment::DeleteDeploymentError;
use aws_sdk_apigateway::operation::delete_stage::DeleteStageError;
use aws_sdk_apigateway::operation::get_deployments::GetDeploymentsError;
use aws_sdk_apigateway::operation::get_stage::GetStageError;
use aws_sdk_apigateway::operation::get_stages::GetStagesError;
use aws_sdk_apigateway::types::{Deployment, Op, PatchOperation};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use serde_json::Value;
use stacks::{ApiStageSpec, DEPLOYMENT_HASH_PREFIX};

use super::apigw::{self, Quota};
use crate::engine::retry::retry;
use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What a stage's diff compares.
    pub enum StageField {
        Deployment = "deployment",
        AccessLogDestination = "access_log_destination",
        AccessLogFormat = "access_log_format",
        Throttle = "throttle",
        Tags = "tags",
    }
}

pub struct ApiStage;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedStage {
    pub api_id: String,
    pub deployment_id: Option<String>,
    /// The definition hash recorded on the deployment the stage serves, if it has ours.
    pub deployed_hash: Option<String>,
    pub access_log_destination: Option<String>,
    pub access_log_format: Option<String>,
    /// `*/*` method settings: rate and burst.
    pub throttle: Option<(f64, i32)>,
    pub tags: BTreeMap<String, String>,
}

/// The hash a deployment description records, if it is one of ours.
pub fn recorded_hash(description: Option<&str>) -> Option<String> {
    description
        .and_then(|d| d.strip_prefix(DEPLOYMENT_HASH_PREFIX))
        .map(str::to_string)
}

fn throttle(spec: &ApiStageSpec) -> (f64, i32) {
    (spec.throttle_rate, spec.throttle_burst as i32)
}

#[async_trait]
impl Provider for ApiStage {
    type Spec = ApiStageSpec;
    type Observed = ObservedStage;
    type Field = StageField;
    const KIND: &'static str = "api_stage";
    /// The REST API's id by name, then GetStage.
    const READ_ROUND_TRIPS: u32 = 2;
    const ROUND_TRIPS: u32 = 4;

    async fn read(&self, ctx: &Ctx, spec: &ApiStageSpec) -> Result<Option<ObservedStage>> {
        let Some(api) = apigw::find_rest_api(ctx, &spec.api_name).await? else {
            return Ok(None);
        };
        let api_id = api.id().unwrap_or_default().to_string();
        let gw = &ctx.aws.apigateway;
        // The stage and the API's deployments at once (pruning keeps them few): the hash the
        // served deployment records is found without a GetDeployment after GetStage.
        let (stage, deployments) = tokio::join!(
            gw.get_stage()
                .rest_api_id(&api_id)
                .stage_name(&spec.stage_name)
                .send(),
            all_deployments(ctx, &api_id)
        );
        let stage = match stage {
            Ok(s) => s,
            Err(e) if super::not_found(&e) => {
                return Ok(None);
            }
            Err(e) => return Err(e).context("GetStage"),
        };
        let deployment_id = stage.deployment_id().map(str::to_string);
        let deployed_hash = deployment_id.as_deref().and_then(|id| {
            deployments
                .as_ref()
                .ok()?
                .iter()
                .find(|d| d.id() == Some(id))
                .and_then(|d| recorded_hash(d.description()))
        });
        if deployment_id.is_some() {
            deployments?;
        }
        let throttle = stage
            .method_settings()
            .and_then(|m| m.get("*/*"))
            .map(|s| (s.throttling_rate_limit(), s.throttling_burst_limit()));
        Ok(Some(ObservedStage {
            api_id,
            deployment_id,
            deployed_hash,
            access_log_destination: stage
                .access_log_settings()
                .and_then(|a| a.destination_arn())
                .map(str::to_string),
            access_log_format: stage
                .access_log_settings()
                .and_then(|a| a.format())
                .map(str::to_string),
            throttle,
            tags: apigw::tags(stage.tags()),
        }))
    }

    fn tags(o: &ObservedStage) -> Option<&BTreeMap<String, String>> {
        Some(&o.tags)
    }

    fn describe(spec: &ApiStageSpec) -> Diff<StageField> {
        let mut d = Diff::default();
        d.push(
            StageField::Deployment,
            &Value::Null,
            &spec.deployment_hash,
            false,
        );
        d.push(
            StageField::AccessLogDestination,
            &Value::Null,
            &spec.access_log_group_arn,
            false,
        );
        d.push(StageField::Throttle, &Value::Null, &throttle(spec), false);
        d.push(StageField::Tags, &Value::Null, &spec.tags, false);
        d
    }

    fn diff(spec: &ApiStageSpec, o: &ObservedStage) -> Diff<StageField> {
        let mut d = Diff::default();
        d.field(
            StageField::Deployment,
            Some(spec.deployment_hash.clone()),
            o.deployed_hash.clone(),
        );
        d.field(
            StageField::AccessLogDestination,
            Some(spec.access_log_group_arn.clone()),
            o.access_log_destination.clone(),
        );
        d.field(
            StageField::AccessLogFormat,
            Some(spec.access_log_format.clone()),
            o.access_log_format.clone(),
        );
        d.field(StageField::Throttle, Some(throttle(spec)), o.throttle);
        d.field(StageField::Tags, &spec.tags, &o.tags);
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &ApiStageSpec) -> Result<()> {
        let api_id = apigw::rest_api_id(ctx, &spec.api_name).await?;
        // The role check rides beside the deployment, which no client sees until a stage
        // points at it: it costs no round-trip, and a missing role still stops the apply
        // before the stage exists (and takes the unserved deployment back).
        let (deployment, role) = tokio::join!(
            deploy(ctx, &api_id, &spec.deployment_hash),
            check_logging_role(ctx)
        );
        if let Err(refused) = role {
            if let Ok(id) = &deployment
                && let Err(e) = delete_deployment(ctx, &api_id, id).await
            {
                tracing::warn!(deployment = %id, error = format!("{e:#}"), "could not take back an unserved deployment");
            }
            return Err(refused);
        }
        let deployment = deployment?;
        ctx.aws
            .apigateway
            .create_stage()
            .rest_api_id(&api_id)
            .stage_name(&spec.stage_name)
            .deployment_id(&deployment)
            .set_tags(Some(
                spec.tags.clone().into_iter().collect::<HashMap<_, _>>(),
            ))
            .send()
            .await
            .context("CreateStage")?;
        patch_stage(ctx, &api_id, spec, settings_patch(spec)).await
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &ApiStageSpec,
        o: &ObservedStage,
        changes: &[StageField],
    ) -> Result<()> {
        let (mut deployment, mut logging, mut settings, mut tags) = (false, false, false, false);
        for field in changes {
            match field {
                StageField::Deployment => deployment = true,
                StageField::AccessLogDestination | StageField::AccessLogFormat => {
                    logging = true;
                    settings = true;
                }
                StageField::Throttle => settings = true,
                StageField::Tags => tags = true,
            }
        }
        let mut patch = Vec::new();
        if deployment {
            let id = deploy(ctx, &o.api_id, &spec.deployment_hash).await?;
            patch.push(replace("/deploymentId", &id));
        }
        if logging {
            check_logging_role(ctx).await?;
        }
        if settings {
            patch.extend(settings_patch(spec));
        }
        if !patch.is_empty() {
            patch_stage(ctx, &o.api_id, spec, patch).await?;
        }
        if tags {
            let arn = apigw::resource_arn(
                &ctx.region,
                &format!("/restapis/{}/stages/{}", o.api_id, spec.stage_name),
            );
            super::rest_api::update_tags(ctx, &arn, &spec.tags, &o.tags).await?;
        }
        if deployment {
            prune_deployments(ctx, &o.api_id).await?;
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, spec: &ApiStageSpec, o: &ObservedStage) -> Result<()> {
        match ctx
            .aws
            .apigateway
            .delete_stage()
            .rest_api_id(&o.api_id)
            .stage_name(&spec.stage_name)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if super::not_found(&e) => {}
            Err(e) => return Err(e).context("DeleteStage"),
        }
        prune_deployments(ctx, &o.api_id).await
    }
}

super::not_found_errors!(
    DeleteDeploymentError::NotFoundException,
    DeleteStageError::NotFoundException,
    GetDeploymentsError::NotFoundException,
    GetStageError::NotFoundException,
    GetStagesError::NotFoundException,
);

fn replace(path: &str, value: &str) -> PatchOperation {
    PatchOperation::builder()
        .op(Op::Replace)
        .path(path)
        .value(value)
        .build()
}

/// Access log settings and `*/*` throttling, as stage patch operations.
fn settings_patch(spec: &ApiStageSpec) -> Vec<PatchOperation> {
    vec![
        replace(
            "/accessLogSettings/destinationArn",
            &spec.access_log_group_arn,
        ),
        replace("/accessLogSettings/format", &spec.access_log_format),
        replace("/*/*/throttling/rateLimit", &spec.throttle_rate.to_string()),
        replace(
            "/*/*/throttling/burstLimit",
            &spec.throttle_burst.to_string(),
        ),
    ]
}

async fn patch_stage(
    ctx: &Ctx,
    api_id: &str,
    spec: &ApiStageSpec,
    patch: Vec<PatchOperation>,
) -> Result<()> {
    ctx.aws
        .apigateway
        .update_stage()
        .rest_api_id(api_id)
        .stage_name(&spec.stage_name)
        .set_patch_operations(Some(patch))
        .send()
        .await
        .context("UpdateStage")?;
    Ok(())
}

/// Creates a deployment recording `hash`, waiting out the account's deployment quota.
///
/// A deployment has no name and CreateDeployment no client token, so the SDK never resends it
/// (`no_sdk_retries`). When its answer is lost (no answer, a timeout, a server error) AWS may
/// have made it: before sending it again, look for a deployment recording the same hash. It
/// froze the same definition, so the stage can serve it, and no second one is made.
async fn deploy(ctx: &Ctx, api_id: &str, hash: &str) -> Result<String> {
    let description = format!("{DEPLOYMENT_HASH_PREFIX}{hash}");
    let failed = match create_deployment(ctx, api_id, &description).await {
        Ok(id) => return Ok(id),
        Err(e) if crate::aws::answer_lost(&e) => e,
        Err(e) => return Err(e).context("CreateDeployment"),
    };
    let failed = aws_sdk_apigateway::error::DisplayErrorContext(&failed).to_string();
    if let Some(id) = find_deployment(ctx, api_id, &description).await? {
        tracing::warn!(
            api_id,
            deployment = id,
            error = failed,
            "CreateDeployment's answer was lost but it made the deployment: using it"
        );
        return Ok(id);
    }
    tracing::warn!(
        api_id,
        error = failed,
        "CreateDeployment's answer was lost and it made nothing: creating again"
    );
    create_deployment(ctx, api_id, &description)
        .await
        .with_context(|| format!("CreateDeployment (again, after a lost answer: {failed})"))
}

async fn create_deployment(
    ctx: &Ctx,
    api_id: &str,
    description: &str,
) -> Result<String, SdkError<CreateDeploymentError, HttpResponse>> {
    let gw = &ctx.aws.apigateway;
    let d = retry(
        "CreateDeployment",
        Quota::CreateDeployment.backoff(ctx.wait_timeout),
        || async {
            gw.create_deployment()
                .rest_api_id(api_id)
                .description(description)
                .customize()
                .config_override(apigw::no_sdk_retries())
                .send()
                .await
        },
        apigw::deployment_retryable,
    )
    .await?;
    Ok(d.id().unwrap_or_default().to_string())
}

/// The newest deployment of the API whose description is `description`, if any.
async fn find_deployment(ctx: &Ctx, api_id: &str, description: &str) -> Result<Option<String>> {
    Ok(all_deployments(ctx, api_id)
        .await?
        .into_iter()
        .filter(|d| d.description() == Some(description))
        .filter_map(|d| Some((d.created_date().map(|t| t.secs()), d.id()?.to_string())))
        .max_by_key(|(created, _)| *created)
        .map(|(_, id)| id))
}

/// Every deployment of the API (all pages of GetDeployments).
async fn all_deployments(ctx: &Ctx, api_id: &str) -> Result<Vec<Deployment>> {
    let mut all = Vec::new();
    let mut position = None;
    loop {
        let page = ctx
            .aws
            .apigateway
            .get_deployments()
            .rest_api_id(api_id)
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("GetDeployments")?;
        all.extend(page.items().iter().cloned());
        match page.position() {
            Some(p) if !p.is_empty() && !page.items().is_empty() => position = Some(p.to_string()),
            _ => return Ok(all),
        }
    }
}

/// Deletes our deployments that no stage serves any more, so they do not pile up.
async fn prune_deployments(ctx: &Ctx, api_id: &str) -> Result<()> {
    let gw = &ctx.aws.apigateway;
    // Both listings at once: which deployments exist and which a stage still serves.
    let (stages, deployments) = tokio::join!(
        gw.get_stages().rest_api_id(api_id).send(),
        gw.get_deployments().rest_api_id(api_id).limit(500).send()
    );
    let stages = match stages {
        Ok(s) => s,
        Err(e) if super::not_found(&e) => {
            return Ok(());
        }
        Err(e) => return Err(e).context("GetStages"),
    };
    let in_use: Vec<&str> = stages
        .item()
        .iter()
        .filter_map(|s| s.deployment_id())
        .collect();
    let deployments = match deployments {
        Ok(d) => d,
        Err(e) if super::not_found(&e) => return Ok(()),
        Err(e) => return Err(e).context("GetDeployments"),
    };
    for d in deployments.items() {
        let Some(id) = d.id() else { continue };
        if in_use.contains(&id) || recorded_hash(d.description()).is_none() {
            continue;
        }
        delete_deployment(ctx, api_id, id).await?;
    }
    Ok(())
}

/// Deletes one deployment; one already gone is fine.
async fn delete_deployment(ctx: &Ctx, api_id: &str, id: &str) -> Result<()> {
    match ctx
        .aws
        .apigateway
        .delete_deployment()
        .rest_api_id(api_id)
        .deployment_id(id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if super::not_found(&e) => Ok(()),
        Err(e) => Err(e).context("DeleteDeployment"),
    }
}

/// Access logging needs the account's CloudWatch role; without it UpdateStage fails with a
/// message that does not say so. Stop first, saying what to do.
async fn check_logging_role(ctx: &Ctx) -> Result<()> {
    let account = ctx
        .aws
        .apigateway
        .get_account()
        .send()
        .await
        .context("GetAccount")?;
    if account.cloudwatch_role_arn().is_none_or(str::is_empty) {
        bail!("{}", super::api_account::missing_role_message(ctx, None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ApiStageSpec {
        ApiStageSpec {
            api_name: "invoice-api-gateway-dev".into(),
            stage_name: "v1".into(),
            deployment_hash: "ab".repeat(32),
            access_log_group_arn: "arn:aws:logs:eu-west-1:1:log-group:/aws/apigateway/x".into(),
            access_log_format: "{}".into(),
            throttle_rate: 50.0,
            throttle_burst: 100,
            tags: BTreeMap::new(),
        }
    }

    fn live(s: &ApiStageSpec) -> ObservedStage {
        ObservedStage {
            api_id: "abc".into(),
            deployment_id: Some("d1".into()),
            deployed_hash: Some(s.deployment_hash.clone()),
            access_log_destination: Some(s.access_log_group_arn.clone()),
            access_log_format: Some(s.access_log_format.clone()),
            throttle: Some((50.0, 100)),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn the_same_hash_never_redeploys() {
        let s = spec();
        assert!(ApiStage::diff(&s, &live(&s)).0.is_empty());
    }

    #[test]
    fn another_hash_or_a_foreign_deployment_redeploys() {
        let s = spec();
        let mut o = live(&s);
        o.deployed_hash = Some("00".repeat(32));
        assert!(ApiStage::diff(&s, &o).has("deployment"));
        o.deployed_hash = None;
        assert!(ApiStage::diff(&s, &o).has("deployment"));
    }

    #[test]
    fn only_our_descriptions_carry_a_hash() {
        assert_eq!(
            recorded_hash(Some(&format!("{DEPLOYMENT_HASH_PREFIX}abc"))),
            Some("abc".into())
        );
        assert_eq!(recorded_hash(Some("deployed by hand")), None);
        assert_eq!(recorded_hash(None), None);
    }
}
