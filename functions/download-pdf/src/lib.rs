//! `GET /download-invoice?InvoiceID=X`: a presigned S3 GET URL for the invoice's PDF.
//!
//! Request: `InvoiceID` (the original parameter) or `invoiceId`.
//!
//! Response shape, chosen for compatibility: the original answered the URL as the plain-text
//! body, and old clients read it that way, so that stays the default (`text/plain`). A client
//! that sends `Accept: application/json` gets
//! `{"InvoiceID": ..., "url": ..., "expiresInSeconds": 900}` instead. Both are marked
//! `Cache-Control: no-store`, since the URL expires after 15 minutes.
//!
//! Errors (always JSON): `400` missing/invalid ID, `404` no such invoice, `409` with
//! `Retry-After` when the invoice exists but its PDF is not generated yet, `500` on storage
//! failure.

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use invoice_core::ApiError;
use invoice_core::http;
use invoice_core::store::{InvoiceStore, Presigner, ProcessedStore};
use invoice_core::validate::check_id;
use serde_json::json;

/// Lifetime of a download link.
pub const URL_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Seconds a client should wait before asking again for a PDF still being generated. Rendering
/// takes milliseconds; the delay is the stream's delivery latency.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The stores download-pdf reads.
pub struct Deps<'a, I, P, S> {
    pub invoices: &'a I,
    pub processed: &'a P,
    pub presigner: &'a S,
}

/// Handles one API Gateway proxy event. Never fails: every problem becomes a JSON error.
pub async fn handle<I, P, S>(
    deps: &Deps<'_, I, P, S>,
    event: serde_json::Value,
) -> ApiGatewayProxyResponse
where
    I: InvoiceStore,
    P: ProcessedStore,
    S: Presigner,
{
    http::finish(process(deps, event).await)
}

async fn process<I, P, S>(
    deps: &Deps<'_, I, P, S>,
    event: serde_json::Value,
) -> Result<ApiGatewayProxyResponse, ApiError>
where
    I: InvoiceStore,
    P: ProcessedStore,
    S: Presigner,
{
    let request = http::parse_request(event)?;
    let invoice_id = http::query_param(&request, &["InvoiceID", "invoiceId"])
        .ok_or_else(|| ApiError::invalid_field("InvoiceID", "is required"))?;
    check_id(invoice_id).map_err(|message| ApiError::invalid_field("InvoiceID", message))?;

    let Some(record) = deps.processed.get(invoice_id).await? else {
        // No PDF yet: tell "never heard of it" apart from "still rendering".
        return Err(match deps.invoices.find_by_id(invoice_id).await? {
            Some(_) => ApiError::not_ready(
                format!("the PDF of invoice {invoice_id} is not generated yet"),
                RETRY_AFTER_SECS,
            ),
            None => ApiError::not_found(format!("invoice {invoice_id} does not exist")),
        });
    };
    let url = deps
        .presigner
        .presign_get(&record.s3_key, URL_LIFETIME)
        .await?;
    tracing::info!(invoice_id, key = %record.s3_key, "presigned download");

    let mut response = if http::accepts_json(&request) {
        http::json_response(
            200,
            &json!({
                "InvoiceID": invoice_id,
                "url": url,
                "expiresInSeconds": URL_LIFETIME.as_secs(),
            }),
        )
    } else {
        http::text_response(200, url)
    };
    http::set_header(&mut response, "cache-control", "no-store");
    Ok(response)
}
