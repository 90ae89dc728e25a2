//! Storage traits the handlers are written against.
//!
//! The AWS implementations live in [`crate::dynamo`] and [`crate::s3`]; tests use
//! [`crate::memory`]. Methods return `impl Future + Send` so handlers stay generic without
//! boxing, and the Lambda runtime can hold them across awaits.

use std::future::Future;
use std::time::Duration;

use crate::error::StoreError;
use crate::model::{Invoice, ProcessedRecord};

/// One page of a customer's invoices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvoicePage {
    pub invoices: Vec<Invoice>,
    /// `InvoiceID` of the last item read when more may follow; pass it back as `start_after`.
    pub last_invoice_id: Option<String>,
}

/// The invoices table (hash key `InvoiceID`, range key `CustomerID`, GSI `CustomerID-Index`).
pub trait InvoiceStore: Send + Sync {
    /// Writes the invoice unless its `InvoiceID` is taken, by this customer or any other
    /// ([`StoreError::AlreadyExists`] then), atomically: of two concurrent first writes of
    /// one `InvoiceID`, one fails.
    fn insert_new(&self, invoice: &Invoice) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The invoice with this `InvoiceID`, whichever customer it belongs to. Strongly
    /// consistent, because callers use it right after a conflicting write.
    fn find_by_id(
        &self,
        invoice_id: &str,
    ) -> impl Future<Output = Result<Option<Invoice>, StoreError>> + Send;

    /// Up to `limit` invoices of a customer, continuing after `start_after`.
    fn list_by_customer(
        &self,
        customer_id: &str,
        limit: u32,
        start_after: Option<&str>,
    ) -> impl Future<Output = Result<InvoicePage, StoreError>> + Send;
}

/// The processed table (hash key `InvoiceID`): where each invoice's PDF is.
pub trait ProcessedStore: Send + Sync {
    /// Creates or overwrites the record; re-recording the same key is harmless.
    fn record(
        &self,
        record: &ProcessedRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get(
        &self,
        invoice_id: &str,
    ) -> impl Future<Output = Result<Option<ProcessedRecord>, StoreError>> + Send;
}

/// The PDF bucket.
pub trait PdfStore: Send + Sync {
    /// Stores (or overwrites) a PDF object.
    fn put_pdf(
        &self,
        key: &str,
        pdf: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Makes time-limited download links for PDF objects.
pub trait Presigner: Send + Sync {
    fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
}
