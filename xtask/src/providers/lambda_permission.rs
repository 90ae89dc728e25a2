//! Resource-policy statements that let API Gateway invoke a function alias, scoped to one
//! API, stage, method and path through `AWS:SourceArn`.
//!
//! Statement ids are stable (derived from the route), so a re-apply finds the statement
//! instead of adding a duplicate. Lambda has no update for a statement: a changed one (say,
//! the API was recreated with a new id) is removed and added again.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_lambda::operation::get_policy::GetPolicyError;
use aws_sdk_lambda::operation::remove_permission::RemovePermissionError;
use serde_json::Value;
use stacks::LambdaPermissionSpec;

use super::{apigw, partition};
use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What a Lambda permission's diff compares.
    pub enum PermissionField {
        Function = "function",
        Principal = "principal",
        Action = "action",
        SourceArn = "source_arn",
    }
}

pub struct LambdaPermission;

const AFTER_APPLY: &str = "(known after apply)";

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPermission {
    pub principal: Option<String>,
    pub action: Option<String>,
    pub source_arn: Option<String>,
    /// The id of this stack's API when the plan was read.
    pub api_id: Option<String>,
}

/// `arn:aws:execute-api:<region>:<account>:<api id>/<stage>/<METHOD>/<path>`.
pub fn source_arn(ctx: &Ctx, spec: &LambdaPermissionSpec, api_id: Option<&str>) -> String {
    format!(
        "arn:{}:execute-api:{}:{}:{}/{}",
        partition(&ctx.region),
        ctx.region,
        ctx.account_id,
        api_id.unwrap_or(AFTER_APPLY),
        spec.source_arn_suffix
    )
}

/// The statement with `sid` in a function policy document.
fn statement<'a>(policy: &'a Value, sid: &str) -> Option<&'a Value> {
    policy
        .get("Statement")?
        .as_array()?
        .iter()
        .find(|s| s.get("Sid").and_then(Value::as_str) == Some(sid))
}

fn observe(policy: &Value, sid: &str) -> Option<ObservedPermission> {
    let s = statement(policy, sid)?;
    let principal = match s.get("Principal") {
        Some(Value::String(p)) => Some(p.clone()),
        Some(p) => p.get("Service").and_then(Value::as_str).map(str::to_string),
        None => None,
    };
    Some(ObservedPermission {
        principal,
        action: s.get("Action").and_then(Value::as_str).map(str::to_string),
        source_arn: s
            .pointer("/Condition/ArnLike/AWS:SourceArn")
            .and_then(Value::as_str)
            .map(str::to_string),
        api_id: None,
    })
}

#[async_trait]
impl Provider for LambdaPermission {
    type Spec = LambdaPermissionSpec;
    type Observed = ObservedPermission;
    type Field = PermissionField;
    const KIND: &'static str = "lambda_permission";
    const CREATE_CONVERGES: bool = true;
    const ROUND_TRIPS: u32 = 2;

    async fn read(
        &self,
        ctx: &Ctx,
        spec: &LambdaPermissionSpec,
    ) -> Result<Option<ObservedPermission>> {
        let (policy, api) = tokio::join!(
            ctx.aws
                .lambda
                .get_policy()
                .function_name(&spec.function_name)
                .qualifier(&spec.qualifier)
                .send(),
            apigw::find_rest_api(ctx, &spec.api_name)
        );
        let policy = match policy {
            Ok(p) => p,
            // No function, no alias, or no policy yet: no statement either.
            Err(e) if super::not_found(&e) => {
                return Ok(None);
            }
            Err(e) => return Err(e).context("GetPolicy"),
        };
        let doc: Value = policy
            .policy()
            .map(serde_json::from_str)
            .transpose()
            .context("parsing the function policy")?
            .unwrap_or(Value::Null);
        Ok(observe(&doc, &spec.statement_id).map(|mut o| {
            o.api_id = api.ok().flatten().and_then(|a| a.id().map(str::to_string));
            o
        }))
    }

    fn tags(_: &ObservedPermission) -> Option<&BTreeMap<String, String>> {
        None
    }

    fn describe(spec: &LambdaPermissionSpec) -> Diff<PermissionField> {
        let mut d = Diff::default();
        d.push(
            PermissionField::Function,
            &Value::Null,
            &format!("{}:{}", spec.function_name, spec.qualifier),
            false,
        );
        d.push(
            PermissionField::Principal,
            &Value::Null,
            &spec.principal,
            false,
        );
        d.push(
            PermissionField::SourceArn,
            &Value::Null,
            &format!("...:{AFTER_APPLY}/{}", spec.source_arn_suffix),
            false,
        );
        d
    }

    fn diff(spec: &LambdaPermissionSpec, o: &ObservedPermission) -> Diff<PermissionField> {
        let mut d = Diff::default();
        d.field(
            PermissionField::Principal,
            Some(spec.principal.as_str()),
            o.principal.as_deref(),
        );
        d.field(
            PermissionField::Action,
            Some("lambda:InvokeFunction"),
            o.action.as_deref(),
        );
        // The region and account are the function's own: only the API part can differ.
        let live_suffix = o
            .source_arn
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .map(|(_, tail)| tail.to_string());
        let want = format!(
            "{}/{}",
            o.api_id.as_deref().unwrap_or(AFTER_APPLY),
            spec.source_arn_suffix
        );
        d.field(PermissionField::SourceArn, Some(want), live_suffix);
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &LambdaPermissionSpec) -> Result<()> {
        let api_id = apigw::rest_api_id(ctx, &spec.api_name).await?;
        ctx.aws
            .lambda
            .add_permission()
            .function_name(&spec.function_name)
            .qualifier(&spec.qualifier)
            .statement_id(&spec.statement_id)
            .action("lambda:InvokeFunction")
            .principal(&spec.principal)
            .source_arn(source_arn(ctx, spec, Some(&api_id)))
            .source_account(&ctx.account_id)
            .send()
            .await
            .context("AddPermission")?;
        Ok(())
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &LambdaPermissionSpec,
        o: &ObservedPermission,
        _changes: &[PermissionField],
    ) -> Result<()> {
        self.delete(ctx, spec, o).await?;
        self.create(ctx, spec).await
    }

    async fn delete(
        &self,
        ctx: &Ctx,
        spec: &LambdaPermissionSpec,
        _o: &ObservedPermission,
    ) -> Result<()> {
        match ctx
            .aws
            .lambda
            .remove_permission()
            .function_name(&spec.function_name)
            .qualifier(&spec.qualifier)
            .statement_id(&spec.statement_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if super::not_found(&e) => Ok(()),
            Err(e) => Err(e).context("RemovePermission"),
        }
    }
}

super::not_found_errors!(
    GetPolicyError::ResourceNotFoundException,
    RemovePermissionError::ResourceNotFoundException,
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> LambdaPermissionSpec {
        LambdaPermissionSpec {
            function_name: "insert-invoice-dev".into(),
            qualifier: "live".into(),
            statement_id: "apigateway-post-insert-invoice".into(),
            principal: "apigateway.amazonaws.com".into(),
            api_name: "invoice-api-gateway-dev".into(),
            source_arn_suffix: "v1/POST/insert-invoice".into(),
        }
    }

    fn policy(source: &str) -> Value {
        json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "other", "Effect": "Allow"},
            {"Sid": "apigateway-post-insert-invoice", "Effect": "Allow",
             "Principal": {"Service": "apigateway.amazonaws.com"},
             "Action": "lambda:InvokeFunction",
             "Resource": "arn:aws:lambda:eu-west-1:1:function:insert-invoice-dev:live",
             "Condition": {"ArnLike": {"AWS:SourceArn": source}}}
        ]})
    }

    #[test]
    fn a_statement_scoped_to_our_api_route_has_no_diff() {
        let p = policy("arn:aws:execute-api:eu-west-1:123456789012:abc123/v1/POST/insert-invoice");
        let mut o = observe(&p, "apigateway-post-insert-invoice").unwrap();
        o.api_id = Some("abc123".into());
        assert!(LambdaPermission::diff(&spec(), &o).0.is_empty());
    }

    #[test]
    fn a_statement_for_another_api_or_a_wildcard_is_a_change() {
        for source in [
            "arn:aws:execute-api:eu-west-1:123456789012:old999/v1/POST/insert-invoice",
            "arn:aws:execute-api:eu-west-1:123456789012:abc123/*/*/*",
        ] {
            let mut o = observe(&policy(source), "apigateway-post-insert-invoice").unwrap();
            o.api_id = Some("abc123".into());
            assert!(
                LambdaPermission::diff(&spec(), &o).has("source_arn"),
                "{source}"
            );
        }
    }

    #[test]
    fn other_statements_are_not_ours() {
        assert!(observe(&policy("x"), "missing").is_none());
    }
}
