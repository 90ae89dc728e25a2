//! Seeding is idempotent and reports conflicts and failures.

use std::sync::atomic::Ordering;

use insert_mock_data::{COUNT, sample_invoice, seed};
use invoice_core::memory::MemoryInvoiceStore;

#[tokio::test]
async fn first_run_inserts_all_second_run_nothing() {
    let store = MemoryInvoiceStore::new();
    let first = seed(&store).await.unwrap();
    assert_eq!((first.inserted, first.unchanged), (COUNT, 0));
    assert_eq!(store.len(), COUNT);

    let second = seed(&store).await.unwrap();
    assert_eq!((second.inserted, second.unchanged), (0, COUNT));
    assert!(second.conflicts.is_empty());
    assert_eq!(
        store.writes.load(Ordering::SeqCst),
        COUNT,
        "no write on the second run"
    );
    assert_eq!(store.len(), COUNT);
}

#[tokio::test]
async fn changed_invoices_are_left_alone_and_reported() {
    let mut edited = sample_invoice(42);
    edited.customer_name = Some("Edited by hand".into());
    // Same InvoiceID under another customer: still the same invoice as far as seeding goes.
    let mut moved = sample_invoice(7);
    moved.customer_id = "CUST999".into();
    let store = MemoryInvoiceStore::with([edited.clone(), moved]);

    let summary = seed(&store).await.unwrap();
    assert_eq!(summary.inserted, COUNT - 2);
    assert_eq!(summary.conflicts, ["INV42", "INV7"]);
    assert_eq!(store.len(), COUNT);
    assert!(store.all().contains(&edited));
}

#[tokio::test]
async fn storage_failures_fail_the_invocation() {
    let store = MemoryInvoiceStore::new();
    store.fail.set(true);
    let err = seed(&store).await.unwrap_err();
    assert_eq!(err.0.failed.len(), COUNT);
    assert!(
        err.to_string()
            .starts_with("100 of 100 sample invoices could not be stored")
    );
}
