//! The stage's access logs: one summary line per request on the terminal, and the
//! formatted lines shipped to the stage's CloudWatch Logs group in batches, as API Gateway
//! does.

use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::gateway::AccessLog;
use crate::aws::Clients;

/// Prints one line per request (unless quiet) and ships the stage's access log lines to its
/// CloudWatch Logs group, as API Gateway does, in batches.
pub async fn write_access_logs(
    aws: Clients,
    group_arn: Option<String>,
    mut rx: mpsc::UnboundedReceiver<AccessLog>,
    quiet: bool,
    mut stop: watch::Receiver<bool>,
) {
    let group = group_arn
        .as_deref()
        .and_then(log_group_name)
        .map(str::to_string);
    let stream = format!("local-gateway-{}", std::process::id());
    let mut stream_ready = false;
    let mut batch: Vec<(i64, String)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(entry) => {
                    if !quiet {
                        eprintln!("{}", entry.summary);
                    }
                    let ms = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as i64;
                    batch.push((ms, entry.line));
                }
                None => return,
            },
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(group) = &group else {
            batch.clear();
            continue;
        };
        if batch.is_empty() || (batch.len() < 500 && !tick_due(&batch)) {
            continue;
        }
        if !stream_ready {
            match aws
                .logs
                .create_log_stream()
                .log_group_name(group)
                .log_stream_name(&stream)
                .send()
                .await
            {
                Ok(_) => stream_ready = true,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_already_exists_exception()) =>
                {
                    stream_ready = true
                }
                Err(e) => {
                    tracing::warn!("access logs: creating stream {stream} in {group}: {e}");
                    batch.clear();
                    continue;
                }
            }
        }
        let events: Vec<_> = batch
            .drain(..)
            .filter_map(|(ts, message)| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(ts)
                    .message(message)
                    .build()
                    .ok()
            })
            .collect();
        if let Err(e) = aws
            .logs
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(&stream)
            .set_log_events(Some(events))
            .send()
            .await
        {
            tracing::warn!("access logs: PutLogEvents to {group}: {e}");
        }
    }
}

/// Ships a batch once its oldest line is half a second old.
fn tick_due(batch: &[(i64, String)]) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    batch.first().is_some_and(|(ts, _)| now - ts >= 500)
}

/// `arn:aws:logs:us-east-1:123456789012:log-group:NAME[:*]` -> `NAME`.
fn log_group_name(arn: &str) -> Option<&str> {
    let name = arn.split_once(":log-group:")?.1;
    Some(name.strip_suffix(":*").unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_group_names_come_from_arns() {
        assert_eq!(
            log_group_name(
                "arn:aws:logs:us-east-1:123456789012:log-group:API-Gateway-Access-Logs_x/v1:*"
            ),
            Some("API-Gateway-Access-Logs_x/v1")
        );
        assert_eq!(
            log_group_name("arn:aws:logs:us-east-1:1:log-group:g"),
            Some("g")
        );
        assert_eq!(log_group_name("nonsense"), None);
    }
}
