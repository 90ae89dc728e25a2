//! Structured JSON logs for CloudWatch.
//!
//! The level comes from `LOG_LEVEL`: a level such as `info`, or `target=level` directives such
//! as `invoice_core=debug,info` (a [`Targets`] filter), defaulting to `info`. `EnvFilter` would
//! also take span and field filters, but it brings the regex engine, about a megabyte of every
//! function binary, for syntax no deployment uses. Events carry the fields of their enclosing
//! spans, which includes the Lambda runtime's `requestId`. Handlers log identifiers and
//! outcomes, never request bodies or credentials.

use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The filter `LOG_LEVEL` asks for, or `info` when it is unset or not a valid directive list.
pub fn filter(log_level: Option<&str>) -> Targets {
    log_level
        .map(str::trim)
        .filter(|level| !level.is_empty() && level.split(',').all(directive))
        .and_then(|level| level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// `level` or `target=level`. [`Targets`] alone would take a bare word such as `loud` as a
/// target enabled at every level, which would silence everything else: a typo must not.
fn directive(d: &str) -> bool {
    let (target, level) = d.trim().split_once('=').unwrap_or(("", d.trim()));
    !(target.is_empty() && d.contains('=')) && level.parse::<LevelFilter>().is_ok()
}

/// Installs the global JSON subscriber. Safe to call more than once (later calls are no-ops).
pub fn init() {
    let filter = filter(std::env::var("LOG_LEVEL").ok().as_deref());
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        // CloudWatch adds its own timestamp and colour codes would be noise there.
        .with_ansi(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(json).try_init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn log_level_accepts_levels_and_target_directives() {
        let info = filter(Some("info"));
        assert!(info.would_enable("list_invoices", &Level::INFO));
        assert!(!info.would_enable("list_invoices", &Level::DEBUG));

        let targeted = filter(Some("invoice_core=debug,warn"));
        assert!(targeted.would_enable("invoice_core::dynamo", &Level::DEBUG));
        assert!(!targeted.would_enable("list_invoices", &Level::INFO));
        assert!(targeted.would_enable("list_invoices", &Level::WARN));
    }

    #[test]
    fn unset_or_invalid_log_level_means_info() {
        for level in [None, Some(""), Some("loud"), Some("a=b=c")] {
            let f = filter(level);
            assert!(f.would_enable("x", &Level::INFO), "{level:?}");
            assert!(!f.would_enable("x", &Level::DEBUG), "{level:?}");
        }
    }
}
