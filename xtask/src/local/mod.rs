//! Running the invoice app on this machine: the local data plane that executes what the
//! emulator (moto) only stores.
//!
//! - [`runtime`]: the Lambda side. Function code runs as real processes speaking the Lambda
//!   Runtime API to xtask, with warm reuse, concurrency up to a limit, enforced timeouts and
//!   crash detection ([`runtime::LocalLambda`]).
//! - [`http`]: the small HTTP/1.1 server the Runtime API is served with.
//! - [`streams`]: the DynamoDB stream poller, doing what Lambda's event source mapping does on
//!   AWS (moto stores the mapping but never runs it).
//!
//! The gateway of issue 7 is to be built on [`runtime::LocalLambda`].
//! Until the deployed state (functions, their environment, memory and timeout) can be read back
//! from the emulator, [`function_spec`] derives a function's definition from the environment's
//! config with the stack's naming.

pub mod http;
pub mod runtime;
pub mod streams;

use std::collections::BTreeMap;
use std::time::Duration;

use stacks::Config;
use stacks::names::Names;

use runtime::{Code, FunctionSpec};

/// The account moto reports; it names buckets when the config sets no suffix.
pub const EMULATOR_ACCOUNT_ID: &str = "123456789012";
/// Memory and timeout the stack will give every function (issue 5: 256 MB, 10 s).
pub const MEMORY_MB: u32 = 256;
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variables a function gets in environment `env`: every handler reads a
/// subset of these, so each gets all of them (the stack will narrow this per function).
pub fn function_env(config: &Config, env: &str, account_id: &str) -> BTreeMap<String, String> {
    let suffix = if config.buckets.name_suffix.is_empty() {
        account_id
    } else {
        &config.buckets.name_suffix
    };
    let names = Names::new(config, env, suffix);
    BTreeMap::from([
        ("INVOICES_TABLE".to_owned(), names.invoices_table()),
        ("PROCESSED_TABLE".to_owned(), names.processed_table()),
        ("PDF_BUCKET".to_owned(), names.pdf_bucket()),
        ("LOG_LEVEL".to_owned(), "info".to_owned()),
    ])
}

/// The definition of function `name` (a crate under `functions/`) as the local environment
/// would deploy it.
pub fn function_spec(config: &Config, env: &str, name: &str, code: Code) -> FunctionSpec {
    let mut spec = FunctionSpec::new(name, code);
    spec.env = function_env(config, env, EMULATOR_ACCOUNT_ID);
    spec.memory_mb = MEMORY_MB;
    spec.timeout = TIMEOUT;
    spec
}
