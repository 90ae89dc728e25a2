//! Every response path of insert-invoice, against the in-memory store.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use invoice_core::memory::{INJECTED_FAILURE, MemoryInvoiceStore};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The recorded API Gateway event with another body.
fn event_with_body(body: Option<&str>) -> Value {
    let mut event: Value = serde_json::from_str(&fixture("post_valid.json")).unwrap();
    event["body"] = body.map_or(Value::Null, |b| Value::String(b.to_owned()));
    event
}

struct Answer {
    status: i64,
    body: Value,
}

async fn call(store: &MemoryInvoiceStore, event: Value) -> Answer {
    let resp = insert_invoice::handle(store, event).await;
    assert_eq!(resp.headers["content-type"], "application/json");
    let body = match resp.body {
        Some(aws_lambda_events::encodings::Body::Text(text)) => {
            serde_json::from_str(&text).unwrap()
        }
        other => panic!("unexpected body {other:?}"),
    };
    Answer {
        status: resp.status_code,
        body,
    }
}

fn error_fields(answer: &Answer) -> Vec<String> {
    answer.body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn recorded_event_is_stored() {
    let store = MemoryInvoiceStore::new();
    let event: Value = serde_json::from_str(&fixture("post_valid.json")).unwrap();
    let answer = call(&store, event).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        json!({"InvoiceID": "INV500", "status": "created"})
    );
    let stored = store.all();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].customer_id, "CUST5");
    assert_eq!(stored[0].product_list, ["Laptop", "Mouse"]);
    assert_eq!(stored[0].total_amount, 129_900);
}

#[tokio::test]
async fn reposting_identical_content_is_idempotent() {
    let store = MemoryInvoiceStore::new();
    let body = fixture("invoice_rich.json");
    assert_eq!(call(&store, event_with_body(Some(&body))).await.status, 200);
    let again = call(&store, event_with_body(Some(&body))).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["status"], "unchanged");
    assert_eq!(store.writes.load(Ordering::SeqCst), 1);
    assert_eq!(store.all()[0].line_items.as_ref().map(Vec::len), Some(2));
}

#[tokio::test]
async fn reposting_different_content_conflicts() {
    let store = MemoryInvoiceStore::new();
    let body = fixture("invoice_rich.json");
    assert_eq!(call(&store, event_with_body(Some(&body))).await.status, 200);

    let mut changed: Value = serde_json::from_str(&body).unwrap();
    changed["CustomerName"] = json!("Someone else");
    let answer = call(&store, event_with_body(Some(&changed.to_string()))).await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.body["error"]["code"], "conflict");

    // Same InvoiceID for another customer: a different table key, still the same invoice ID.
    changed["CustomerID"] = json!("CUST6");
    let answer = call(&store, event_with_body(Some(&changed.to_string()))).await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.body["error"]["code"], "conflict");
    // Says whose it is not: only that it is someone else's.
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(
        message.ends_with("belongs to another customer"),
        "{message}"
    );
    assert!(!message.contains("CUST5"), "{message}");
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn base64_bodies_are_decoded() {
    let store = MemoryInvoiceStore::new();
    let body = fixture("invoice_rich.json");
    let mut event = event_with_body(Some(
        &base64::engine::general_purpose::STANDARD.encode(body),
    ));
    event["isBase64Encoded"] = json!(true);
    assert_eq!(call(&store, event).await.status, 200);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let store = MemoryInvoiceStore::new();
    let answer = call(&store, event_with_body(Some("{\"InvoiceID\": "))).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"]["code"], "malformed_json");
    assert_eq!(error_fields(&answer), ["body"]);
    assert!(store.is_empty());
}

#[tokio::test]
async fn invalid_fields_are_400_naming_each_field() {
    let store = MemoryInvoiceStore::new();
    let answer = call(
        &store,
        event_with_body(Some(&fixture("invoice_invalid_fields.json"))),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"]["code"], "validation_failed");
    let fields = error_fields(&answer);
    for field in [
        "InvoiceID",
        "CustomerID",
        "InvoiceDate",
        "ProductList[1]",
        "TotalAmount",
        "Currency",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} not in {fields:?}"
        );
    }

    let answer = call(
        &store,
        event_with_body(Some(&fixture("invoice_total_mismatch.json"))),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(error_fields(&answer), ["TotalAmount"]);
    assert!(store.is_empty());
}

#[tokio::test]
async fn missing_or_blank_body_is_400() {
    let store = MemoryInvoiceStore::new();
    for body in [None, Some(""), Some("  \n")] {
        let answer = call(&store, event_with_body(body)).await;
        assert_eq!(answer.status, 400, "{body:?}");
        assert_eq!(error_fields(&answer), ["body"]);
    }
}

#[tokio::test]
async fn oversized_body_is_413() {
    let store = MemoryInvoiceStore::new();
    let mut invoice: Value = serde_json::from_str(&fixture("invoice_rich.json")).unwrap();
    invoice["Padding"] = json!("x".repeat(70 * 1024));
    let answer = call(&store, event_with_body(Some(&invoice.to_string()))).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn events_that_are_not_proxy_requests_are_400() {
    let store = MemoryInvoiceStore::new();
    for event in [
        json!(null),
        json!([1, 2]),
        json!({"Records": []}),
        json!({"httpMethod": 5}),
    ] {
        let answer = call(&store, event.clone()).await;
        assert_eq!(answer.status, 400, "{event}");
        assert_eq!(answer.body["error"]["code"], "bad_request");
    }
}

#[tokio::test]
async fn store_failure_is_500_without_internals() {
    let store = MemoryInvoiceStore::new();
    store.fail.set(true);
    let resp =
        insert_invoice::handle(&store, event_with_body(Some(&fixture("invoice_rich.json")))).await;
    assert_eq!(resp.status_code, 500);
    let text = serde_json::to_string(&resp).unwrap();
    assert!(!text.contains("arn:aws"), "{text}");
    assert!(!text.contains(INJECTED_FAILURE));
    assert!(text.contains("internal_error"));
}
