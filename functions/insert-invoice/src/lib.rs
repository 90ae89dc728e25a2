//! `POST /insert-invoice`: validates a JSON invoice and stores it in the invoices table.
//!
//! Responses:
//! - `200` `{"InvoiceID": ..., "status": "created" | "unchanged"}`: stored now, or an identical
//!   invoice was already stored (re-posting is idempotent). Both are 200 rather than 201 for
//!   new invoices because the original handler answered 200 and clients check for it.
//! - `400` invalid JSON or fields (the error names each field), `409` the `InvoiceID` exists
//!   with different content, `413` body over 64 KiB, `500` storage failure (details only in
//!   the logs).

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use invoice_core::ApiError;
use invoice_core::http;
use invoice_core::ops::{InsertOutcome, insert_idempotent};
use invoice_core::store::InvoiceStore;
use invoice_core::validate::parse_invoice;
use serde_json::json;

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
    let body = http::body_bytes(&request)?;
    let invoice = parse_invoice(&body)?;
    let outcome = insert_idempotent(store, &invoice).await?;
    let status = match &outcome {
        InsertOutcome::Created => "created",
        InsertOutcome::Unchanged => "unchanged",
        InsertOutcome::Conflict(_) => "conflict",
    };
    tracing::info!(
        invoice_id = %invoice.invoice_id,
        customer_id = %invoice.customer_id,
        status,
        "insert"
    );
    if let InsertOutcome::Conflict(existing) = outcome {
        // Which customer holds it is not this client's business.
        return Err(ApiError::conflict(
            if existing.customer_id == invoice.customer_id {
                format!(
                    "invoice {} already exists with different content",
                    invoice.invoice_id
                )
            } else {
                format!("invoice {} belongs to another customer", invoice.invoice_id)
            },
        ));
    }
    Ok(http::json_response(
        200,
        &json!({"InvoiceID": invoice.invoice_id, "status": status}),
    ))
}
