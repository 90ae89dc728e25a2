//! Structured JSON logs for CloudWatch.
//!
//! The level comes from `LOG_LEVEL` (an `EnvFilter` directive such as `info` or
//! `invoice_core=debug`), defaulting to `info`. Events carry the fields of their enclosing
//! spans, which includes the Lambda runtime's `requestId`. Handlers log identifiers and
//! outcomes, never request bodies or credentials.

use tracing_subscriber::EnvFilter;

/// Installs the global JSON subscriber. Safe to call more than once (later calls are no-ops).
pub fn init() {
    let filter = std::env::var("LOG_LEVEL")
        .ok()
        .and_then(|level| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        // CloudWatch adds its own timestamp and colour codes would be noise there.
        .with_ansi(false)
        .try_init();
}
