//! DynamoDB stream consumer: renders each new or changed invoice as a PDF, stores it in the
//! bucket under `invoices/<InvoiceID>.pdf` and records `InvoiceID` -> `S3Key` in the processed
//! table (the attribute download-pdf reads; the original wrote `s3key`, which nothing read).
//!
//! Batch semantics (`ReportBatchItemFailures` on the event source mapping):
//! - `INSERT` and `MODIFY` records are processed; `REMOVE` records are skipped.
//! - Records that can never succeed (not a stream record, no `NewImage`, an image that is not
//!   a valid invoice) are logged and skipped: retrying them would only block the shard.
//! - Records that fail for transient reasons (S3 or DynamoDB errors) are reported in
//!   `batchItemFailures` by sequence number, so Lambda retries from the first of them.
//!   Re-processing is harmless: the PDF is byte-identical and the writes are overwrites.

use aws_lambda_events::event::dynamodb::EventRecord;
use invoice_core::ProcessedRecord;
use invoice_core::model::{Invoice, is_guard};
use invoice_core::pdf::{self, Seller};
use invoice_core::store::{PdfStore, ProcessedStore};
use invoice_core::validate::validate;
use serde::Serialize;
use serde_dynamo::AttributeValue;
use serde_json::Value;

/// The partial batch response Lambda expects with `ReportBatchItemFailures`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// The record's `SequenceNumber`.
    pub item_identifier: String,
}

/// What became of one record; returned for tests and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored { invoice_id: String, key: String },
    Skipped(String),
    Failed(String),
}

/// The stores and settings generate-pdf uses.
pub struct Deps<'a, S, P> {
    pub pdfs: &'a S,
    pub processed: &'a P,
    pub seller: &'a Seller,
}

/// Handles one stream batch. Never fails as a whole: failures are per record.
pub async fn handle<S: PdfStore, P: ProcessedStore>(
    deps: &Deps<'_, S, P>,
    event: Value,
) -> BatchResponse {
    let records = match event.get("Records") {
        Some(Value::Array(records)) => records.as_slice(),
        _ => {
            tracing::error!("event has no Records array; nothing to do");
            &[]
        }
    };
    let mut response = BatchResponse::default();
    for (index, raw) in records.iter().enumerate() {
        let sequence = raw
            .pointer("/dynamodb/SequenceNumber")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match process_record(deps, raw).await {
            Outcome::Stored { invoice_id, key } => {
                tracing::info!(index, sequence, invoice_id, key, "pdf stored");
            }
            Outcome::Skipped(reason) => {
                tracing::warn!(index, sequence, reason, "record skipped");
            }
            Outcome::Failed(reason) => {
                tracing::error!(index, sequence, reason, "record failed, will be retried");
                // An empty identifier makes Lambda retry the whole batch, the safe choice for
                // a record without a sequence number (which real streams always have).
                response.batch_item_failures.push(BatchItemFailure {
                    item_identifier: sequence,
                });
            }
        }
    }
    response
}

/// Processes one raw stream record.
pub async fn process_record<S: PdfStore, P: ProcessedStore>(
    deps: &Deps<'_, S, P>,
    raw: &Value,
) -> Outcome {
    let record: EventRecord = match serde_json::from_value(raw.clone()) {
        Ok(record) => record,
        Err(err) => return Outcome::Skipped(format!("not a DynamoDB stream record: {err}")),
    };
    match record.event_name.as_str() {
        "INSERT" | "MODIFY" => {}
        "REMOVE" => return Outcome::Skipped("REMOVE event".into()),
        other => return Outcome::Skipped(format!("unknown event name {other:?}")),
    }
    // The invoices table also holds InvoiceID guard items (see invoice_core::model); they are
    // bookkeeping, not invoices.
    if let Some(AttributeValue::S(customer)) = record.change.keys.get("CustomerID")
        && is_guard(customer)
    {
        return Outcome::Skipped("InvoiceID guard item, not an invoice".into());
    }
    if record.change.new_image.is_empty() {
        return Outcome::Skipped("no NewImage (stream view type must include new images)".into());
    }
    let invoice: Invoice = match serde_dynamo::from_item(record.change.new_image) {
        Ok(invoice) => invoice,
        Err(err) => return Outcome::Skipped(format!("NewImage is not an invoice: {err}")),
    };
    if let Err(errors) = validate(&invoice) {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        return Outcome::Skipped(format!(
            "invoice {} is invalid in fields {fields:?}",
            invoice.invoice_id
        ));
    }
    let pdf = match pdf::render(&invoice, deps.seller) {
        Ok(pdf) => pdf,
        // Deterministic, so retrying cannot help; it indicates a bug to fix, hence the error log.
        Err(err) => {
            tracing::error!(invoice_id = %invoice.invoice_id, error = %err, "render failed");
            return Outcome::Skipped(format!("render failed: {err}"));
        }
    };
    let key = invoice.pdf_key();
    if let Err(err) = deps.pdfs.put_pdf(&key, pdf).await {
        return Outcome::Failed(format!("storing the PDF failed: {err}"));
    }
    // Recorded only after the object exists, so download-pdf never presigns a missing key.
    let record = ProcessedRecord {
        invoice_id: invoice.invoice_id.clone(),
        s3_key: key.clone(),
    };
    if let Err(err) = deps.processed.record(&record).await {
        return Outcome::Failed(format!("recording the PDF failed: {err}"));
    }
    Outcome::Stored {
        invoice_id: invoice.invoice_id,
        key,
    }
}
