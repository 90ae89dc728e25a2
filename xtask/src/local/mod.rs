//! Running the invoice app on this machine: the local data plane that executes what the
//! emulator (moto) only stores.
//!
//! - [`deployed`]: what is deployed, read back from the emulator's control plane (function
//!   versions behind aliases and their code, the REST API stage, keys and usage plans).
//! - [`runtime`]: the Lambda side. Function code runs as real processes speaking the Lambda
//!   Runtime API to xtask, with warm reuse, concurrency up to a limit, enforced timeouts and
//!   crash detection ([`runtime::LocalLambda`]).
//! - [`gateway`]: the API Gateway side: routing, API keys, usage plans, validation, proxy
//!   events and responses, gateway responses and access logs.
//! - [`streams`]: the DynamoDB stream poller, doing what Lambda's event source mapping does on
//!   AWS (moto stores the mapping but never runs it).
//! - [`http`]: the small HTTP/1.1 server the gateway and the Runtime API are served with.
//! - [`follow`]: the data plane following the control plane (new alias versions, a new stage
//!   deployment); [`access_log`]: the stage's access logs; [`sources`]: what `--watch`
//!   compares.
//!
//! [`app::LocalApp`] wires them together for `cargo xtask up`; `cargo xtask invoke` runs one
//! function.

pub mod access_log;
pub mod app;
pub mod deployed;
pub mod follow;
pub mod gateway;
pub mod http;
pub mod runtime;
pub mod sources;
pub mod streams;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;
use stacks::names::Names;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::aws::Clients;
use gateway::Gateway;
use runtime::{InvokeOutcome, LocalError};
use streams::{Invoke, Poller, PollerConfig};

/// Invokes whatever the gateway serves now, so the stream trigger follows the alias to a new
/// version the same moment the API does.
struct Current(Gateway);

impl Invoke for Current {
    async fn invoke(&self, function: &str, payload: Value) -> Result<InvokeOutcome, LocalError> {
        let lambda = self.0.served().lambda.clone();
        lambda.invoke(function, payload).await.map(|i| i.outcome)
    }
}

/// Starts the poller of generate-pdf's stream trigger as the deployed event source mapping
/// says, with its checkpoints in `checkpoint_file`, and returns once it reads every shard (so a
/// `LATEST` mapping misses nothing written after `up` says it is ready). A missing or disabled
/// mapping is reported and skipped: the API is still served.
pub async fn start_stream_poller(
    aws: &Clients,
    names: &Names,
    gateway: &Gateway,
    tasks: &mut JoinSet<()>,
    mut stop: watch::Receiver<bool>,
    checkpoint_file: PathBuf,
) -> Result<()> {
    let function = names.function("generate-pdf");
    let qualified = format!("{function}:{}", stacks::invoice_app::ALIAS);
    let Some(mapping) = streams::read_mapping(&aws.lambda, &qualified)
        .await
        .context("reading the stream trigger")?
    else {
        eprintln!("no event source mapping for {qualified}: PDFs will not be generated");
        return Ok(());
    };
    if !mapping.enabled {
        eprintln!("the stream trigger of {qualified} is disabled: PDFs will not be generated");
        return Ok(());
    }
    let mut config = PollerConfig::new(function, aws.region());
    config.checkpoint_file = Some(checkpoint_file);
    let poller = Poller::new(
        aws.dynamodbstreams.clone(),
        mapping,
        Current(gateway.clone()),
        config,
    )?;
    let mut handle = poller.spawn();
    if tokio::time::timeout(Duration::from_secs(30), handle.ready())
        .await
        .is_err()
    {
        tracing::warn!("the stream poller is not reading every shard after 30 s");
    }
    tasks.spawn(async move {
        let _ = stop.changed().await;
        match handle.stop().await {
            Ok(stats) => tracing::info!(
                "stream poller stopped: {} invocations, {} records, {} skipped",
                stats.invocations,
                stats.records_processed,
                stats.records_skipped
            ),
            Err(e) => tracing::warn!("stream poller: {e}"),
        }
    });
    Ok(())
}
