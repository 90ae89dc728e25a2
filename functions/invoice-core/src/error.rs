//! Error types: [`ApiError`] is what a client sees, [`StoreError`] what storage reports.
//!
//! Handlers map every failure to an [`ApiError`]; storage failures become a generic 500 whose
//! message never includes the underlying cause (table names, SDK messages), which is logged
//! instead.

use serde::Serialize;
use serde_json::json;

/// One offending input field and why it was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error answered to an HTTP client as
/// `{"error": {"code": ..., "message": ..., "fields": [...]}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    /// Stable, machine-readable code such as `validation_failed`.
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldError>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after: None,
        }
    }

    /// 400 naming the offending fields.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        let mut err = Self::new(400, "validation_failed", "the request has invalid fields");
        err.fields = fields;
        err
    }

    /// 400 about a single field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    /// 400 for a body that is not JSON at all.
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        let mut err = Self::new(400, "malformed_json", "the request body is not valid JSON");
        err.fields = vec![FieldError::new("body", detail)];
        err
    }

    /// 400 for an event that is not an API Gateway proxy request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 409 with `Retry-After`: the resource exists but is not ready yet.
    pub fn not_ready(message: impl Into<String>, retry_after_secs: u32) -> Self {
        let mut err = Self::new(409, "not_ready", message);
        err.retry_after = Some(retry_after_secs);
        err
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// 500 with a fixed message, so that storage details never reach clients.
    pub fn internal() -> Self {
        Self::new(500, "internal_error", "internal error, please retry later")
    }

    /// The JSON body answered to the client.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "fields": self.fields,
            }
        })
    }
}

/// Failure of a storage backend (DynamoDB, S3 or a test fake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found the item already present.
    #[error("item already exists")]
    AlreadyExists,
    /// An item exists but cannot be read as the expected type.
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    /// The backend failed (network, throttling, permissions, missing table...).
    #[error("storage backend failed: {0}")]
    Backend(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        // Logged here because this is the one place every storage failure passes through on
        // its way to becoming an opaque 500.
        tracing::error!(error = %err, "storage failure");
        ApiError::internal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_documented_shape() {
        let err = ApiError::invalid_field("TotalAmount", "must not be negative");
        assert_eq!(err.status, 400);
        assert_eq!(
            err.body(),
            json!({"error": {
                "code": "validation_failed",
                "message": "the request has invalid fields",
                "fields": [{"field": "TotalAmount", "message": "must not be negative"}],
            }})
        );
        assert_eq!(
            ApiError::not_found("x").body()["error"]["fields"],
            json!([])
        );
    }

    #[test]
    fn store_errors_become_opaque_500() {
        let api: ApiError =
            StoreError::Backend("table arn:aws:secret-table exploded".into()).into();
        assert_eq!(api.status, 500);
        assert!(!api.body().to_string().contains("secret"));
    }
}
