//! Lambda functions with their published versions and the `live` alias.
//!
//! One resource covers the function, its versions and its alias because they change together:
//! new code or configuration is useless until a version is published and the alias moved.
//!
//! - Code is updated only when the artifact's SHA-256 differs from `CodeSha256`, the
//!   configuration only when one of its fields differs.
//! - Lambda applies every update asynchronously (`State` Pending, `LastUpdateStatus`
//!   InProgress) and rejects a second update meanwhile with ResourceConflictException: every
//!   write waits for the function to settle first ([`readiness`]) and retries that conflict.
//! - After `LastUpdateStatus=Failed` the previous code keeps serving and the next update is
//!   accepted: it is how a failed update is repaired, so it is only fatal after an update this
//!   run sent. An idle function goes `Inactive` and wakes on the next update: not busy.
//! - A role that was just created is not assumable by Lambda for a few seconds on AWS, and
//!   CreateFunction answers InvalidParameterValueException. Lambda uses that same variant (and
//!   code) for permanent mistakes (a reserved environment variable, a bad handler), and tells
//!   them apart only in message text, which may change at any time. The least fragile signal
//!   left is the role itself: the error is retried (bounded) only while the role is younger
//!   than [`YOUNG_ROLE`] by its IAM `CreateDate`; otherwise it surfaces at once.
//! - A version is published only when the newest published version does not already hold the
//!   desired code and configuration; old versions beyond `keep_versions` are deleted, never the
//!   alias target, and before the alias moves. A version whose update failed (`State=Failed`)
//!   is never served and is deleted before the next publish.
//! - A read starts with the version the alias serves: when it holds the spec, that one call is
//!   the read (see [`serving`]); otherwise `$LATEST` and the versions are read too.
//! - An update's first write to `$LATEST` carries the RevisionId the plan read ([`Guard`]), so
//!   apply does not read the function again under the lock; a refusal is judged by one look
//!   ([`judge_refusal`]). The alias moves with its own RevisionId, and when that is the
//!   update's last write the lock goes beside it ([`crate::engine::apply::rest_is_guarded`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::create_function::CreateFunctionError;
use aws_sdk_lambda::operation::delete_alias::DeleteAliasError;
use aws_sdk_lambda::operation::delete_function::DeleteFunctionError;
use aws_sdk_lambda::operation::get_alias::GetAliasError;
use aws_sdk_lambda::operation::get_function::{GetFunctionError, GetFunctionOutput};
use aws_sdk_lambda::operation::publish_version::PublishVersionError;
use aws_sdk_lambda::operation::update_alias::UpdateAliasError;
use aws_sdk_lambda::operation::update_function_code::UpdateFunctionCodeError;
use aws_sdk_lambda::operation::update_function_configuration::UpdateFunctionConfigurationError;
use aws_sdk_lambda::types::{
    Architecture, Environment, FunctionCode, FunctionConfiguration, LastUpdateStatus, Runtime,
    State,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};
use stacks::FunctionSpec;

use super::service_error;
use crate::engine::retry::{Backoff, retry, wait_until};
use crate::engine::{Ctx, Diff, Provider};

super::fields! {
    /// What a function's diff compares: its code, each configuration field, its tags, and the
    /// versions and alias that make them live.
    pub enum FunctionField {
        Code = "code",
        Runtime = "runtime",
        Handler = "handler",
        Architecture = "architecture",
        MemoryMb = "memory_mb",
        TimeoutSecs = "timeout_secs",
        Environment = "environment",
        Role = "role",
        Tags = "tags",
        Version = "version",
        Alias = "alias",
        PurgeVersions = "purge_versions",
    }
}

pub struct LambdaFunction;

/// The configuration fields this stack manages, as compared between spec, `$LATEST` and each
/// published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionConfig {
    pub runtime: String,
    pub handler: String,
    pub architecture: String,
    pub memory_mb: u32,
    pub timeout_secs: u32,
    pub environment: BTreeMap<String, String>,
    pub role: String,
}

/// A published version: its number, code and configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub number: u64,
    pub code_sha256_b64: String,
    pub config: FunctionConfig,
    /// `State=Failed`: published with an update that then failed. Never served; deleted
    /// before the next publish, which Lambda would otherwise answer with it (it publishes
    /// nothing when code and configuration equal the newest version's).
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedFunction {
    pub arn: String,
    pub code_sha256_b64: String,
    pub config: FunctionConfig,
    pub tags: BTreeMap<String, String>,
    /// Numbered versions, oldest first.
    pub versions: Vec<Version>,
    /// The version the alias points at, `None` without alias.
    pub alias_target: Option<String>,
    /// The alias's own RevisionId, read with `$LATEST` (not by the alias's shortcut, which
    /// changes nothing): UpdateAlias carries it, so a move by anyone since is refused.
    pub alias_revision_id: Option<String>,
    /// Where `$LATEST` was in Lambda's update cycle when read: a function read as
    /// [`Readiness::Ready`] takes the first write without waiting (a ResourceConflict from
    /// an update since is retried all the same).
    pub readiness: Readiness,
    /// `$LATEST`'s RevisionId as read (not read by the alias's shortcut, which changes
    /// nothing). A settled function's first write carries it: see [`Guard`].
    pub revision_id: Option<String>,
}

impl ObservedFunction {
    /// The newest version that already holds what the spec wants, if the newest one does
    /// (and did not fail).
    fn current_version(&self, spec: &FunctionSpec) -> Option<u64> {
        self.versions
            .last()
            .filter(|v| {
                !v.failed && v.code_sha256_b64 == spec.code_sha256_b64 && v.config == desired(spec)
            })
            .map(|v| v.number)
    }

    /// Failed versions the alias does not serve: deleted before anything is published.
    fn failed_versions(&self) -> Vec<u64> {
        self.versions
            .iter()
            .filter(|v| v.failed && Some(v.number.to_string()) != self.alias_target)
            .map(|v| v.number)
            .collect()
    }
}

/// The configuration the spec asks for.
pub fn desired(spec: &FunctionSpec) -> FunctionConfig {
    FunctionConfig {
        runtime: spec.runtime.clone(),
        handler: spec.handler.clone(),
        architecture: spec.architecture.clone(),
        memory_mb: spec.memory_mb,
        timeout_secs: spec.timeout_secs,
        environment: spec.environment.clone(),
        role: spec.role_arn.clone(),
    }
}

fn live_config(c: &FunctionConfiguration) -> FunctionConfig {
    FunctionConfig {
        runtime: c
            .runtime()
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
        handler: c.handler().unwrap_or_default().to_string(),
        // AWS always lists it; x86_64 is what Lambda uses when none was given.
        architecture: c
            .architectures()
            .first()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| "x86_64".into()),
        memory_mb: c.memory_size().unwrap_or_default() as u32,
        timeout_secs: c.timeout().unwrap_or_default() as u32,
        environment: c
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        role: c.role().unwrap_or_default().to_string(),
    }
}

/// `CodeSha256` (base64) as lowercase hex, the form artifact keys and plans use.
pub fn b64_to_hex(b64: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(hex::encode)
        .unwrap_or_else(|_| b64.to_string())
}

/// Where a function is in Lambda's asynchronous update cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Active and the last update succeeded: the next write may go.
    Ready,
    /// Pending creation or an update in progress: wait.
    Busy,
    /// Creation failed: waiting will not help, and no update can repair it.
    Failed(String),
    /// The last update failed; the previous code and configuration keep serving and the next
    /// update is accepted (it is how the failure is repaired).
    UpdateFailed(String),
}

/// Classifies `State` and `LastUpdateStatus` (a missing status counts as settled, as for a
/// function that was never updated).
pub fn readiness(
    state: Option<&State>,
    last_update: Option<&LastUpdateStatus>,
    reason: Option<&str>,
) -> Readiness {
    let why = || reason.unwrap_or("no reason given").to_string();
    match (state, last_update) {
        (Some(State::Failed), _) => Readiness::Failed(format!("State=Failed: {}", why())),
        (_, Some(LastUpdateStatus::Failed)) => {
            Readiness::UpdateFailed(format!("LastUpdateStatus=Failed: {}", why()))
        }
        (Some(State::Pending), _) | (_, Some(LastUpdateStatus::InProgress)) => Readiness::Busy,
        // Inactive functions (idle for weeks) wake up on the next update or invocation: they
        // take writes, so waiting for them to become Active would only run into the timeout.
        (
            Some(State::Active | State::Inactive) | None,
            Some(LastUpdateStatus::Successful) | None,
        ) => Readiness::Ready,
        // Anything unknown is treated as settling.
        _ => Readiness::Busy,
    }
}

/// Why an error of CreateFunction is worth retrying. InvalidParameterValueException is what
/// Lambda answers while a new role is not yet assumable (IAM propagation): recognised by the
/// typed variant and its error code, never by message text, and bounded by the caller.
pub fn create_retry_reason(e: &CreateFunctionError) -> Option<&'static str> {
    match e {
        CreateFunctionError::InvalidParameterValueException(_)
            if e.code() == Some("InvalidParameterValueException") =>
        {
            Some("the execution role may not be assumable by Lambda yet (IAM propagation)")
        }
        _ => None,
    }
}

/// Why an error of UpdateFunctionCode is worth retrying.
pub fn update_code_retry_reason(e: &UpdateFunctionCodeError) -> Option<&'static str> {
    matches!(e, UpdateFunctionCodeError::ResourceConflictException(_))
        .then_some("another update of the function is in progress")
}

/// Why an error of UpdateFunctionConfiguration is worth retrying: a concurrent update, or a
/// role change to a role not yet assumable (as for CreateFunction).
pub fn update_config_retry_reason(e: &UpdateFunctionConfigurationError) -> Option<&'static str> {
    match e {
        UpdateFunctionConfigurationError::ResourceConflictException(_) => {
            Some("another update of the function is in progress")
        }
        UpdateFunctionConfigurationError::InvalidParameterValueException(_)
            if e.code() == Some("InvalidParameterValueException") =>
        {
            Some("the execution role may not be assumable by Lambda yet (IAM propagation)")
        }
        _ => None,
    }
}

/// Why an error of PublishVersion is worth retrying.
pub fn publish_retry_reason(e: &PublishVersionError) -> Option<&'static str> {
    matches!(e, PublishVersionError::ResourceConflictException(_))
        .then_some("another update of the function is in progress")
}

/// The versions a purge deletes, in two steps so that the alias never serves a deleted
/// version and is only moved once the purge is done: before the alias moves (sparing the
/// version it serves and the one it moves to), then after it moved (the version it served,
/// when that one is beyond `keep`).
pub fn purge_steps(
    versions: &[u64],
    keep: usize,
    serving: Option<u64>,
    moves_to: Option<u64>,
) -> (Vec<u64>, Vec<u64>) {
    let spare: Vec<u64> = serving.into_iter().chain(moves_to).collect();
    let before = versions_to_purge(versions, keep, &spare);
    let after = match moves_to {
        Some(to) if Some(to) != serving => {
            let left: Vec<u64> = versions
                .iter()
                .copied()
                .filter(|v| !before.contains(v))
                .collect();
            versions_to_purge(&left, keep, &[to])
        }
        _ => Vec::new(),
    };
    (before, after)
}

/// Versions to delete so that at most `keep` remain: the oldest first, never one in `protect`.
pub fn versions_to_purge(versions: &[u64], keep: usize, protect: &[u64]) -> Vec<u64> {
    let mut sorted = versions.to_vec();
    sorted.sort_unstable();
    let excess = sorted.len().saturating_sub(keep);
    sorted
        .into_iter()
        .filter(|v| !protect.contains(v))
        .take(excess)
        .collect()
}

/// How long to retry the IAM propagation error: AWS needs seconds, rarely a minute.
const ROLE_PROPAGATION: Duration = Duration::from_secs(90);

/// A role created less than this long ago may still be propagating through IAM; an older
/// one is assumable, so InvalidParameterValueException then means a real mistake.
pub const YOUNG_ROLE: Duration = Duration::from_secs(300);

/// Whether the role (by ARN) was created less than [`YOUNG_ROLE`] ago. When IAM cannot say
/// (no such role, no permission), the answer is no: the error then surfaces at once.
async fn role_is_young(ctx: &Ctx, role_arn: &str) -> bool {
    let name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let created = match ctx.aws.iam.get_role().role_name(name).send().await {
        Ok(out) => out.role().map(|r| r.create_date().secs()),
        Err(e) => {
            tracing::warn!(role = name, error = %aws_sdk_iam::error::DisplayErrorContext(&e), "cannot read the role's age");
            None
        }
    };
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs();
    created.is_some_and(|c| now.saturating_sub(c) < YOUNG_ROLE.as_secs() as i64)
}

/// The retry reason for an InvalidParameterValueException naming `role_arn`: IAM propagation
/// while the role is young, otherwise none. The role's age is looked up once per operation.
pub(crate) async fn propagation_reason(
    ctx: &Ctx,
    role_arn: &str,
    young: &tokio::sync::OnceCell<bool>,
) -> Option<&'static str> {
    if *young.get_or_init(|| role_is_young(ctx, role_arn)).await {
        Some("the execution role may not be assumable by Lambda yet (IAM propagation)")
    } else {
        tracing::debug!(
            role = role_arn,
            "InvalidParameterValueException with a settled role: a real mistake, not retried"
        );
        None
    }
}

fn role_backoff(ctx: &Ctx) -> Backoff {
    Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(10),
        deadline: ctx.wait_timeout.min(ROLE_PROPAGATION),
    }
}

fn conflict_backoff(ctx: &Ctx) -> Backoff {
    Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(5),
        deadline: ctx.wait_timeout,
    }
}

/// Waits until the function (or one of its versions) can take the next write. `after_ours`:
/// this run has already sent an update, so a failed last update is that update's failure and
/// fatal; before our first update it is the state we are about to repair.
async fn wait_ready(ctx: &Ctx, name: &str, after_ours: bool) -> Result<()> {
    wait_until(
        &format!("function {name} to be Active with LastUpdateStatus=Successful"),
        Backoff::wait(ctx.wait_timeout),
        || async {
            let c = ctx
                .aws
                .lambda
                .get_function_configuration()
                .function_name(name)
                .send()
                .await
                .context("GetFunctionConfiguration")?;
            match readiness(
                c.state(),
                c.last_update_status(),
                c.last_update_status_reason().or(c.state_reason()),
            ) {
                Readiness::Ready => Ok(Some(())),
                Readiness::Busy => Ok(None),
                Readiness::UpdateFailed(why) if !after_ours => {
                    tracing::warn!(function = name, why, "repairing a failed update");
                    Ok(Some(()))
                }
                Readiness::Failed(why) | Readiness::UpdateFailed(why) => {
                    anyhow::bail!("function {name}: {why}")
                }
            }
        },
    )
    .await
}

/// GetFunction through the alias; `None` when the function or its alias is missing.
async fn through_alias(ctx: &Ctx, spec: &FunctionSpec) -> Result<Option<GetFunctionOutput>> {
    match ctx
        .aws
        .lambda
        .get_function()
        .function_name(&spec.name)
        .qualifier(&spec.alias)
        .send()
        .await
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if super::not_found(&e) => Ok(None),
        Err(e) => Err(e).context("GetFunction (alias)"),
    }
}

/// The version number an alias's GetFunction answered for.
fn served_version(f: &GetFunctionOutput) -> Option<String> {
    f.configuration()
        .and_then(|c| c.version())
        .map(str::to_string)
}

/// `$LATEST` and every version at once (each names the function, neither needs the other's
/// answer, and a missing function makes both fail alike), with `served` as the alias's target.
async fn read_whole(
    ctx: &Ctx,
    spec: &FunctionSpec,
    served: Option<String>,
    ask_alias: bool,
) -> Result<Option<ObservedFunction>> {
    let (f, versions, alias) = tokio::join!(
        ctx.aws
            .lambda
            .get_function()
            .function_name(&spec.name)
            .send(),
        list_versions(ctx, &spec.name),
        async {
            if !ask_alias {
                return Ok(None);
            }
            let asked = ctx
                .aws
                .lambda
                .get_alias()
                .function_name(&spec.name)
                .name(&spec.alias)
                .send()
                .await;
            match asked {
                Ok(a) => Ok(Some(a)),
                Err(e) if super::not_found(&e) => Ok(None),
                Err(e) => Err(e).context("GetAlias"),
            }
        },
    );
    let alias = alias?;
    let f = match f {
        Ok(f) => f,
        Err(e) if super::not_found(&e) => {
            return Ok(None);
        }
        Err(e) => return Err(e).context("GetFunction"),
    };
    let c = f
        .configuration()
        .context("GetFunction returned no configuration")?;
    Ok(Some(ObservedFunction {
        arn: c.function_arn().unwrap_or_default().to_string(),
        code_sha256_b64: c.code_sha256().unwrap_or_default().to_string(),
        config: live_config(c),
        tags: f.tags().cloned().unwrap_or_default().into_iter().collect(),
        versions: versions?,
        alias_target: served,
        alias_revision_id: alias.and_then(|a| a.revision_id().map(str::to_string)),
        readiness: readiness(
            c.state(),
            c.last_update_status(),
            c.last_update_status_reason().or(c.state_reason()),
        ),
        revision_id: c.revision_id().map(str::to_string),
    }))
}

/// The function as read through its alias, when the version the alias serves holds the spec's
/// code and configuration and the function carries the spec's tags: then nothing about the
/// function is to change, and the rest of it is not read.
///
/// What this leaves unread is what no caller runs: `$LATEST` (callers invoke the alias) and
/// versions the alias has moved off. Those are seen, and the excess versions purged, by the
/// next apply that publishes; an apply purges before it moves the alias, so a serving
/// version that matches the spec means the purge of its publish is done.
fn serving(spec: &FunctionSpec, f: &GetFunctionOutput) -> Option<ObservedFunction> {
    let c = f.configuration()?;
    let number: u64 = c.version()?.parse().ok()?;
    let tags: BTreeMap<String, String> = f.tags()?.clone().into_iter().collect();
    let config = live_config(c);
    let code = c.code_sha256()?.to_string();
    if code != spec.code_sha256_b64
        || config != desired(spec)
        || tags != spec.tags
        || c.state() == Some(&State::Failed)
    {
        return None;
    }
    // The function's ARN: GetFunction answers with the qualified one.
    let arn = c
        .function_arn()?
        .splitn(8, ':')
        .take(7)
        .collect::<Vec<_>>()
        .join(":");
    Some(ObservedFunction {
        arn,
        code_sha256_b64: code.clone(),
        config: config.clone(),
        tags,
        versions: vec![Version {
            number,
            code_sha256_b64: code,
            config,
            failed: false,
        }],
        alias_target: Some(number.to_string()),
        alias_revision_id: None,
        readiness: Readiness::Ready,
        revision_id: None,
    })
}

const CONFIG_FIELDS: [FunctionField; 7] = [
    FunctionField::Runtime,
    FunctionField::Handler,
    FunctionField::Architecture,
    FunctionField::MemoryMb,
    FunctionField::TimeoutSecs,
    FunctionField::Environment,
    FunctionField::Role,
];

#[async_trait]
impl Provider for LambdaFunction {
    type Spec = FunctionSpec;
    type Observed = ObservedFunction;
    type Field = FunctionField;
    const KIND: &'static str = "lambda_function";
    /// The version the alias serves, then (when it does not hold the spec) `$LATEST` and the
    /// versions.
    const READ_ROUND_TRIPS: u32 = 2;
    const CREATE_CONVERGES: bool = true;
    const ROUND_TRIPS: u32 = 3;

    /// A code or configuration change writes `$LATEST` first, with the RevisionId the plan
    /// read ([`Guard`]); an alias, tag or purge change alone has no such write.
    fn update_guarded(o: &ObservedFunction, changes: &[FunctionField]) -> bool {
        let steps = Steps::of(changes);
        Guard::of(o).is_some() && (steps.code || steps.config)
    }

    async fn read(&self, ctx: &Ctx, spec: &FunctionSpec) -> Result<Option<ObservedFunction>> {
        // First the version the alias serves (GetFunction with the alias as qualifier names
        // it and carries its code, configuration and the function's tags). When it already
        // holds the spec, that one call is the whole read: see `serving`.
        let served = match through_alias(ctx, spec).await? {
            Some(f) => {
                if let Some(settled) = serving(spec, &f) {
                    return Ok(Some(settled));
                }
                served_version(&f)
            }
            // No function, or a function without the alias: the full read tells which.
            None => None,
        };
        // The alias's own revision only when there is an alias to move.
        let ask_alias = served.is_some();
        read_whole(ctx, spec, served, ask_alias).await
    }

    /// Under the lock the function is known to need a change, so the alias's shortcut would
    /// only cost a round-trip: the alias, `$LATEST` and the versions are read at once.
    async fn read_again(&self, ctx: &Ctx, spec: &FunctionSpec) -> Result<Option<ObservedFunction>> {
        let (served, whole) =
            tokio::join!(through_alias(ctx, spec), read_whole(ctx, spec, None, true));
        let served = served?.as_ref().and_then(served_version);
        Ok(whole?.map(|mut o| {
            o.alias_target = served;
            o
        }))
    }

    fn tags(observed: &ObservedFunction) -> Option<&BTreeMap<String, String>> {
        Some(&observed.tags)
    }

    fn describe(spec: &FunctionSpec) -> Diff<FunctionField> {
        let mut d = Diff::default();
        d.push(
            FunctionField::Code,
            &Value::Null,
            &spec.code_sha256_hex,
            false,
        );
        let c = serde_json::to_value(desired(spec)).unwrap_or_default();
        for field in CONFIG_FIELDS {
            d.push(field, &Value::Null, &c[field.as_str()], false);
        }
        d.push(
            FunctionField::Alias,
            &Value::Null,
            &json!(format!("{} -> 1", spec.alias)),
            false,
        );
        d.push(FunctionField::Tags, &Value::Null, &spec.tags, false);
        d
    }

    fn diff(spec: &FunctionSpec, o: &ObservedFunction) -> Diff<FunctionField> {
        let mut d = Diff::default();
        if spec.code_sha256_b64 != o.code_sha256_b64 {
            d.push(
                FunctionField::Code,
                &b64_to_hex(&o.code_sha256_b64),
                &spec.code_sha256_hex,
                false,
            );
        }
        let want = serde_json::to_value(desired(spec)).unwrap_or_default();
        let have = serde_json::to_value(&o.config).unwrap_or_default();
        for field in CONFIG_FIELDS {
            let name = field.as_str();
            if want[name] != have[name] {
                d.push(field, &have[name], &want[name], false);
            }
        }
        d.field(FunctionField::Tags, &spec.tags, &o.tags);
        let newest = o.versions.last().map(|v| v.number);
        let current = o.current_version(spec);
        let publishes = current.is_none();
        if publishes {
            d.push(FunctionField::Version, &newest, &"(new version)", false);
        }
        let alias_wanted = current.map(|v| v.to_string());
        if publishes || o.alias_target != alias_wanted {
            d.push(
                FunctionField::Alias,
                &o.alias_target,
                &alias_wanted.unwrap_or_else(|| "(new version)".into()),
                false,
            );
        }
        // Purge what would exceed `keep_versions` once any new version exists.
        let mut numbers: Vec<u64> = o.versions.iter().map(|v| v.number).collect();
        if publishes {
            numbers.push(u64::MAX);
        }
        let serving = o.alias_target.as_deref().and_then(|v| v.parse().ok());
        let moves_to = if publishes { Some(u64::MAX) } else { current };
        let failed = o.failed_versions();
        numbers.retain(|n| !failed.contains(n));
        let (before, after) = purge_steps(&numbers, spec.keep_versions as usize, serving, moves_to);
        let purge: Vec<u64> = failed.into_iter().chain(before).chain(after).collect();
        if !purge.is_empty() {
            d.push(FunctionField::PurgeVersions, &purge, &Value::Null, false);
        }
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &FunctionSpec) -> Result<()> {
        if spec.code_sha256_b64.is_empty() {
            anyhow::bail!("no built artifact for function {}", spec.name);
        }
        let lambda = &ctx.aws.lambda;
        let c = desired(spec);
        let code = match code_source(spec).await? {
            CodeSource::Zip(zip) => FunctionCode::builder().zip_file(zip).build(),
            CodeSource::S3 => FunctionCode::builder()
                .s3_bucket(&spec.code_bucket)
                .s3_key(&spec.code_key)
                .build(),
        };
        let young = tokio::sync::OnceCell::new();
        let (c, code, young) = (&c, &code, &young);
        let created = retry(
            &format!("CreateFunction {}", spec.name),
            role_backoff(ctx),
            || async move {
                let sent = lambda
                    .create_function()
                    .function_name(&spec.name)
                    .role(&c.role)
                    .runtime(Runtime::from(c.runtime.as_str()))
                    .handler(&c.handler)
                    .architectures(Architecture::from(c.architecture.as_str()))
                    .memory_size(c.memory_mb as i32)
                    .timeout(c.timeout_secs as i32)
                    .environment(
                        Environment::builder()
                            .set_variables(Some(c.environment.clone().into_iter().collect()))
                            .build(),
                    )
                    .code(code.clone())
                    .set_tags(Some(spec.tags.clone().into_iter().collect()))
                    // Version 1 comes with the function: one call fewer.
                    .publish(true)
                    .send()
                    .await;
                match sent {
                    Ok(out) => Ok(out),
                    Err(e) => {
                        let why = match service_error(&e).and_then(create_retry_reason) {
                            Some(_) => propagation_reason(ctx, &c.role, young).await,
                            None => None,
                        };
                        Err((e, why))
                    }
                }
            },
            |(_, why)| *why,
        )
        .await
        .map_err(|(e, _)| e);
        let version = match created {
            Ok(out) => {
                check_code("CreateFunction", spec, out.code_sha256())?;
                out.version().unwrap_or("1").to_string()
            }
            // An earlier run created it and stopped: converge like an update from what is there.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), CreateFunctionError::ResourceConflictException(_)) =>
            {
                let o = self
                    .read(ctx, spec)
                    .await?
                    .context("CreateFunction reported a conflict but GetFunction finds nothing")?;
                let changes = Self::diff(spec, &o).fields();
                return self.update(ctx, spec, &o, &changes).await;
            }
            Err(e) => return Err(e).context("CreateFunction"),
        };
        wait_ready(ctx, &spec.name, true).await?;
        point_alias(ctx, spec, None, None, &version).await
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &FunctionSpec,
        o: &ObservedFunction,
        changes: &[FunctionField],
    ) -> Result<()> {
        let steps = Steps::of(changes);
        // Failed versions go first: with one of them the newest, Lambda would answer the
        // publish below with it instead of publishing.
        let failed = o.failed_versions();
        delete_versions(ctx, spec, &failed).await?;
        // Whether this run has sent an update yet (see `wait_ready`).
        let mut updated = false;
        // The read that planned this update saw the function settled: the first write goes
        // without another look (one round-trip fewer on every code change).
        let mut settled = o.readiness == Readiness::Ready;
        // Only the first write to `$LATEST` carries the revision the plan read.
        let mut guard = Guard::of(o);
        // The configuration goes first, so that the version the code update publishes carries
        // it: UpdateFunctionCode with Publish saves the PublishVersion round-trip.
        if steps.config {
            if !std::mem::take(&mut settled) {
                wait_ready(ctx, &spec.name, updated).await?;
            }
            update_config(ctx, spec, o, guard.take()).await?;
            updated = true;
        }
        let mut published = None;
        if steps.code {
            if spec.code_sha256_b64.is_empty() {
                anyhow::bail!("no built artifact for function {}", spec.name);
            }
            if !std::mem::take(&mut settled) {
                wait_ready(ctx, &spec.name, updated).await?;
            }
            published = update_code(ctx, spec, o, steps.publish, guard.take()).await?;
            updated = true;
        }
        if steps.tags {
            update_tags(ctx, spec, o).await?;
        }
        // Versions that exist after this update: the ones read (less the failed ones deleted
        // above) plus the one published here.
        let mut versions: Vec<u64> = o
            .versions
            .iter()
            .map(|v| v.number)
            .filter(|n| !failed.contains(n))
            .collect();
        let target = if steps.publish {
            let version = match published {
                // Published with the code: served only once the update it came from succeeded
                // (a version of a failed update must not take the alias).
                Some(version) => {
                    settle_published(ctx, spec, &version).await?;
                    version
                }
                None => {
                    if !std::mem::take(&mut settled) {
                        wait_ready(ctx, &spec.name, updated).await?;
                    }
                    publish(ctx, spec).await?
                }
            };
            versions.extend(version.parse::<u64>().ok());
            Some(version)
        } else if steps.alias {
            o.current_version(spec).map(|v| v.to_string())
        } else {
            None
        };
        // The purge goes before the alias moves: a read that finds the alias on the spec's
        // version can then take the purge as done (see `serving`). Only the version the alias
        // leaves waits for the move (with `keep_versions = 1`).
        let serving = o.alias_target.as_deref().and_then(|v| v.parse().ok());
        let moves_to = target.as_deref().and_then(|v| v.parse().ok());
        let (before, after) = if steps.purge {
            purge_steps(&versions, spec.keep_versions as usize, serving, moves_to)
        } else {
            Default::default()
        };
        delete_versions(ctx, spec, &before).await?;
        if let Some(version) = &target {
            let (current, revision) = (o.alias_target.as_deref(), o.alias_revision_id.as_deref());
            if current.is_some() && revision.is_some() && after.is_empty() {
                // The last write, and one Lambda refuses if anyone moved the alias since the
                // plan read it: the lock may go beside it. (Should the alias have been deleted
                // meanwhile, its CreateAlias fails if someone else made it again first.)
                crate::engine::apply::rest_is_guarded();
            }
            point_alias(ctx, spec, current, revision, version).await?;
        }
        delete_versions(ctx, spec, &after).await?;
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, spec: &FunctionSpec, _: &ObservedFunction) -> Result<()> {
        let lambda = &ctx.aws.lambda;
        // Without a qualifier DeleteFunction removes the function, every version and every
        // alias: one call, no DeleteAlias before it.
        match lambda
            .delete_function()
            .function_name(&spec.name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if super::not_found(&e) => Ok(()),
            Err(e) => Err(e).context("DeleteFunction"),
        }
    }
}

super::not_found_errors!(
    GetFunctionError::ResourceNotFoundException,
    GetAliasError::ResourceNotFoundException,
    UpdateAliasError::ResourceNotFoundException,
    DeleteAliasError::ResourceNotFoundException,
    DeleteFunctionError::ResourceNotFoundException,
);

/// What an update does, decided once per changed field.
#[derive(Debug, Default)]
struct Steps {
    code: bool,
    config: bool,
    tags: bool,
    publish: bool,
    alias: bool,
    purge: bool,
}

impl Steps {
    fn of(changes: &[FunctionField]) -> Steps {
        let mut steps = Steps::default();
        for field in changes {
            match field {
                FunctionField::Code => steps.code = true,
                // UpdateFunctionCode carries the architecture, not UpdateFunctionConfiguration.
                FunctionField::Architecture => {}
                FunctionField::Runtime
                | FunctionField::Handler
                | FunctionField::MemoryMb
                | FunctionField::TimeoutSecs
                | FunctionField::Environment
                | FunctionField::Role => steps.config = true,
                FunctionField::Tags => steps.tags = true,
                // A new version may push old ones past `keep_versions`.
                FunctionField::Version => {
                    steps.publish = true;
                    steps.purge = true;
                }
                FunctionField::Alias => steps.alias = true,
                FunctionField::PurgeVersions => steps.purge = true,
            }
        }
        steps
    }
}

/// The RevisionId a function's first write carries: the one the plan read, when the function
/// was settled then. AWS refuses the write (PreconditionFailedException) if anything changed
/// `$LATEST` since, so apply need not read the function again under the lock; a run of this
/// tool that changes a function changes `$LATEST` first. Only the first write carries one:
/// the RevisionId changes again when an update completes (aws/aws-sdk#377), and the writes
/// after the first are made under the lock anyway.
#[derive(Debug, Clone)]
struct Guard(String);

impl Guard {
    fn of(o: &ObservedFunction) -> Option<Guard> {
        if o.readiness != Readiness::Ready {
            return None;
        }
        o.revision_id.clone().map(Guard)
    }
}

/// How many times a guarded write is judged and sent again after refusals: each refusal
/// whose look finds only the revision moved (an update of a field the plan does not compare,
/// Lambda's own revision changes) costs one.
const REFUSAL_LOOKS: u32 = 3;

/// What a refused guarded write leaves to do, after one look at `$LATEST`.
#[derive(Debug, PartialEq)]
enum Refused {
    /// `$LATEST` is what the write makes of what the plan read: its first attempt went
    /// through and the SDK's retry of it (after a lost answer) met the revision it made.
    Done,
    /// Only the revision moved: what the plan compared is as it read it. Send again, with this
    /// revision.
    Resend(String),
}

/// The code and configuration a write leaves on `$LATEST` read as `o`.
struct Written<'a> {
    code: &'a str,
    config: FunctionConfig,
}

/// After PreconditionFailedException on a guarded write: reads `$LATEST` and compares it with
/// what the plan read and with what the write makes of that (`written`). Anything else is an
/// error: the plan shown is no longer what apply would do.
async fn refused(
    ctx: &Ctx,
    spec: &FunctionSpec,
    o: &ObservedFunction,
    written: &Written<'_>,
) -> Result<Refused> {
    // Settled first: an update in progress changes the revision again when it completes.
    let name = &spec.name;
    let c = wait_until(
        &format!("function {name} to settle before its refused revision is judged"),
        Backoff::wait(ctx.wait_timeout),
        || async {
            let f = ctx
                .aws
                .lambda
                .get_function()
                .function_name(name)
                .send()
                .await
                .context("GetFunction (after a refused RevisionId)")?;
            let c = f
                .configuration()
                .context("GetFunction returned no configuration")?
                .clone();
            let busy = readiness(c.state(), c.last_update_status(), None) == Readiness::Busy;
            Ok((!busy).then_some(c))
        },
    )
    .await?;
    judge_refusal(
        spec,
        o,
        c.code_sha256().unwrap_or_default(),
        &live_config(&c),
        c.revision_id(),
        written,
    )
}

/// [`refused`]'s decision over what it read.
fn judge_refusal(
    spec: &FunctionSpec,
    o: &ObservedFunction,
    code: &str,
    config: &FunctionConfig,
    revision: Option<&str>,
    written: &Written<'_>,
) -> Result<Refused> {
    if code == written.code && *config == written.config {
        return Ok(Refused::Done);
    }
    match revision {
        Some(r) if code == o.code_sha256_b64 && *config == o.config => {
            Ok(Refused::Resend(r.to_string()))
        }
        _ => anyhow::bail!(
            "function {} changed since the plan read it (by another run, or outside this tool): \
             nothing was written to it; run plan again",
            spec.name
        ),
    }
}

/// A write to `$LATEST` sent by `send` with `guard`'s revision (or none). Each refusal for a
/// stale revision (`stale`) is judged by [`refused`], and the write sent again with the
/// revision found, up to [`REFUSAL_LOOKS`] times. `Some`: its answer; `None`: `$LATEST`
/// already held what it writes (`written`), its own earlier attempt having gone through.
async fn guarded<T, E, Fut>(
    call: &str,
    (ctx, spec, o): (&Ctx, &FunctionSpec, &ObservedFunction),
    guard: Option<Guard>,
    written: &Written<'_>,
    stale: impl Fn(&E) -> bool,
    send: impl Fn(Option<String>) -> Fut,
) -> Result<Option<T>>
where
    E: std::error::Error + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let mut revision = guard.map(|g| g.0);
    let mut looks = 0;
    loop {
        let e = match send(revision.clone()).await {
            Ok(out) => return Ok(Some(out)),
            Err(e) => e,
        };
        if revision.is_none() || looks >= REFUSAL_LOOKS || !service_error(&e).is_some_and(&stale) {
            return Err(e).context(call.to_string());
        }
        looks += 1;
        match refused(ctx, spec, o, written)
            .await
            .with_context(|| format!("after {e}"))?
        {
            Refused::Done => return Ok(None),
            Refused::Resend(r) => revision = Some(r),
        }
    }
}

/// Points `$LATEST` at the spec's artifact and, with `publish`, publishes it in the same call;
/// the number of the version published. `guard`: see [`Guard`].
///
/// A retried call whose first attempt was executed publishes nothing new: Lambda publishes
/// only when the code or configuration changed since the last version, and answers that one.
async fn update_code(
    ctx: &Ctx,
    spec: &FunctionSpec,
    o: &ObservedFunction,
    publish: bool,
    guard: Option<Guard>,
) -> Result<Option<String>> {
    let source = code_source(spec).await?;
    // UpdateFunctionCode carries the architecture, not UpdateFunctionConfiguration.
    let written = Written {
        code: &spec.code_sha256_b64,
        config: FunctionConfig {
            architecture: spec.architecture.clone(),
            ..o.config.clone()
        },
    };
    let sent = guarded(
        "UpdateFunctionCode",
        (ctx, spec, o),
        guard,
        &written,
        |e| matches!(e, UpdateFunctionCodeError::PreconditionFailedException(_)),
        |revision| send_code(ctx, spec, &source, publish, revision),
    )
    .await?;
    let Some(out) = sent else {
        // Its own earlier attempt went through: the version it published, if any.
        return if publish {
            self::publish(ctx, spec).await.map(Some)
        } else {
            Ok(None)
        };
    };
    check_code("UpdateFunctionCode", spec, out.code_sha256())?;
    // A numbered version only when one was published (`$LATEST` otherwise).
    Ok(out
        .version()
        .filter(|v| publish && v.parse::<u64>().is_ok())
        .map(str::to_string))
}

/// UpdateFunctionCode, retried while another update is in progress.
async fn send_code(
    ctx: &Ctx,
    spec: &FunctionSpec,
    source: &CodeSource,
    publish: bool,
    revision: Option<String>,
) -> Result<
    aws_sdk_lambda::operation::update_function_code::UpdateFunctionCodeOutput,
    SdkError<UpdateFunctionCodeError, HttpResponse>,
> {
    let lambda = &ctx.aws.lambda;
    retry(
        &format!("UpdateFunctionCode {}", spec.name),
        conflict_backoff(ctx),
        || {
            let call = lambda
                .update_function_code()
                .function_name(&spec.name)
                .architectures(Architecture::from(spec.architecture.as_str()))
                .publish(publish)
                .set_revision_id(revision.clone());
            match source {
                CodeSource::Zip(zip) => call.zip_file(zip.clone()),
                CodeSource::S3 => call.s3_bucket(&spec.code_bucket).s3_key(&spec.code_key),
            }
            .send()
        },
        |e| service_error(e).and_then(update_code_retry_reason),
    )
    .await
}

/// PublishVersion's CodeSha256 check, for code sent with CreateFunction / UpdateFunctionCode
/// (and the version published with it): Lambda's hash of what it got is the built artifact's,
/// not a zip rebuilt since it was hashed or an object overwritten under our key.
fn check_code(call: &str, spec: &FunctionSpec, got: Option<&str>) -> Result<()> {
    match got {
        Some(sha) if sha != spec.code_sha256_b64 => anyhow::bail!(
            "{call} {}: Lambda got code with SHA-256 {sha} from {}, not the built artifact's {}",
            spec.name,
            match &spec.code_zip {
                Some(zip) => zip.display().to_string(),
                None => format!("s3://{}/{}", spec.code_bucket, spec.code_key),
            },
            spec.code_sha256_b64
        ),
        _ => Ok(()),
    }
}

/// Where Lambda gets a function's code from.
enum CodeSource {
    /// The zip's bytes, with the call.
    Zip(aws_sdk_lambda::primitives::Blob),
    /// The artifact's S3 object, which the function's create or update waits for.
    S3,
}

async fn code_source(spec: &FunctionSpec) -> Result<CodeSource> {
    let Some(zip) = &spec.code_zip else {
        return Ok(CodeSource::S3);
    };
    let bytes = tokio::fs::read(zip)
        .await
        .with_context(|| format!("reading {} (the code of {})", zip.display(), spec.name))?;
    Ok(CodeSource::Zip(bytes.into()))
}

/// Waits for the update `version` was published with. If that update failed, the version is
/// deleted (best effort) before the error returns: left behind, a later run that finds it
/// holding the spec's code could point the alias at it.
async fn settle_published(ctx: &Ctx, spec: &FunctionSpec, version: &str) -> Result<()> {
    let Err(failed) = wait_ready(ctx, &spec.name, true).await else {
        return Ok(());
    };
    let number: Vec<u64> = version.parse().into_iter().collect();
    if let Err(e) = delete_versions(ctx, spec, &number).await {
        tracing::warn!(function = spec.name, version, "{e:#}");
    }
    Err(failed)
}

/// Sends the spec's configuration; `guard`: see [`Guard`].
async fn update_config(
    ctx: &Ctx,
    spec: &FunctionSpec,
    o: &ObservedFunction,
    guard: Option<Guard>,
) -> Result<()> {
    let written = Written {
        code: &o.code_sha256_b64,
        config: FunctionConfig {
            architecture: o.config.architecture.clone(),
            ..desired(spec)
        },
    };
    guarded(
        "UpdateFunctionConfiguration",
        (ctx, spec, o),
        guard,
        &written,
        |e| {
            matches!(
                e,
                UpdateFunctionConfigurationError::PreconditionFailedException(_)
            )
        },
        |revision| send_config(ctx, spec, revision),
    )
    .await?;
    Ok(())
}

/// UpdateFunctionConfiguration, waiting (bounded) while a new role is not yet assumable and
/// while another update is in progress.
async fn send_config(
    ctx: &Ctx,
    spec: &FunctionSpec,
    revision: Option<String>,
) -> Result<(), SdkError<UpdateFunctionConfigurationError, HttpResponse>> {
    let lambda = &ctx.aws.lambda;
    let c = desired(spec);
    let young = tokio::sync::OnceCell::new();
    let (c, young, revision) = (&c, &young, &revision);
    retry(
        &format!("UpdateFunctionConfiguration {}", spec.name),
        conflict_backoff(ctx),
        || async move {
            let sent = lambda
                .update_function_configuration()
                .function_name(&spec.name)
                .set_revision_id(revision.clone())
                .role(&c.role)
                .runtime(Runtime::from(c.runtime.as_str()))
                .handler(&c.handler)
                .memory_size(c.memory_mb as i32)
                .timeout(c.timeout_secs as i32)
                .environment(
                    Environment::builder()
                        .set_variables(Some(c.environment.clone().into_iter().collect()))
                        .build(),
                )
                .send()
                .await;
            match sent {
                Ok(out) => Ok(out),
                Err(e) => {
                    let why = match service_error(&e) {
                        Some(UpdateFunctionConfigurationError::InvalidParameterValueException(
                            _,
                        )) => propagation_reason(ctx, &c.role, young).await,
                        Some(other) => update_config_retry_reason(other),
                        None => None,
                    };
                    Err((e, why))
                }
            }
        },
        |(_, why)| *why,
    )
    .await
    .map(|_| ())
    .map_err(|(e, _)| e)
}

/// Publishes `$LATEST` as a new version; its number.
async fn publish(ctx: &Ctx, spec: &FunctionSpec) -> Result<String> {
    let lambda = &ctx.aws.lambda;
    let published = retry(
        &format!("PublishVersion {}", spec.name),
        conflict_backoff(ctx),
        || {
            lambda
                .publish_version()
                .function_name(&spec.name)
                // Refuses to publish if someone changed the code since our update.
                .code_sha256(&spec.code_sha256_b64)
                .send()
        },
        |e| service_error(e).and_then(publish_retry_reason),
    )
    .await
    .context("PublishVersion")?;
    Ok(published
        .version()
        .context("PublishVersion returned no version")?
        .to_string())
}

/// Every numbered version, oldest first (`$LATEST` is not a version).
async fn list_versions(ctx: &Ctx, name: &str) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let page = ctx
            .aws
            .lambda
            .list_versions_by_function()
            .function_name(name)
            .set_marker(marker)
            .send()
            .await
            .context("ListVersionsByFunction")?;
        for v in page.versions() {
            if let Some(number) = v.version().and_then(|n| n.parse::<u64>().ok()) {
                out.push(Version {
                    number,
                    code_sha256_b64: v.code_sha256().unwrap_or_default().to_string(),
                    config: live_config(v),
                    failed: v.state() == Some(&State::Failed),
                });
            }
        }
        match page.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    out.sort_by_key(|v| v.number);
    Ok(out)
}

/// Creates the alias or moves it from `current` to `version`; `revision`: the alias's
/// RevisionId as read, if it was.
async fn point_alias(
    ctx: &Ctx,
    spec: &FunctionSpec,
    current: Option<&str>,
    revision: Option<&str>,
    version: &str,
) -> Result<()> {
    let lambda = &ctx.aws.lambda;
    if current.is_some() {
        match lambda
            .update_alias()
            .function_name(&spec.name)
            .name(&spec.alias)
            .function_version(version)
            // Refused if anyone moved the alias since the plan read it.
            .set_revision_id(revision.map(str::to_string))
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            // Deleted since it was read: create it below.
            Err(e) if super::not_found(&e) => {}
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateAliasError::PreconditionFailedException(_)) =>
            {
                anyhow::bail!(
                    "alias {} of function {} changed since the plan read it (by another run, or \
                     outside this tool); version {version} is published but not served: run \
                     plan again",
                    spec.alias,
                    spec.name
                )
            }
            Err(e) => return Err(e).context("UpdateAlias"),
        }
    }
    lambda
        .create_alias()
        .function_name(&spec.name)
        .name(&spec.alias)
        .function_version(version)
        .send()
        .await
        .context("CreateAlias")?;
    Ok(())
}

/// Deletes the `doomed` versions, together. They come from [`purge_steps`] over the versions
/// this run knows of (read by the plan, plus what it published): listing them again would
/// cost a round-trip on every code change, and a version someone else published meanwhile is
/// only left for the next publishing run to purge.
async fn delete_versions(ctx: &Ctx, spec: &FunctionSpec, doomed: &[u64]) -> Result<()> {
    let deleted = futures::future::join_all(doomed.iter().map(|v| {
        ctx.aws
            .lambda
            .delete_function()
            .function_name(&spec.name)
            .qualifier(v.to_string())
            .send()
    }))
    .await;
    for (v, result) in doomed.iter().zip(deleted) {
        match result {
            Ok(_) => {}
            Err(e) if super::not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("DeleteFunction version {v}")),
        }
    }
    Ok(())
}

async fn update_tags(ctx: &Ctx, spec: &FunctionSpec, o: &ObservedFunction) -> Result<()> {
    let lambda = &ctx.aws.lambda;
    let delta = crate::engine::tags::delta(&spec.tags, &o.tags);
    if !delta.remove.is_empty() {
        lambda
            .untag_resource()
            .resource(&o.arn)
            .set_tag_keys(Some(delta.remove))
            .send()
            .await
            .context("UntagResource")?;
    }
    if !delta.set.is_empty() {
        lambda
            .tag_resource()
            .resource(&o.arn)
            .set_tags(Some(delta.set.into_iter().collect()))
            .send()
            .await
            .context("TagResource")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_lambda::error::ErrorMetadata;
    use aws_sdk_lambda::types::error::{InvalidParameterValueException, ResourceConflictException};
    use std::cell::{Cell, RefCell};

    fn spec() -> FunctionSpec {
        FunctionSpec {
            name: "f-dev".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            runtime: "provided.al2023".into(),
            handler: "bootstrap".into(),
            architecture: "x86_64".into(),
            memory_mb: 256,
            timeout_secs: 10,
            environment: BTreeMap::from([("LOG_LEVEL".into(), "info".into())]),
            code_bucket: "b".into(),
            code_key: "functions/f/ab.zip".into(),
            code_zip: None,
            code_sha256_hex: "69b7".into(),
            code_sha256_b64: "abc=".into(),
            alias: "live".into(),
            keep_versions: 3,
            tags: BTreeMap::new(),
        }
    }

    fn observed(s: &FunctionSpec, versions: u64) -> ObservedFunction {
        ObservedFunction {
            arn: "arn".into(),
            code_sha256_b64: s.code_sha256_b64.clone(),
            config: desired(s),
            tags: s.tags.clone(),
            versions: (1..=versions)
                .map(|n| Version {
                    number: n,
                    code_sha256_b64: s.code_sha256_b64.clone(),
                    config: desired(s),
                    failed: false,
                })
                .collect(),
            alias_target: Some(versions.to_string()),
            alias_revision_id: Some("alias-rev".into()),
            readiness: Readiness::Ready,
            revision_id: Some("rev-1".into()),
        }
    }

    fn fields(d: &Diff<FunctionField>) -> Vec<&str> {
        d.0.iter().map(|c| c.field.as_str()).collect()
    }

    /// `spec()`'s function as Lambda describes it (GetFunctionConfiguration, ListVersions),
    /// written out rather than derived from the spec, so a read or diff that misses a field
    /// shows up as a diff.
    fn aws_configuration(version: &str) -> FunctionConfiguration {
        FunctionConfiguration::builder()
            .function_name("f-dev")
            .function_arn(match version {
                "$LATEST" => "arn:aws:lambda:us-east-1:1:function:f-dev".to_string(),
                n => format!("arn:aws:lambda:us-east-1:1:function:f-dev:{n}"),
            })
            .version(version)
            .runtime(Runtime::Providedal2023)
            .handler("bootstrap")
            .architectures(Architecture::X8664)
            .memory_size(256)
            .timeout(10)
            .environment(
                aws_sdk_lambda::types::EnvironmentResponse::builder()
                    .variables("LOG_LEVEL", "info")
                    .build(),
            )
            .role("arn:aws:iam::1:role/r")
            .code_sha256("abc=")
            .code_size(1234)
            .package_type(aws_sdk_lambda::types::PackageType::Zip)
            .state(State::Active)
            .last_update_status(LastUpdateStatus::Successful)
            .build()
    }

    #[test]
    fn only_a_settled_function_with_a_code_or_config_change_guards_its_update() {
        let s = spec();
        let mut o = observed(&s, 2);
        use FunctionField as F;
        assert!(LambdaFunction::update_guarded(&o, &[F::Code, F::Version]));
        assert!(LambdaFunction::update_guarded(
            &o,
            &[F::MemoryMb, F::Version]
        ));
        // No write to `$LATEST`, so no revision to carry: read again under the lock.
        assert!(!LambdaFunction::update_guarded(&o, &[F::Alias]));
        assert!(!LambdaFunction::update_guarded(&o, &[F::Tags]));
        assert!(!LambdaFunction::update_guarded(&o, &[F::PurgeVersions]));
        // The revision of a function mid-update changes when the update completes.
        o.readiness = Readiness::Busy;
        assert!(!LambdaFunction::update_guarded(&o, &[F::Code, F::Version]));
        o.readiness = Readiness::Ready;
        o.revision_id = None;
        assert!(!LambdaFunction::update_guarded(&o, &[F::Code, F::Version]));
    }

    #[test]
    fn a_refused_revision_is_our_own_write_a_moved_revision_or_a_change() {
        let s = spec();
        let o = observed(&s, 1);
        let new_code = Written {
            code: "new=",
            config: o.config.clone(),
        };
        let judge = |code: &str, config: &FunctionConfig| {
            judge_refusal(&s, &o, code, config, Some("rev-2"), &new_code)
        };
        // `$LATEST` is what the write makes of what the plan read: its lost first attempt
        // went through.
        assert_eq!(judge("new=", &o.config).unwrap(), Refused::Done);
        // Nothing the plan compared moved, only the revision: send again with it.
        assert_eq!(
            judge(&o.code_sha256_b64, &o.config).unwrap(),
            Refused::Resend("rev-2".into())
        );
        // Someone else's code, or configuration (also beside our code): the plan is stale.
        let err = judge("other=", &o.config).unwrap_err().to_string();
        assert!(err.contains("changed since the plan read it"), "{err}");
        let mut config = o.config.clone();
        config.memory_mb += 1;
        assert!(judge(&o.code_sha256_b64, &config).is_err());
        assert!(judge("new=", &config).is_err());
    }

    #[test]
    fn settled_function_has_no_diff() {
        let latest = aws_configuration("$LATEST");
        let live = ObservedFunction {
            arn: latest.function_arn().unwrap().into(),
            code_sha256_b64: latest.code_sha256().unwrap().into(),
            config: live_config(&latest),
            tags: BTreeMap::new(),
            versions: (1..=3)
                .map(|n| {
                    let v = aws_configuration(&n.to_string());
                    Version {
                        number: n,
                        code_sha256_b64: v.code_sha256().unwrap().into(),
                        config: live_config(&v),
                        failed: false,
                    }
                })
                .collect(),
            alias_target: Some("3".into()),
            alias_revision_id: Some("alias-rev".into()),
            readiness: readiness(latest.state(), latest.last_update_status(), None),
            revision_id: None,
        };
        let d = LambdaFunction::diff(&spec(), &live);
        assert!(d.0.is_empty(), "{:?}", d.0);
    }

    #[test]
    fn new_code_updates_code_publishes_and_moves_the_alias() {
        let s = spec();
        let mut o = observed(&s, 2);
        o.code_sha256_b64 = "AAEC".into();
        for v in &mut o.versions {
            v.code_sha256_b64 = "AAEC".into();
        }
        let d = LambdaFunction::diff(&s, &o);
        assert_eq!(fields(&d), ["code", "version", "alias"]);
        assert_eq!(d.0[0].old, json!("000102"), "shown as hex");
        assert_eq!(d.0[0].new, json!("69b7"));
    }

    #[test]
    fn memory_change_is_a_config_update_and_a_publish_only() {
        let mut s = spec();
        let o = observed(&s, 1);
        s.memory_mb = 512;
        assert_eq!(
            fields(&LambdaFunction::diff(&s, &o)),
            ["memory_mb", "version", "alias"]
        );
    }

    #[test]
    fn an_unpublished_update_from_an_interrupted_run_is_published() {
        let mut s = spec();
        let mut o = observed(&s, 1);
        s.memory_mb = 512;
        o.config.memory_mb = 512; // $LATEST updated, no version published yet
        assert_eq!(fields(&LambdaFunction::diff(&s, &o)), ["version", "alias"]);
    }

    #[test]
    fn a_failed_version_is_never_served_and_goes_before_the_next_publish() {
        let s = spec();
        // Version 3 holds the spec but was published by an update that failed.
        let mut o = observed(&s, 3);
        o.alias_target = Some("2".into());
        o.versions[2].failed = true;
        let d = LambdaFunction::diff(&s, &o);
        assert_eq!(fields(&d), ["version", "alias", "purge_versions"]);
        let purge = d.0.iter().find(|c| c.field == FunctionField::PurgeVersions);
        assert_eq!(purge.unwrap().old, json!([3]));
        // The same version served by the alias is not deleted under it: a new one is
        // published and the alias moves (the oldest goes, for `keep_versions`).
        o.alias_target = Some("3".into());
        let d = LambdaFunction::diff(&s, &o);
        assert_eq!(fields(&d), ["version", "alias", "purge_versions"]);
        let purge = d.0.iter().find(|c| c.field == FunctionField::PurgeVersions);
        assert_eq!(purge.unwrap().old, json!([1]));
    }

    #[test]
    fn purge_keeps_n_and_never_the_alias_target() {
        assert_eq!(versions_to_purge(&[1, 2, 3, 4, 5], 3, &[5]), [1, 2]);
        assert_eq!(versions_to_purge(&[1, 2, 3], 3, &[]), Vec::<u64>::new());
        // The alias still points at an old version: it survives, the next oldest go.
        assert_eq!(versions_to_purge(&[1, 2, 3, 4, 5], 3, &[1]), [2, 3]);
        let s = spec();
        let o = observed(&s, 5);
        assert_eq!(fields(&LambdaFunction::diff(&s, &o)), ["purge_versions"]);
    }

    /// GetFunction's answer for the alias, as AWS gives it: the served version's
    /// configuration (`spec()`'s, written out) under the alias-qualified ARN, and the
    /// function's tags.
    fn served(version: &str, tags: Option<&[(&str, &str)]>) -> GetFunctionOutput {
        let mut c = aws_configuration(version);
        c.function_arn = Some("arn:aws:lambda:us-east-1:1:function:f-dev:live".into());
        GetFunctionOutput::builder()
            .configuration(c)
            .set_tags(tags.map(|t| {
                t.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }))
            .build()
    }

    #[test]
    fn a_served_version_that_holds_the_spec_is_the_whole_read() {
        let mut s = spec();
        s.tags = BTreeMap::from([("app".into(), "invoice".into())]);
        let o = serving(&s, &served("7", Some(&[("app", "invoice")]))).expect("settled");
        assert_eq!(o.arn, "arn:aws:lambda:us-east-1:1:function:f-dev");
        assert_eq!(o.alias_target.as_deref(), Some("7"));
        assert!(LambdaFunction::diff(&s, &o).0.is_empty());
        // Anything else needs the full read: other code, other configuration, other or
        // unreadable tags (no lambda:ListTags), an alias on $LATEST.
        let mut other = s.clone();
        other.code_sha256_b64 = "xyz=".into();
        assert!(serving(&other, &served("7", Some(&[("app", "invoice")]))).is_none());
        other = s.clone();
        other.memory_mb = 512;
        assert!(serving(&other, &served("7", Some(&[("app", "invoice")]))).is_none());
        assert!(serving(&s, &served("7", Some(&[("app", "other")]))).is_none());
        assert!(serving(&s, &served("7", None)).is_none());
        assert!(serving(&s, &served("$LATEST", Some(&[("app", "invoice")]))).is_none());
    }

    #[test]
    fn the_purge_spares_both_ends_of_the_alias_move_until_it_moved() {
        // keep 3, serving 5, publishing 6: 1-3 go first, 4 stays with 5 and 6.
        assert_eq!(
            purge_steps(&[1, 2, 3, 4, 5, 6], 3, Some(5), Some(6)),
            (vec![1, 2, 3], vec![])
        );
        // keep 1: the served version can only go once the alias has left it.
        assert_eq!(
            purge_steps(&[4, 5, 6], 1, Some(5), Some(6)),
            (vec![4], vec![5])
        );
        // No move: only the excess, never the served one.
        assert_eq!(
            purge_steps(&[1, 2, 3, 4], 2, Some(2), None),
            (vec![1, 3], vec![])
        );
        let mut s = spec();
        s.keep_versions = 1;
        let o = observed(&s, 2);
        s.memory_mb = 512;
        let d = LambdaFunction::diff(&s, &o);
        let purge = d.0.iter().find(|c| c.field == "purge_versions").unwrap();
        assert_eq!(purge.old, json!([1, 2]), "the plan shows both steps");
    }

    #[test]
    fn readiness_follows_state_and_last_update_status() {
        use LastUpdateStatus as L;
        assert_eq!(
            readiness(Some(&State::Active), Some(&L::Successful), None),
            Readiness::Ready
        );
        assert_eq!(
            readiness(Some(&State::Active), None, None),
            Readiness::Ready
        );
        assert_eq!(
            readiness(Some(&State::Pending), None, None),
            Readiness::Busy
        );
        assert_eq!(
            readiness(Some(&State::Active), Some(&L::InProgress), None),
            Readiness::Busy
        );
        assert!(matches!(
            readiness(Some(&State::Active), Some(&L::Failed), Some("bad zip")),
            Readiness::UpdateFailed(m) if m.contains("bad zip")
        ));
        assert!(matches!(
            readiness(Some(&State::Failed), None, Some("no role")),
            Readiness::Failed(m) if m.contains("no role")
        ));
        assert_eq!(
            readiness(Some(&State::Inactive), Some(&L::Successful), None),
            Readiness::Ready,
            "an idle function takes the next update"
        );
    }

    /// Pending -> InProgress -> Successful, as AWS reports a new function: the wait returns
    /// only once it is settled.
    #[tokio::test(start_paused = true)]
    async fn waits_through_pending_and_in_progress() {
        use LastUpdateStatus as L;
        let script = RefCell::new(vec![
            (State::Active, L::Successful),
            (State::Active, L::InProgress),
            (State::Pending, L::InProgress),
        ]);
        let polls = Cell::new(0);
        wait_until("f ready", Backoff::wait(Duration::from_secs(60)), || {
            polls.set(polls.get() + 1);
            let (s, l) = script.borrow_mut().pop().expect("no more responses");
            async move {
                Ok(match readiness(Some(&s), Some(&l), None) {
                    Readiness::Ready => Some(()),
                    _ => None,
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(polls.get(), 3);
    }

    fn conflict() -> UpdateFunctionCodeError {
        UpdateFunctionCodeError::ResourceConflictException(
            ResourceConflictException::builder()
                .message("The operation cannot be performed at this time.")
                .meta(
                    ErrorMetadata::builder()
                        .code("ResourceConflictException")
                        .build(),
                )
                .build(),
        )
    }

    fn invalid_parameter() -> CreateFunctionError {
        CreateFunctionError::InvalidParameterValueException(
            InvalidParameterValueException::builder()
                .message("The role defined for the function cannot be assumed by Lambda.")
                .meta(
                    ErrorMetadata::builder()
                        .code("InvalidParameterValueException")
                        .build(),
                )
                .build(),
        )
    }

    #[test]
    fn retryable_errors_are_recognised_by_type_and_code() {
        assert!(update_code_retry_reason(&conflict()).is_some());
        assert!(create_retry_reason(&invalid_parameter()).is_some());
        // Another error is final.
        let other = CreateFunctionError::unhandled("boom");
        assert!(create_retry_reason(&other).is_none());
    }

    /// The shortest and longest total pause of `retries` retries under `policy`: each pause is
    /// exponential from `first`, capped at `max`, less up to 20 % jitter.
    fn pauses(policy: Backoff, retries: u32) -> (Duration, Duration) {
        let longest: Duration = (0..retries)
            .map(|n| policy.first.saturating_mul(2u32.pow(n)).min(policy.max))
            .sum();
        (longest.mul_f64(0.8), longest)
    }

    /// Two conflicts, then success: the update goes through after backing off by the policy
    /// UpdateFunctionCode really uses, within the deploy's wait timeout.
    #[tokio::test(start_paused = true)]
    async fn conflicts_are_retried_until_the_update_goes_through() {
        let ctx = Ctx::offline(Duration::from_secs(600)).await;
        let policy = conflict_backoff(&ctx);
        assert_eq!(policy.deadline, ctx.wait_timeout);
        let start = tokio::time::Instant::now();
        let calls = Cell::new(0);
        let out: Result<u32, UpdateFunctionCodeError> = retry(
            "UpdateFunctionCode",
            policy,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 3 { Err(conflict()) } else { Ok(n) } }
            },
            update_code_retry_reason,
        )
        .await;
        assert_eq!(out.unwrap(), 3);
        let (shortest, longest) = pauses(policy, 2);
        let waited = start.elapsed();
        assert!(
            shortest <= waited && waited <= longest,
            "two backoffs of {policy:?}: {waited:?}"
        );
    }

    /// The role never becomes assumable: creation gives up at the propagation bound with the
    /// original error, however long the deploy's wait timeout, instead of retrying forever; and
    /// it keeps trying until close to that bound.
    #[tokio::test(start_paused = true)]
    async fn role_propagation_retry_is_bounded() {
        let ctx = Ctx::offline(Duration::from_secs(900)).await;
        let policy = role_backoff(&ctx);
        assert_eq!(policy.deadline, ROLE_PROPAGATION);
        let start = tokio::time::Instant::now();
        let calls = Cell::new(0);
        let out: Result<(), CreateFunctionError> = retry(
            "CreateFunction",
            policy,
            || {
                calls.set(calls.get() + 1);
                async { Err(invalid_parameter()) }
            },
            create_retry_reason,
        )
        .await;
        assert!(matches!(
            out,
            Err(CreateFunctionError::InvalidParameterValueException(_))
        ));
        let waited = start.elapsed();
        assert!(waited <= ROLE_PROPAGATION, "{waited:?}");
        assert!(
            waited + policy.max > ROLE_PROPAGATION,
            "gave up early: {waited:?}"
        );
        // Jittered pauses are at most the unjittered ones: at least one call more than the
        // retries whose longest pauses fit before the bound. And IAM gets several chances.
        let min_calls = (1..)
            .find(|&n| pauses(policy, n).1 > ROLE_PROPAGATION)
            .unwrap();
        assert!(calls.get() >= min_calls.max(5), "{} calls", calls.get());

        // A shorter wait timeout bounds the propagation wait too.
        let short = role_backoff(&Ctx::offline(Duration::from_secs(30)).await);
        assert_eq!(short.deadline, Duration::from_secs(30));
    }
}
