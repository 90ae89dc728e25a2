//! The account-level API Gateway setting access logging depends on: the CloudWatch Logs role
//! (`GetAccount.cloudwatchRoleArn`).
//!
//! It is one setting per account and region, shared by every API there, so this provider
//! only ever adds it: when the account has a role (ours or anyone's) there is nothing to do;
//! when it has none, it either creates the role and sets it (`api.setup_cloudwatch_role`) or
//! stops the apply with instructions. It is never undone: destroy leaves it out.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use aws_sdk_apigateway::error::SdkError;
use aws_sdk_apigateway::operation::update_account::UpdateAccountError;
use aws_sdk_apigateway::types::{Op, PatchOperation};
use aws_sdk_iam::operation::create_role::CreateRoleError;
use serde_json::{Value, json};
use stacks::ApiAccountSpec;

use super::apigw::{self, Quota};
use super::partition;
use crate::engine::retry::retry_at_most;
use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What the account settings show when planned.
    pub enum AccountField {
        CloudwatchRole = "cloudwatch_role",
    }
}

pub struct ApiAccount;

/// Attempts of UpdateAccount: with the 20 s pace, about two minutes for the new role to
/// become usable.
const ACCOUNT_ATTEMPTS: u32 = 7;

/// Why an UpdateAccount error is worth retrying: the role just created is not yet assumable
/// (BadRequest, the only variant API Gateway uses for it), or the account's quota.
pub fn update_account_retry_reason<R>(e: &SdkError<UpdateAccountError, R>) -> Option<&'static str> {
    match e {
        SdkError::ServiceError(s) => match s.err() {
            UpdateAccountError::BadRequestException(_) => {
                Some("the new role is not yet assumable by API Gateway")
            }
            UpdateAccountError::TooManyRequestsException(_) => {
                Some("UpdateAccount quota (1 per 20 s per account)")
            }
            _ => None,
        },
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedAccount {
    pub cloudwatch_role_arn: String,
}

const POLICY: &str = "service-role/AmazonAPIGatewayPushToCloudWatchLogs";

fn role_arn(ctx: &Ctx, name: &str) -> String {
    format!(
        "arn:{}:iam::{}:role/{name}",
        partition(&ctx.region),
        ctx.account_id
    )
}

/// The trust policy of the role xtask creates: API Gateway may assume it.
pub fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "apigateway.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// What to tell someone whose account has no API Gateway CloudWatch role.
pub fn missing_role_message(ctx: &Ctx, role: Option<&str>) -> String {
    let role = role.unwrap_or("apigateway-cloudwatch-logs");
    format!(
        "API Gateway access logging needs the account's CloudWatch Logs role, and account {} \
         has none in {} (GetAccount cloudwatchRoleArn is empty). Either set \
         `api.setup_cloudwatch_role = true` in the environment's config to let xtask create \
         role `{role}` and set it, or have an administrator do it once per account and region: \
         create a role trusted by apigateway.amazonaws.com with the managed policy \
         {POLICY}, then run `aws apigateway update-account --patch-operations \
         op=replace,path=/cloudwatchRoleArn,value=<role arn>`",
        ctx.account_id, ctx.region
    )
}

#[async_trait]
impl Provider for ApiAccount {
    type Spec = ApiAccountSpec;
    type Observed = ObservedAccount;
    type Field = AccountField;
    const KIND: &'static str = "api_account";
    const CREATE_CONVERGES: bool = true;
    const ROUND_TRIPS: u32 = 3;

    async fn read(&self, ctx: &Ctx, _spec: &ApiAccountSpec) -> Result<Option<ObservedAccount>> {
        let a = ctx
            .aws
            .apigateway
            .get_account()
            .send()
            .await
            .context("GetAccount")?;
        Ok(a.cloudwatch_role_arn()
            .filter(|r| !r.is_empty())
            .map(|r| ObservedAccount {
                cloudwatch_role_arn: r.to_string(),
            }))
    }

    fn tags(_: &ObservedAccount) -> Option<&BTreeMap<String, String>> {
        None
    }

    fn describe(spec: &ApiAccountSpec) -> Diff<AccountField> {
        let mut d = Diff::default();
        let what = if spec.setup {
            format!("role {} (created)", spec.role_name)
        } else {
            "(missing: apply will stop; see api.setup_cloudwatch_role)".to_string()
        };
        d.push(AccountField::CloudwatchRole, &Value::Null, &what, false);
        d
    }

    /// Any role will do: it is the account's, not this stack's.
    fn diff(_spec: &ApiAccountSpec, _o: &ObservedAccount) -> Diff<AccountField> {
        Diff::default()
    }

    async fn create(&self, ctx: &Ctx, spec: &ApiAccountSpec) -> Result<()> {
        if !spec.setup {
            bail!("{}", missing_role_message(ctx, Some(&spec.role_name)));
        }
        let iam = &ctx.aws.iam;
        let trust = trust_policy();
        match iam
            .create_role()
            .role_name(&spec.role_name)
            .description("Lets API Gateway write access logs to CloudWatch Logs (account-wide)")
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
        {
            Ok(_) => {}
            // Created by an earlier, interrupted run or by another env of this account.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), CreateRoleError::EntityAlreadyExistsException(_)) => {}
            Err(e) => return Err(e).context("CreateRole"),
        }
        iam.attach_role_policy()
            .role_name(&spec.role_name)
            .policy_arn(format!(
                "arn:{}:iam::aws:policy/{POLICY}",
                partition(&ctx.region)
            ))
            .send()
            .await
            .context("AttachRolePolicy")?;
        let arn = role_arn(ctx, &spec.role_name);
        // A new role is not usable by API Gateway for a few seconds; UpdateAccount says so
        // with a BadRequestException until it is. The call is quota-limited (one per 20 s per
        // account), so it is paced and retried a bounded number of times, not by the SDK.
        retry_at_most(
            "UpdateAccount",
            Quota::UpdateAccount.backoff(ctx.wait_timeout),
            ACCOUNT_ATTEMPTS,
            || async {
                ctx.aws
                    .apigateway
                    .update_account()
                    .patch_operations(
                        PatchOperation::builder()
                            .op(Op::Replace)
                            .path("/cloudwatchRoleArn")
                            .value(&arn)
                            .build(),
                    )
                    .customize()
                    .config_override(apigw::no_sdk_retries())
                    .send()
                    .await
            },
            update_account_retry_reason,
        )
        .await
        .context("UpdateAccount")?;
        Ok(())
    }

    async fn update(
        &self,
        _ctx: &Ctx,
        _spec: &ApiAccountSpec,
        _o: &ObservedAccount,
        _changes: &[AccountField],
    ) -> Result<()> {
        Ok(())
    }

    /// Other APIs of the account log through the same role: it stays.
    async fn delete(&self, _ctx: &Ctx, _spec: &ApiAccountSpec, _o: &ObservedAccount) -> Result<()> {
        Ok(())
    }
}
