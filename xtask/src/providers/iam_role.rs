//! IAM roles: trust policy, attached managed policies, one inline policy, tags.
//!
//! Policies are compared as JSON with set semantics (statement order, action order and the
//! string-or-list forms do not matter), because IAM returns documents URL-encoded and
//! reformatted: a string compare would report drift on every run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_iam::error::SdkError;
use aws_sdk_iam::operation::create_role::CreateRoleError;
use aws_sdk_iam::operation::delete_role::DeleteRoleError;
use aws_sdk_iam::operation::delete_role_policy::DeleteRolePolicyError;
use aws_sdk_iam::operation::detach_role_policy::DetachRolePolicyError;
use aws_sdk_iam::operation::get_role::GetRoleError;
use aws_sdk_iam::types::Tag;
use serde_json::Value;
use stacks::RoleSpec;

use crate::engine::retry::{Backoff, retry};
use crate::engine::{Ctx, Diff, Provider};

/// How long DeleteRole may keep answering DeleteConflict after the last detach.
const DETACH_SETTLE: Duration = Duration::from_secs(60);

super::fields! {
    /// What a role's diff compares.
    pub enum RoleField {
        TrustPolicy = "trust_policy",
        ManagedPolicies = "managed_policies",
        InlinePolicies = "inline_policies",
        Tags = "tags",
    }
}

pub struct IamRole;

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRole {
    pub trust_policy: Value,
    pub managed_policy_arns: BTreeSet<String>,
    /// Every inline policy, by name, normalised.
    pub inline_policies: BTreeMap<String, Value>,
    pub tags: BTreeMap<String, String>,
}

/// Parses a policy document as IAM returns it: URL-encoded JSON (or plain JSON, as some
/// endpoints and emulators answer).
pub fn parse_policy(document: &str) -> Result<Value> {
    if let Ok(v) = serde_json::from_str(document) {
        return Ok(v);
    }
    let decoded = urlencoding::decode(document).context("URL-decoding a policy document")?;
    serde_json::from_str(&decoded).context("parsing a policy document")
}

/// A canonical form of a policy document: statements as a sorted set, and every
/// action/resource/principal value as a sorted set of strings, so that two documents IAM
/// treats the same compare equal.
pub fn normalize_policy(policy: &Value) -> Value {
    fn as_set(v: &Value) -> Value {
        let mut items: Vec<String> = match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect(),
            other => return other.clone(),
        };
        items.sort();
        items.dedup();
        Value::from(items)
    }
    fn statement(s: &Value) -> Value {
        let Value::Object(m) = s else {
            return s.clone();
        };
        let mut out = serde_json::Map::new();
        for (k, v) in m {
            let v = match k.as_str() {
                "Action" | "NotAction" | "Resource" | "NotResource" => as_set(v),
                "Principal" | "NotPrincipal" => match v {
                    Value::Object(p) => {
                        Value::Object(p.iter().map(|(k, v)| (k.clone(), as_set(v))).collect())
                    }
                    other => other.clone(),
                },
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        }
        Value::Object(out)
    }
    let mut out = policy.clone();
    if let Some(stmts) = policy.get("Statement") {
        let list: Vec<Value> = match stmts {
            Value::Array(a) => a.iter().map(statement).collect(),
            single => vec![statement(single)],
        };
        let mut keyed: Vec<(String, Value)> =
            list.into_iter().map(|s| (s.to_string(), s)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.dedup_by(|a, b| a.0 == b.0);
        out["Statement"] = Value::from(keyed.into_iter().map(|(_, s)| s).collect::<Vec<_>>());
    }
    out
}

fn desired_inline(spec: &RoleSpec) -> BTreeMap<String, Value> {
    BTreeMap::from([(
        spec.inline_policy_name.clone(),
        normalize_policy(&spec.inline_policy),
    )])
}

#[async_trait]
impl Provider for IamRole {
    type Spec = RoleSpec;
    type Observed = ObservedRole;
    type Field = RoleField;
    const KIND: &'static str = "iam_role";
    const CREATE_CONVERGES: bool = true;
    const ROUND_TRIPS: u32 = 2;

    async fn read(&self, ctx: &Ctx, spec: &RoleSpec) -> Result<Option<ObservedRole>> {
        let iam = &ctx.aws.iam;
        // The role, both policy listings and the inline policy the spec names, all at once:
        // each names the role, none needs another's answer, and a missing role makes them all
        // fail alike. GetRole carries the role's tags (up to IAM's 50 per role): no ListRoleTags
        // needed. Only inline policies the spec does not name take a second round-trip.
        let (role, attached, inline_names, named) = tokio::join!(
            iam.get_role().role_name(&spec.name).send(),
            iam.list_attached_role_policies()
                .role_name(&spec.name)
                .send(),
            iam.list_role_policies().role_name(&spec.name).send(),
            iam.get_role_policy()
                .role_name(&spec.name)
                .policy_name(&spec.inline_policy_name)
                .send(),
        );
        let role = match role {
            Ok(r) => r,
            Err(e) if super::not_found(&e) => {
                return Ok(None);
            }
            Err(e) => return Err(e).context("GetRole"),
        };
        let trust = role
            .role()
            .and_then(|r| r.assume_role_policy_document())
            .map(parse_policy)
            .transpose()?
            .unwrap_or(Value::Null);
        let managed_policy_arns = attached
            .context("ListAttachedRolePolicies")?
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_string))
            .collect();
        let inline_names = inline_names.context("ListRolePolicies")?;
        let mut documents: BTreeMap<String, String> = BTreeMap::new();
        if inline_names
            .policy_names()
            .contains(&spec.inline_policy_name)
        {
            let named =
                named.with_context(|| format!("GetRolePolicy {}", spec.inline_policy_name))?;
            documents.insert(
                spec.inline_policy_name.clone(),
                named.policy_document().to_string(),
            );
        }
        let others: Vec<&String> = inline_names
            .policy_names()
            .iter()
            .filter(|n| **n != spec.inline_policy_name)
            .collect();
        let docs = futures::future::join_all(others.iter().map(|name| {
            iam.get_role_policy()
                .role_name(&spec.name)
                .policy_name(name.as_str())
                .send()
        }))
        .await;
        for (name, doc) in others.into_iter().zip(docs) {
            let doc = doc.with_context(|| format!("GetRolePolicy {name}"))?;
            documents.insert(name.clone(), doc.policy_document().to_string());
        }
        let mut inline_policies = BTreeMap::new();
        for (name, doc) in documents {
            let parsed = parse_policy(&doc)
                .with_context(|| format!("inline policy {name} of role {}", spec.name))?;
            inline_policies.insert(name, normalize_policy(&parsed));
        }
        let tags = role
            .role()
            .map(|r| r.tags())
            .unwrap_or_default()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        Ok(Some(ObservedRole {
            trust_policy: normalize_policy(&trust),
            managed_policy_arns,
            inline_policies,
            tags,
        }))
    }

    fn tags(observed: &ObservedRole) -> Option<&BTreeMap<String, String>> {
        Some(&observed.tags)
    }

    fn describe(spec: &RoleSpec) -> Diff<RoleField> {
        let mut d = Diff::default();
        d.push(
            RoleField::TrustPolicy,
            &Value::Null,
            &spec.trust_policy(),
            false,
        );
        d.push(
            RoleField::ManagedPolicies,
            &Value::Null,
            &spec.managed_policy_arns,
            false,
        );
        d.push(
            RoleField::InlinePolicies,
            &Value::Null,
            &desired_inline(spec),
            false,
        );
        d.push(RoleField::Tags, &Value::Null, &spec.tags, false);
        d
    }

    fn diff(spec: &RoleSpec, o: &ObservedRole) -> Diff<RoleField> {
        let mut d = Diff::default();
        d.field(
            RoleField::TrustPolicy,
            normalize_policy(&spec.trust_policy()),
            o.trust_policy.clone(),
        );
        d.field(
            RoleField::ManagedPolicies,
            spec.managed_policy_arns
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            o.managed_policy_arns.clone(),
        );
        d.field(
            RoleField::InlinePolicies,
            desired_inline(spec),
            o.inline_policies.clone(),
        );
        d.field(RoleField::Tags, &spec.tags, &o.tags);
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &RoleSpec) -> Result<()> {
        let tags = spec
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()?;
        match ctx
            .aws
            .iam
            .create_role()
            .role_name(&spec.name)
            .assume_role_policy_document(spec.trust_policy().to_string())
            .set_tags(Some(tags))
            .send()
            .await
        {
            Ok(_) => {}
            // A previous run stopped half-way: the rest below is idempotent.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), CreateRoleError::EntityAlreadyExistsException(_)) => {}
            Err(e) => return Err(e).context("CreateRole"),
        }
        for arn in &spec.managed_policy_arns {
            attach(ctx, spec, arn).await?;
        }
        put_inline(ctx, spec).await
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &RoleSpec,
        o: &ObservedRole,
        changes: &[RoleField],
    ) -> Result<()> {
        let iam = &ctx.aws.iam;
        for field in changes {
            match field {
                RoleField::TrustPolicy => {
                    iam.update_assume_role_policy()
                        .role_name(&spec.name)
                        .policy_document(spec.trust_policy().to_string())
                        .send()
                        .await
                        .context("UpdateAssumeRolePolicy")?;
                }
                RoleField::ManagedPolicies => {
                    for arn in &spec.managed_policy_arns {
                        if !o.managed_policy_arns.contains(arn) {
                            attach(ctx, spec, arn).await?;
                        }
                    }
                    for arn in &o.managed_policy_arns {
                        if !spec.managed_policy_arns.contains(arn) {
                            iam.detach_role_policy()
                                .role_name(&spec.name)
                                .policy_arn(arn)
                                .send()
                                .await
                                .with_context(|| format!("DetachRolePolicy {arn}"))?;
                        }
                    }
                }
                RoleField::InlinePolicies => {
                    let ours = desired_inline(spec);
                    if o.inline_policies.get(&spec.inline_policy_name)
                        != ours.get(&spec.inline_policy_name)
                    {
                        put_inline(ctx, spec).await?;
                    }
                    // Anything else granted inline is not least privilege any more.
                    for name in o.inline_policies.keys().filter(|n| !ours.contains_key(*n)) {
                        iam.delete_role_policy()
                            .role_name(&spec.name)
                            .policy_name(name)
                            .send()
                            .await
                            .with_context(|| format!("DeleteRolePolicy {name}"))?;
                    }
                }
                RoleField::Tags => {
                    let delta = crate::engine::tags::delta(&spec.tags, &o.tags);
                    if !delta.remove.is_empty() {
                        iam.untag_role()
                            .role_name(&spec.name)
                            .set_tag_keys(Some(delta.remove))
                            .send()
                            .await
                            .context("UntagRole")?;
                    }
                    if !delta.set.is_empty() {
                        let tags = delta
                            .set
                            .iter()
                            .map(|(k, v)| Tag::builder().key(k).value(v).build())
                            .collect::<Result<Vec<_>, _>>()?;
                        iam.tag_role()
                            .role_name(&spec.name)
                            .set_tags(Some(tags))
                            .send()
                            .await
                            .context("TagRole")?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, spec: &RoleSpec, o: &ObservedRole) -> Result<()> {
        let iam = &ctx.aws.iam;
        // IAM refuses to delete a role that still has policies.
        for arn in &o.managed_policy_arns {
            match iam
                .detach_role_policy()
                .role_name(&spec.name)
                .policy_arn(arn)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if super::not_found(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("DetachRolePolicy {arn}")),
            }
        }
        for name in o.inline_policies.keys() {
            match iam
                .delete_role_policy()
                .role_name(&spec.name)
                .policy_name(name)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if super::not_found(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("DeleteRolePolicy {name}")),
            }
        }
        // Detaching is eventually consistent: DeleteRole right after it can still see the
        // policies and answer DeleteConflict for a few seconds.
        let deleted = retry(
            &format!("DeleteRole {}", spec.name),
            Backoff::wait(ctx.wait_timeout.min(DETACH_SETTLE)),
            || iam.delete_role().role_name(&spec.name).send(),
            |e| match e {
                SdkError::ServiceError(s)
                    if matches!(s.err(), DeleteRoleError::DeleteConflictException(_)) =>
                {
                    Some("the role's policies are still being detached")
                }
                SdkError::ServiceError(s)
                    if matches!(s.err(), DeleteRoleError::ConcurrentModificationException(_)) =>
                {
                    Some("another change to the role is in progress")
                }
                _ => None,
            },
        )
        .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if super::not_found(&e) => Ok(()),
            Err(e) => Err(e).context("DeleteRole"),
        }
    }
}

super::not_found_errors!(
    GetRoleError::NoSuchEntityException,
    DetachRolePolicyError::NoSuchEntityException,
    DeleteRolePolicyError::NoSuchEntityException,
    DeleteRoleError::NoSuchEntityException,
);

async fn attach(ctx: &Ctx, spec: &RoleSpec, arn: &str) -> Result<()> {
    ctx.aws
        .iam
        .attach_role_policy()
        .role_name(&spec.name)
        .policy_arn(arn)
        .send()
        .await
        .with_context(|| format!("AttachRolePolicy {arn}"))?;
    Ok(())
}

async fn put_inline(ctx: &Ctx, spec: &RoleSpec) -> Result<()> {
    ctx.aws
        .iam
        .put_role_policy()
        .role_name(&spec.name)
        .policy_name(&spec.inline_policy_name)
        .policy_document(spec.inline_policy.to_string())
        .send()
        .await
        .context("PutRolePolicy")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> RoleSpec {
        RoleSpec {
            name: "r".into(),
            service: "lambda.amazonaws.com".into(),
            managed_policy_arns: vec![
                "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole".into(),
            ],
            inline_policy_name: "least-privilege".into(),
            inline_policy: json!({
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:GetItem"], "Resource": ["arn:t"]},
                    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:b/*"]}
                ]
            }),
            tags: BTreeMap::from([("app".into(), "x".into())]),
        }
    }

    fn observed(s: &RoleSpec) -> ObservedRole {
        ObservedRole {
            trust_policy: normalize_policy(&s.trust_policy()),
            managed_policy_arns: s.managed_policy_arns.iter().cloned().collect(),
            inline_policies: desired_inline(s),
            tags: s.tags.clone(),
        }
    }

    #[test]
    fn url_encoded_documents_are_decoded() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(
            parse_policy(encoded).unwrap(),
            json!({"Version": "2012-10-17", "Statement": []})
        );
        assert_eq!(parse_policy("{\"a\":1}").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn reordered_and_reshaped_policies_compare_equal() {
        let s = spec();
        let mut o = observed(&s);
        // What IAM may hand back: statements reordered, single values as bare strings.
        let live = json!({
            "Statement": [
                {"Resource": "arn:b/*", "Action": "s3:GetObject", "Effect": "Allow"},
                {"Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Effect": "Allow", "Resource": "arn:t"}
            ],
            "Version": "2012-10-17"
        });
        o.inline_policies
            .insert("least-privilege".into(), normalize_policy(&live));
        let trust = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": "sts:AssumeRole"}});
        o.trust_policy = normalize_policy(&trust);
        assert!(
            IamRole::diff(&s, &o).0.is_empty(),
            "{:?}",
            IamRole::diff(&s, &o).0
        );
    }

    #[test]
    fn an_extra_action_or_extra_inline_policy_is_drift() {
        let s = spec();
        let mut o = observed(&s);
        let mut wider = s.inline_policy.clone();
        wider["Statement"][1]["Action"] = json!(["s3:GetObject", "s3:DeleteObject"]);
        o.inline_policies
            .insert("least-privilege".into(), normalize_policy(&wider));
        let d = IamRole::diff(&s, &o);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].field, "inline_policies");

        let mut o = observed(&s);
        o.inline_policies.insert("added-by-hand".into(), json!({}));
        assert!(IamRole::diff(&s, &o).has("inline_policies"));

        let mut o = observed(&s);
        o.managed_policy_arns.clear();
        assert!(IamRole::diff(&s, &o).has("managed_policies"));
    }
}
