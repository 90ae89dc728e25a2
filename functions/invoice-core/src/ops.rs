//! Operations shared by several handlers, written against the [`crate::store`] traits.

use crate::error::StoreError;
use crate::model::Invoice;
use crate::store::InvoiceStore;

/// What an idempotent insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The invoice was new and is now stored.
    Created,
    /// An identical invoice was already stored; nothing was written.
    Unchanged,
    /// An invoice with the same `InvoiceID` but different content exists; nothing was written.
    Conflict(Box<Invoice>),
}

/// Stores `invoice` unless its `InvoiceID` is taken, comparing with what is there otherwise.
///
/// The table's key is (`InvoiceID`, `CustomerID`), so a conditional put alone would accept the
/// same `InvoiceID` for a second customer. The lookup by `InvoiceID` answers retries cheaply;
/// [`InvoiceStore::insert_new`] settles races, including two concurrent first writes of one
/// `InvoiceID` for different customers (the DynamoDB store's guard item): the loser finds the
/// winner's invoice and gets [`InsertOutcome::Conflict`].
pub async fn insert_idempotent(
    store: &impl InvoiceStore,
    invoice: &Invoice,
) -> Result<InsertOutcome, StoreError> {
    if let Some(existing) = store.find_by_id(&invoice.invoice_id).await? {
        return Ok(compare(existing, invoice));
    }
    match store.insert_new(invoice).await {
        Ok(()) => Ok(InsertOutcome::Created),
        Err(StoreError::AlreadyExists) => match store.find_by_id(&invoice.invoice_id).await? {
            Some(existing) => Ok(compare(existing, invoice)),
            // Written and deleted between our two calls; report it rather than loop.
            None => Err(StoreError::Backend(
                "invoice vanished during conditional insert".into(),
            )),
        },
        Err(err) => Err(err),
    }
}

fn compare(existing: Invoice, wanted: &Invoice) -> InsertOutcome {
    if &existing == wanted {
        InsertOutcome::Unchanged
    } else {
        InsertOutcome::Conflict(Box::new(existing))
    }
}
