//! API Gateway (REST, proxy integration) requests and responses.
//!
//! Handlers take the raw event as `serde_json::Value` and parse it here, so that even an event
//! that is not a proxy request produces a JSON 400 rather than a runtime error (which API
//! Gateway would turn into an opaque 502).

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderName, HeaderValue, header};
use base64::Engine as _;
use serde::Serialize;

use crate::error::ApiError;

/// Largest accepted request body (decoded). Invoices are small; anything larger is a mistake
/// or abuse, and rejecting it early bounds memory and DynamoDB item size (400 KB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Response header carrying the token of the next page of a listing.
pub const NEXT_PAGE_TOKEN_HEADER: &str = "x-next-page-token";

/// Parses a raw Lambda event as an API Gateway proxy request.
pub fn parse_request(event: serde_json::Value) -> Result<ApiGatewayProxyRequest, ApiError> {
    serde_json::from_value(event)
        .map_err(|_| ApiError::bad_request("the event is not an API Gateway proxy request"))
}

/// The request body, base64-decoded when API Gateway flagged it, limited to
/// [`MAX_BODY_BYTES`].
pub fn body_bytes(req: &ApiGatewayProxyRequest) -> Result<Vec<u8>, ApiError> {
    let Some(body) = req.body.as_deref() else {
        return Err(ApiError::invalid_field("body", "is required"));
    };
    let bytes = if req.is_base64_encoded {
        // Checked before decoding so a huge body is not decoded just to be refused.
        if body.len() > MAX_BODY_BYTES.div_ceil(3) * 4 + 4 {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
        }
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| ApiError::invalid_field("body", "is flagged base64 but is not base64"))?
    } else {
        body.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_field("body", "is required"));
    }
    Ok(bytes)
}

/// First value of the first query parameter present among `names` (aliases, in preference
/// order).
pub fn query_param<'a>(req: &'a ApiGatewayProxyRequest, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| req.query_string_parameters.first(name))
}

/// Whether the client asked for JSON in `Accept` (a media range `application/json` whose
/// quality is not zero). Anything else, including no header, means the legacy text body.
pub fn accepts_json(req: &ApiGatewayProxyRequest) -> bool {
    req.headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let zero_quality = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/json") && !zero_quality
        })
}

fn response(status: u16, content_type: &'static str, body: String) -> ApiGatewayProxyResponse {
    let mut resp = ApiGatewayProxyResponse::default();
    resp.status_code = i64::from(status);
    resp.headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.body = Some(Body::Text(body));
    resp
}

/// A JSON response.
pub fn json_response(status: u16, body: &impl Serialize) -> ApiGatewayProxyResponse {
    match serde_json::to_string(body) {
        Ok(text) => response(status, "application/json", text),
        // Our own response types always serialize; this only guards against a future change.
        Err(_) => error_response(&ApiError::internal()),
    }
}

/// A `text/plain` response.
pub fn text_response(status: u16, body: String) -> ApiGatewayProxyResponse {
    response(status, "text/plain; charset=utf-8", body)
}

/// The JSON error response, with `Retry-After` when the error carries one.
pub fn error_response(err: &ApiError) -> ApiGatewayProxyResponse {
    let mut resp = response(err.status, "application/json", err.body().to_string());
    if let Some(secs) = err.retry_after {
        resp.headers
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Adds a header whose value came from our own data; values that are not valid header text
/// are dropped rather than panicking.
pub fn set_header(resp: &mut ApiGatewayProxyResponse, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        resp.headers.insert(HeaderName::from_static(name), value);
    }
}

/// Turns a handler result into the response API Gateway expects, logging errors by status.
pub fn finish(result: Result<ApiGatewayProxyResponse, ApiError>) -> ApiGatewayProxyResponse {
    match result {
        Ok(resp) => {
            tracing::info!(status = resp.status_code, "request handled");
            resp
        }
        Err(err) => {
            if err.status >= 500 {
                tracing::error!(status = err.status, code = err.code, "request failed");
            } else {
                tracing::info!(status = err.status, code = err.code, fields = ?err.fields, "request rejected");
            }
            error_response(&err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal proxy event: API Gateway always sends `requestContext` with the method.
    fn request(mut event: serde_json::Value) -> ApiGatewayProxyRequest {
        event["requestContext"] = json!({"httpMethod": event["httpMethod"].clone()});
        parse_request(event).unwrap()
    }

    #[test]
    fn body_limits_and_base64() {
        let req =
            request(json!({"httpMethod": "POST", "body": "eyJhIjoxfQ==", "isBase64Encoded": true}));
        assert_eq!(body_bytes(&req).unwrap(), br#"{"a":1}"#);

        let req = request(json!({"httpMethod": "POST", "body": "%%%", "isBase64Encoded": true}));
        assert_eq!(body_bytes(&req).unwrap_err().status, 400);

        let big = "x".repeat(MAX_BODY_BYTES + 1);
        let req = request(json!({"httpMethod": "POST", "body": big}));
        assert_eq!(body_bytes(&req).unwrap_err().status, 413);

        let req = request(
            json!({"httpMethod": "POST", "body": "A".repeat(MAX_BODY_BYTES * 2), "isBase64Encoded": true}),
        );
        assert_eq!(body_bytes(&req).unwrap_err().status, 413);

        let req = request(json!({"httpMethod": "POST", "body": "  "}));
        assert_eq!(body_bytes(&req).unwrap_err().fields[0].field, "body");
        let req = request(json!({"httpMethod": "POST"}));
        assert_eq!(body_bytes(&req).unwrap_err().status, 400);
    }

    #[test]
    fn accept_negotiation() {
        let with =
            |accept: &str| request(json!({"httpMethod": "GET", "headers": {"Accept": accept}}));
        assert!(accepts_json(&with("application/json")));
        assert!(accepts_json(&with("text/html, Application/JSON;q=0.5")));
        assert!(!accepts_json(&with("application/json;q=0")));
        assert!(!accepts_json(&with("*/*")));
        assert!(!accepts_json(&with("text/plain")));
        assert!(!accepts_json(&request(json!({"httpMethod": "GET"}))));
    }

    #[test]
    fn not_a_proxy_event_is_400() {
        assert_eq!(parse_request(json!([1, 2])).unwrap_err().status, 400);
        assert_eq!(
            parse_request(json!({"headers": 5})).unwrap_err().status,
            400
        );
    }

    #[test]
    fn error_response_sets_retry_after() {
        let resp = error_response(&ApiError::not_ready("later", 5));
        assert_eq!(resp.status_code, 409);
        assert_eq!(resp.headers["retry-after"], "5");
        assert_eq!(resp.headers["content-type"], "application/json");
    }
}
