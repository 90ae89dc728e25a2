//! The seed step: a function's sample data in a table, written by invoking its alias once.
//!
//! What the original project's after-hook did (invoke insert-mock-data after every deploy when
//! the table lacked its invoices), as one more node of the graph, so plan shows it and apply
//! runs it on the same code path as everything else:
//!
//! - read: one consistent `BatchGetItem` of every sample key (keys only). The seed exists when
//!   all of them are in the table; a missing table, a half-finished seed or sample invoices
//!   deleted since all read as "missing", so the step is planned again.
//! - create: invokes the alias once and checks the function's answer (insert-mock-data's
//!   summary: inserted, unchanged, conflicts, failed). An invocation that fails, or a summary
//!   with failures, is invoked again (the function is idempotent), at most three times, then
//!   fails the step with the function's own message. How the function runs is
//!   the environment's choice ([`SeedInvoke`]): Lambda's Invoke API where the functions are
//!   deployed to AWS, the local Lambda runtime where the endpoint is the emulator (or a
//!   rehearsal against it), which stores functions but runs none.
//! - update never happens (a seed has no settings to drift) and delete succeeds without a
//!   call: the data goes with its table.

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::Deserialize;
use serde_json::Value;
use stacks::{SeedInvoke, SeedSpec};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::engine::retry::{Backoff, retry_at_most, wait_until};
use crate::engine::{Ctx, Diff, Provider};
use crate::local::deployed;
use crate::local::runtime::{
    EmulatorAccess, FunctionLogs, InvokeOutcome, LocalConfig, LocalLambda,
};

/// Invocations of the seeding function at most, when it fails.
const INVOCATIONS: u32 = 3;

/// The function ran and failed (its error, a summary with failures, a timeout or crash), as
/// opposed to not being reachable at all: worth invoking again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FunctionFailed(pub String);

/// BatchGetItem takes at most this many keys per request.
const BATCH: usize = 100;

super::fields! {
    /// What a seed step shows when planned; it is never updated, only run.
    pub enum SeedField {
        Invoke = "invoke",
        Via = "via",
        Table = "table",
        Invoices = "invoices",
    }
}

pub struct Seed;

/// A seed that is there: every sample key was found.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedSeed {
    pub invoices: usize,
}

/// What insert-mock-data answers: its `Summary`, read here without linking the function.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSummary {
    pub inserted: usize,
    pub unchanged: usize,
    pub conflicts: Vec<String>,
    pub failed: Vec<String>,
}

impl SeedSummary {
    /// `100 inserted, 0 unchanged, 0 conflicts, 0 failed`.
    pub fn text(&self) -> String {
        format!(
            "{} inserted, {} unchanged, {} conflicts, {} failed",
            self.inserted,
            self.unchanged,
            self.conflicts.len(),
            self.failed.len()
        )
    }
}

/// Checks a function's answer: a summary without failures. Conflicts (a sample InvoiceID held
/// by another invoice) are not the seed's to fix and do not fail it.
pub fn check_answer(function: &str, payload: &Value) -> Result<SeedSummary> {
    let summary: SeedSummary = serde_json::from_value(payload.clone()).with_context(|| {
        format!("{function} answered {payload}, which is not a seeding summary")
    })?;
    if !summary.failed.is_empty() {
        return Err(FunctionFailed(format!(
            "{function} could not store {} sample invoices ({}): {}",
            summary.failed.len(),
            summary.text(),
            summary.failed.join(", ")
        ))
        .into());
    }
    Ok(summary)
}

/// How the invocation is shown in plans.
fn via(invoke: &SeedInvoke) -> String {
    match invoke {
        SeedInvoke::Lambda => "Lambda Invoke".into(),
        SeedInvoke::LocalRuntime { endpoint } => {
            format!("local Lambda runtime on this machine, against {endpoint}")
        }
    }
}

#[async_trait]
impl Provider for Seed {
    type Spec = SeedSpec;
    type Observed = ObservedSeed;
    type Field = SeedField;
    const KIND: &'static str = "seed";

    async fn read(&self, ctx: &Ctx, spec: &SeedSpec) -> Result<Option<ObservedSeed>> {
        let keys = spec.keys();
        let Some(found) = count_present(ctx, spec, &keys).await? else {
            return Ok(None);
        };
        if found < keys.len() {
            tracing::info!(table = %spec.table_name, found, of = keys.len(), "the seed is incomplete");
            return Ok(None);
        }
        Ok(Some(ObservedSeed { invoices: found }))
    }

    fn tags(_observed: &ObservedSeed) -> Option<&BTreeMap<String, String>> {
        None
    }

    fn describe(spec: &SeedSpec) -> Diff<SeedField> {
        let mut d = Diff::default();
        let function = format!("{}:{}", spec.function_name, spec.alias);
        d.push(SeedField::Invoke, &Value::Null, &function, false);
        d.push(SeedField::Via, &Value::Null, &via(&spec.invoke), false);
        d.push(SeedField::Table, &Value::Null, &spec.table_name, false);
        d.push(SeedField::Invoices, &Value::Null, &spec.invoices, false);
        d
    }

    fn diff(_spec: &SeedSpec, _o: &ObservedSeed) -> Diff<SeedField> {
        Diff::default()
    }

    async fn create(&self, ctx: &Ctx, spec: &SeedSpec) -> Result<()> {
        let function = format!("{}:{}", spec.function_name, spec.alias);
        // The function is idempotent and asks to be re-run when some writes failed (a
        // transaction cancelled under concurrent writes, say): a failed invocation is tried
        // again, a few times, before the step fails with its message.
        let summary = retry_at_most(
            &format!("invoking {function}"),
            Backoff::wait(ctx.wait_timeout),
            INVOCATIONS,
            || async {
                let payload = match &spec.invoke {
                    SeedInvoke::Lambda => invoke_lambda(ctx, spec).await?,
                    SeedInvoke::LocalRuntime { endpoint } => {
                        invoke_locally(ctx, spec, endpoint).await?
                    }
                };
                check_answer(&function, &payload)
            },
            |e: &anyhow::Error| {
                e.chain()
                    .any(|c| c.is::<FunctionFailed>())
                    .then_some("the seeding function failed; it is idempotent")
            },
        )
        .await?;
        eprintln!(
            "  seeded {} through {function}: {}",
            spec.table_name,
            summary.text()
        );
        crate::engine::apply::report(serde_json::to_value(&summary)?);
        if !summary.conflicts.is_empty() {
            eprintln!(
                "  warning: sample InvoiceIDs held by other invoices, left alone (plans keep showing the seed while they are): {}",
                summary.conflicts.join(", ")
            );
        }
        Ok(())
    }

    async fn update(
        &self,
        _ctx: &Ctx,
        _spec: &SeedSpec,
        _o: &ObservedSeed,
        _changes: &[SeedField],
    ) -> Result<()> {
        // `diff` never reports a change.
        Ok(())
    }

    async fn delete(&self, _ctx: &Ctx, _spec: &SeedSpec, _o: &ObservedSeed) -> Result<()> {
        Ok(())
    }
}

/// How many of `keys` the table holds; `None` when the table does not exist. Keys DynamoDB
/// leaves unprocessed (throttled) are asked again, backing off, through the shared wait helper.
async fn count_present(
    ctx: &Ctx,
    spec: &SeedSpec,
    keys: &[(String, String)],
) -> Result<Option<usize>> {
    struct Progress {
        pending: Vec<HashMap<String, AttributeValue>>,
        found: usize,
        table_missing: bool,
    }
    let key = |(id, customer): &(String, String)| {
        HashMap::from([
            ("InvoiceID".to_string(), AttributeValue::S(id.clone())),
            (
                "CustomerID".to_string(),
                AttributeValue::S(customer.clone()),
            ),
        ])
    };
    let table = spec.table_name.as_str();
    let mut found = 0;
    for chunk in keys.chunks(BATCH) {
        let progress = Mutex::new(Progress {
            pending: chunk.iter().map(key).collect(),
            found: 0,
            table_missing: false,
        });
        let progress = &progress;
        wait_until(
            &format!("reading the sample invoices in {table}"),
            Backoff::wait(ctx.wait_timeout),
            move || async move {
                let request = std::mem::take(&mut progress.lock().expect("not poisoned").pending);
                let batch = KeysAndAttributes::builder()
                    .set_keys(Some(request))
                    .projection_expression("InvoiceID")
                    // Right after a seed, the next plan must see all of it.
                    .consistent_read(true)
                    .build()
                    .context("a BatchGetItem request")?;
                let out = match ctx
                    .aws
                    .dynamodb
                    .batch_get_item()
                    .request_items(table, batch)
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_resource_not_found_exception()) =>
                    {
                        progress.lock().expect("not poisoned").table_missing = true;
                        return Ok(Some(()));
                    }
                    Err(e) => return Err(e).context("BatchGetItem"),
                };
                let mut p = progress.lock().expect("not poisoned");
                p.found += out
                    .responses()
                    .and_then(|r| r.get(table))
                    .map_or(0, Vec::len);
                p.pending = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
                Ok(p.pending.is_empty().then_some(()))
            },
        )
        .await?;
        let p = progress.lock().expect("not poisoned");
        if p.table_missing {
            return Ok(None);
        }
        found += p.found;
    }
    Ok(Some(found))
}

/// Lambda's Invoke API, synchronously: the function's answer, or its error as Lambda reports it.
async fn invoke_lambda(ctx: &Ctx, spec: &SeedSpec) -> Result<Value> {
    let function = format!("{}:{}", spec.function_name, spec.alias);
    let out = ctx
        .aws
        .lambda
        .invoke()
        .function_name(&spec.function_name)
        .qualifier(&spec.alias)
        .payload(aws_sdk_lambda::primitives::Blob::new("{}"))
        .send()
        .await
        .with_context(|| format!("Invoke {function}"))?;
    let body = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    let payload: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    if let Some(kind) = out.function_error() {
        return Err(FunctionFailed(format!("{function} failed ({kind}): {payload}")).into());
    }
    Ok(payload)
}

/// Runs the code behind the alias on this machine, as `cargo xtask invoke` does: the version's
/// artifact (fetched from the artifacts bucket by its digest), environment, memory and timeout,
/// with `endpoint` as every AWS endpoint it calls.
async fn invoke_locally(ctx: &Ctx, spec: &SeedSpec, endpoint: &str) -> Result<Value> {
    let function = format!("{}:{}", spec.function_name, spec.alias);
    let Some(deployed) =
        deployed::read_function(&ctx.aws, &spec.function_name, &spec.alias).await?
    else {
        bail!("{function} is not deployed");
    };
    let cache = crate::session::project_root().join("target/xtask/local/code");
    let zip = deployed::fetch_code(&ctx.aws, &spec.artifacts_bucket, &deployed, &cache).await?;
    let mut config = LocalConfig::new(vec![deployed.runtime_config(zip)]);
    config.region = ctx.region.clone();
    config.account_id = ctx.account_id.clone();
    config.emulator = Some(EmulatorAccess::moto(endpoint));
    config.max_processes = 1;
    // The answer carries the outcome; the function's log lines would only interleave with
    // apply's progress (a crash still reports its last lines).
    config.logs = FunctionLogs::Discard;
    let runtime = LocalLambda::start(config)
        .await
        .with_context(|| format!("starting {function} locally"))?;
    let invoked = runtime
        .invoke(&spec.function_name, serde_json::json!({}))
        .await;
    runtime.shutdown().await;
    let invoked = invoked.with_context(|| format!("invoking {function} locally"))?;
    match &invoked.outcome {
        InvokeOutcome::Ok(v) => Ok(v.clone()),
        InvokeOutcome::Crashed { logs, .. } => {
            let (payload, _) = invoked.outcome.invoke_payload(&invoked.request_id);
            Err(FunctionFailed(format!(
                "{function} failed: {payload}; its last output:\n{}",
                logs.join("\n")
            ))
            .into())
        }
        other => {
            let (payload, _) = other.invoke_payload(&invoked.request_id);
            Err(FunctionFailed(format!("{function} failed: {payload}")).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_summary_without_failures_is_success() {
        let s = check_answer(
            "f:live",
            &json!({"inserted": 98, "unchanged": 1, "conflicts": ["INV7"], "failed": []}),
        )
        .unwrap();
        assert_eq!(s.text(), "98 inserted, 1 unchanged, 1 conflicts, 0 failed");
    }

    #[test]
    fn failures_fail_the_step_naming_them() {
        let err = check_answer(
            "f:live",
            &json!({"inserted": 97, "unchanged": 0, "conflicts": [], "failed": ["INV3", "INV9", "INV42"]}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("could not store 3 sample invoices"), "{err}");
        assert!(err.contains("INV3, INV9, INV42"), "{err}");
        // Which the step invokes again.
        assert!(
            check_answer(
                "f:live",
                &json!({"inserted": 0, "unchanged": 0, "conflicts": [], "failed": ["INV1"]})
            )
            .unwrap_err()
            .is::<FunctionFailed>()
        );
    }

    #[test]
    fn an_answer_that_is_not_a_summary_is_an_error() {
        for answer in [json!({"statusCode": 200}), json!("done"), Value::Null] {
            let err = check_answer("f:live", &answer).unwrap_err();
            // Not something another invocation would change.
            assert!(!err.is::<FunctionFailed>());
            let err = err.to_string();
            assert!(err.contains("not a seeding summary"), "{err}");
        }
    }
}
