//! Stream batches with good and bad records, against in-memory stores.

use generate_pdf::{BatchResponse, Deps};
use invoice_core::ProcessedRecord;
use invoice_core::memory::{MemoryPdfStore, MemoryProcessedStore};
use invoice_core::pdf::Seller;
use serde_json::{Value, json};

fn batch() -> Value {
    let path = format!(
        "{}/tests/fixtures/stream_batch.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct World {
    pdfs: MemoryPdfStore,
    processed: MemoryProcessedStore,
    seller: Seller,
}

impl World {
    fn new() -> Self {
        Self {
            pdfs: MemoryPdfStore::new(),
            processed: MemoryProcessedStore::new(),
            seller: Seller::default(),
        }
    }

    async fn run(&self, event: Value) -> BatchResponse {
        let deps = Deps {
            pdfs: &self.pdfs,
            processed: &self.processed,
            seller: &self.seller,
        };
        generate_pdf::handle(&deps, event).await
    }
}

fn failures(response: &BatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[tokio::test]
async fn good_records_are_rendered_and_recorded_bad_ones_skipped() {
    let world = World::new();
    let response = world.run(batch()).await;
    assert_eq!(failures(&response), Vec::<&str>::new());
    assert_eq!(
        world.pdfs.keys(),
        [
            "invoices/INV1.pdf",
            "invoices/INV2.pdf",
            "invoices/INV7.pdf"
        ]
    );
    for key in world.pdfs.keys() {
        assert!(world.pdfs.get(&key).unwrap().starts_with(b"%PDF-"));
    }
    assert_eq!(
        world.processed.all(),
        ["INV1", "INV2", "INV7"]
            .map(|id| ProcessedRecord {
                invoice_id: id.into(),
                s3_key: format!("invoices/{id}.pdf"),
            })
            .to_vec()
    );
}

#[tokio::test]
async fn redelivery_writes_identical_bytes() {
    let world = World::new();
    world.run(batch()).await;
    let first = world.pdfs.get("invoices/INV2.pdf").unwrap();
    let response = world.run(batch()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(world.pdfs.get("invoices/INV2.pdf").unwrap(), first);
}

#[tokio::test]
async fn a_failed_upload_is_reported_by_sequence_number_only() {
    let world = World::new();
    world.pdfs.fail_key("invoices/INV7.pdf");
    let response = world.run(batch()).await;
    assert_eq!(failures(&response), ["700"]);
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"batchItemFailures": [{"itemIdentifier": "700"}]})
    );
    // The others went through, and INV7 is not recorded without its object.
    let recorded: Vec<String> = world
        .processed
        .all()
        .into_iter()
        .map(|r| r.invoice_id)
        .collect();
    assert_eq!(recorded, ["INV1", "INV2"]);
}

#[tokio::test]
async fn a_failing_processed_table_fails_every_renderable_record() {
    let world = World::new();
    world.processed.fail.set(true);
    let response = world.run(batch()).await;
    assert_eq!(failures(&response), ["100", "200", "700"]);
}

#[tokio::test]
async fn events_without_records_do_nothing() {
    let world = World::new();
    for event in [
        json!({}),
        json!({"Records": "nope"}),
        json!(null),
        json!({"Records": []}),
    ] {
        let response = world.run(event).await;
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"batchItemFailures": []})
        );
    }
    assert!(world.pdfs.keys().is_empty());
}

#[tokio::test]
async fn stored_pdf_is_the_rendering_of_the_image() {
    let world = World::new();
    world.run(batch()).await;
    let stored = world.pdfs.get("invoices/INV2.pdf").unwrap();
    let image = &batch()["Records"][1]["dynamodb"]["NewImage"];
    let item: serde_dynamo::Item = serde_json::from_value(image.clone()).unwrap();
    let invoice: invoice_core::Invoice = serde_dynamo::from_item(item).unwrap();
    assert_eq!(
        stored,
        invoice_core::pdf::render(&invoice, &Seller::default()).unwrap()
    );
}

#[tokio::test]
async fn each_bad_record_is_skipped_for_its_own_reason() {
    let world = World::new();
    let deps = Deps {
        pdfs: &world.pdfs,
        processed: &world.processed,
        seller: &world.seller,
    };
    let records = batch()["Records"].as_array().unwrap().clone();
    let mut reasons = Vec::new();
    for raw in &records[2..6] {
        match generate_pdf::process_record(&deps, raw).await {
            generate_pdf::Outcome::Skipped(reason) => reasons.push(reason),
            other => panic!("expected a skip, got {other:?}"),
        }
    }
    assert_eq!(reasons[0], "REMOVE event");
    assert!(
        reasons[1].starts_with("NewImage is not an invoice"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("InvoiceDate") && reasons[2].contains("TotalAmount"),
        "{}",
        reasons[2]
    );
    assert!(
        reasons[3].starts_with("not a DynamoDB stream record"),
        "{}",
        reasons[3]
    );
}

#[tokio::test]
async fn invoice_id_guard_items_are_skipped_not_rendered() {
    let path = format!(
        "{}/tests/fixtures/guard_record.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let world = World::new();
    let record = &event["Records"][0];
    let deps = Deps {
        pdfs: &world.pdfs,
        processed: &world.processed,
        seller: &world.seller,
    };
    assert_eq!(
        generate_pdf::process_record(&deps, record).await,
        generate_pdf::Outcome::Skipped("InvoiceID guard item, not an invoice".into())
    );
    let response = world.run(event).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(world.pdfs.keys().is_empty());
    assert!(world.processed.all().is_empty());
}
