//! In-memory implementations of the [`crate::store`] traits for tests (feature `test-util`).
//!
//! They mimic the DynamoDB semantics the handlers rely on (composite key, conditional insert,
//! paging by `InvoiceID`) and can be switched to fail, to test the 500 paths. Injected failure
//! messages deliberately contain text that must never reach a client.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::error::StoreError;
use crate::model::{Invoice, ProcessedRecord};
use crate::store::{InvoicePage, InvoiceStore, PdfStore, Presigner, ProcessedStore};

/// Message of injected failures; tests assert it never appears in a response.
pub const INJECTED_FAILURE: &str =
    "injected failure: arn:aws:dynamodb:eu-west-1:123456789012:table/secret";

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not turn every later assertion into a poison error.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Failure switch shared by the fakes.
#[derive(Debug, Default)]
pub struct FailSwitch(AtomicBool);

impl FailSwitch {
    pub fn set(&self, fail: bool) {
        self.0.store(fail, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.0.load(Ordering::SeqCst) {
            Err(StoreError::Backend(INJECTED_FAILURE.into()))
        } else {
            Ok(())
        }
    }
}

/// The invoices table, keyed by (`InvoiceID`, `CustomerID`).
#[derive(Debug, Default)]
pub struct MemoryInvoiceStore {
    items: Mutex<BTreeMap<(String, String), Invoice>>,
    pub fail: FailSwitch,
    /// Number of successful `insert_new` writes.
    pub writes: AtomicUsize,
}

impl MemoryInvoiceStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(invoices: impl IntoIterator<Item = Invoice>) -> Self {
        let store = Self::default();
        for invoice in invoices {
            store.put(invoice);
        }
        store
    }

    /// Stores without any check, like a write by another program.
    pub fn put(&self, invoice: Invoice) {
        lock(&self.items).insert(
            (invoice.invoice_id.clone(), invoice.customer_id.clone()),
            invoice,
        );
    }

    pub fn len(&self) -> usize {
        lock(&self.items).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Invoice> {
        lock(&self.items).values().cloned().collect()
    }
}

impl InvoiceStore for MemoryInvoiceStore {
    async fn insert_new(&self, invoice: &Invoice) -> Result<(), StoreError> {
        self.fail.check()?;
        let key = (invoice.invoice_id.clone(), invoice.customer_id.clone());
        let mut items = lock(&self.items);
        // As the DynamoDB store's guard item does: an InvoiceID any customer holds is taken.
        if items.keys().any(|(id, _)| *id == invoice.invoice_id) {
            return Err(StoreError::AlreadyExists);
        }
        items.insert(key, invoice.clone());
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn find_by_id(&self, invoice_id: &str) -> Result<Option<Invoice>, StoreError> {
        self.fail.check()?;
        Ok(lock(&self.items)
            .iter()
            .find(|((id, _), _)| id == invoice_id)
            .map(|(_, invoice)| invoice.clone()))
    }

    async fn list_by_customer(
        &self,
        customer_id: &str,
        limit: u32,
        start_after: Option<&str>,
    ) -> Result<InvoicePage, StoreError> {
        self.fail.check()?;
        let items = lock(&self.items);
        let mut matching = items
            .values()
            .filter(|inv| inv.customer_id == customer_id)
            .filter(|inv| start_after.is_none_or(|after| inv.invoice_id.as_str() > after));
        let invoices: Vec<Invoice> = matching.by_ref().take(limit as usize).cloned().collect();
        // Like DynamoDB, a full page yields a continuation key even if nothing follows.
        let last_invoice_id = (invoices.len() == limit as usize && limit > 0)
            .then(|| invoices.last().map(|inv| inv.invoice_id.clone()))
            .flatten();
        Ok(InvoicePage {
            invoices,
            last_invoice_id,
        })
    }
}

/// The processed table, keyed by `InvoiceID`.
#[derive(Debug, Default)]
pub struct MemoryProcessedStore {
    records: Mutex<BTreeMap<String, ProcessedRecord>>,
    pub fail: FailSwitch,
}

impl MemoryProcessedStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(records: impl IntoIterator<Item = ProcessedRecord>) -> Self {
        let store = Self::default();
        for record in records {
            lock(&store.records).insert(record.invoice_id.clone(), record);
        }
        store
    }

    pub fn all(&self) -> Vec<ProcessedRecord> {
        lock(&self.records).values().cloned().collect()
    }
}

impl ProcessedStore for MemoryProcessedStore {
    async fn record(&self, record: &ProcessedRecord) -> Result<(), StoreError> {
        self.fail.check()?;
        lock(&self.records).insert(record.invoice_id.clone(), record.clone());
        Ok(())
    }

    async fn get(&self, invoice_id: &str) -> Result<Option<ProcessedRecord>, StoreError> {
        self.fail.check()?;
        Ok(lock(&self.records).get(invoice_id).cloned())
    }
}

/// The PDF bucket.
#[derive(Debug, Default)]
pub struct MemoryPdfStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    pub fail: FailSwitch,
    /// Keys whose upload fails while the others succeed.
    pub fail_keys: Mutex<Vec<String>>,
}

impl MemoryPdfStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.objects).get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }

    pub fn fail_key(&self, key: &str) {
        lock(&self.fail_keys).push(key.to_owned());
    }
}

impl PdfStore for MemoryPdfStore {
    async fn put_pdf(&self, key: &str, pdf: Vec<u8>) -> Result<(), StoreError> {
        self.fail.check()?;
        if lock(&self.fail_keys).iter().any(|k| k == key) {
            return Err(StoreError::Backend(INJECTED_FAILURE.into()));
        }
        lock(&self.objects).insert(key.to_owned(), pdf);
        Ok(())
    }
}

/// A presigner producing recognisable fake URLs.
#[derive(Debug, Default)]
pub struct FakePresigner {
    pub fail: FailSwitch,
}

impl Presigner for FakePresigner {
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, StoreError> {
        self.fail.check()?;
        Ok(format!(
            "https://bucket.example/{key}?X-Amz-Expires={}",
            expires_in.as_secs()
        ))
    }
}
