//! `GET /list-invoices?customerId=X`: a customer's invoices as a JSON array.
//!
//! The body stays a bare array, as the original returned, so old clients keep working.
//! Pagination is additive:
//! - `limit` (1..=1000, default 1000) caps the number of invoices returned;
//! - when more may follow, the response carries an `X-Next-Page-Token` header; passing its
//!   value back as `pageToken` continues the listing.
//!
//! A client that ignores both gets up to 1000 invoices, which bounds the response well under
//! Lambda's 6 MB payload limit. Errors: `400` for a missing/invalid `customerId`, `limit` or
//! `pageToken`, `500` for storage failures.

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use invoice_core::http;
use invoice_core::store::InvoiceStore;
use invoice_core::validate::check_id;
use invoice_core::{ApiError, Invoice};
use serde::{Deserialize, Serialize};

/// Largest (and default) page size.
pub const MAX_LIMIT: u32 = 1000;

/// DynamoDB stops a Query at 1 MB, so a page may need several calls; this bounds them in case
/// the store keeps returning empty pages with a continuation key.
const MAX_QUERIES: usize = 20;

/// Contents of a page token: where to continue, and for whom (a token is only valid for the
/// customer it was issued for; using it for another one would query the wrong partition).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PageToken {
    #[serde(rename = "c")]
    customer_id: String,
    #[serde(rename = "a")]
    after_invoice_id: String,
}

fn encode_token(token: &PageToken) -> String {
    // Serializing two strings cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default())
}

fn decode_token(raw: &str, customer_id: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::invalid_field("pageToken", "is not a token from X-Next-Page-Token");
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let token: PageToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.customer_id != customer_id {
        return Err(ApiError::invalid_field(
            "pageToken",
            "was issued for another customerId",
        ));
    }
    check_id(&token.after_invoice_id).map_err(|_| invalid())?;
    Ok(token.after_invoice_id)
}

fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(MAX_LIMIT);
    };
    match raw.trim().parse::<u32>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(ApiError::invalid_field(
            "limit",
            format!("must be an integer between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// Handles one API Gateway proxy event. Never fails: every problem becomes a JSON error.
pub async fn handle(
    store: &impl InvoiceStore,
    event: serde_json::Value,
) -> ApiGatewayProxyResponse {
    http::finish(process(store, event).await)
}

async fn process(
    store: &impl InvoiceStore,
    event: serde_json::Value,
) -> Result<ApiGatewayProxyResponse, ApiError> {
    let request = http::parse_request(event)?;
    let customer_id = http::query_param(&request, &["customerId"])
        .ok_or_else(|| ApiError::invalid_field("customerId", "is required"))?;
    check_id(customer_id).map_err(|message| ApiError::invalid_field("customerId", message))?;
    let limit = parse_limit(http::query_param(&request, &["limit"]))?;
    let mut after = http::query_param(&request, &["pageToken"])
        .map(|raw| decode_token(raw, customer_id))
        .transpose()?;

    let mut invoices: Vec<Invoice> = Vec::new();
    for _ in 0..MAX_QUERIES {
        let remaining = limit - invoices.len() as u32;
        let page = store
            .list_by_customer(customer_id, remaining, after.as_deref())
            .await?;
        invoices.extend(page.invoices);
        after = page.last_invoice_id;
        if after.is_none() || invoices.len() as u32 >= limit {
            break;
        }
    }
    tracing::info!(
        customer_id,
        count = invoices.len(),
        more = after.is_some(),
        "listed"
    );

    let mut response = http::json_response(200, &invoices);
    if let Some(after_invoice_id) = after {
        let token = encode_token(&PageToken {
            customer_id: customer_id.to_owned(),
            after_invoice_id,
        });
        http::set_header(&mut response, http::NEXT_PAGE_TOKEN_HEADER, &token);
        // Browsers only let scripts read non-standard headers they are told about.
        http::set_header(
            &mut response,
            "access-control-expose-headers",
            "X-Next-Page-Token",
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_customer_binding() {
        let token = encode_token(&PageToken {
            customer_id: "CUST1".into(),
            after_invoice_id: "INV7".into(),
        });
        assert_eq!(decode_token(&token, "CUST1").unwrap(), "INV7");
        assert_eq!(
            decode_token(&token, "CUST2").unwrap_err().fields[0].field,
            "pageToken"
        );
        for bad in [
            "",
            "!!!",
            "bm90IGpzb24",
            &URL_SAFE_NO_PAD.encode(r#"{"c":"CUST1","a":""}"#),
        ] {
            assert_eq!(decode_token(bad, "CUST1").unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), MAX_LIMIT);
        assert_eq!(parse_limit(Some("25")).unwrap(), 25);
        for bad in ["0", "-1", "1001", "ten", "2.5", ""] {
            assert_eq!(parse_limit(Some(bad)).unwrap_err().fields[0].field, "limit");
        }
    }
}
