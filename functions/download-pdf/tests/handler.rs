//! Every response path of download-pdf, against in-memory stores.

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use aws_lambda_events::encodings::Body;
use download_pdf::Deps;
use invoice_core::memory::{
    FakePresigner, INJECTED_FAILURE, MemoryInvoiceStore, MemoryProcessedStore,
};
use invoice_core::{Invoice, ProcessedRecord};
use serde_json::{Value, json};

struct World {
    invoices: MemoryInvoiceStore,
    processed: MemoryProcessedStore,
    presigner: FakePresigner,
}

impl World {
    /// INV1 has a PDF, INV2 exists but its PDF is not generated yet.
    fn new() -> Self {
        let invoice = |id: &str| Invoice {
            invoice_id: id.into(),
            customer_id: "CUST1".into(),
            invoice_date: "2024-02-01".into(),
            product_list: vec!["Widget".into()],
            total_amount: 1200,
            currency: None,
            customer_name: None,
            line_items: None,
            tax_amount: None,
        };
        Self {
            invoices: MemoryInvoiceStore::with([invoice("INV1"), invoice("INV2")]),
            processed: MemoryProcessedStore::with([ProcessedRecord {
                invoice_id: "INV1".into(),
                s3_key: "invoices/INV1.pdf".into(),
            }]),
            presigner: FakePresigner::default(),
        }
    }

    async fn call(&self, event: Value) -> ApiGatewayProxyResponse {
        let deps = Deps {
            invoices: &self.invoices,
            processed: &self.processed,
            presigner: &self.presigner,
        };
        download_pdf::handle(&deps, event).await
    }
}

fn event(query: Value, accept: Option<&str>) -> Value {
    let path = format!(
        "{}/tests/fixtures/get_download.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["queryStringParameters"] = query;
    if let Some(accept) = accept {
        event["headers"]["Accept"] = json!(accept);
    }
    event
}

fn text(resp: &ApiGatewayProxyResponse) -> &str {
    match &resp.body {
        Some(Body::Text(text)) => text,
        other => panic!("unexpected body {other:?}"),
    }
}

fn error(resp: &ApiGatewayProxyResponse) -> Value {
    assert_eq!(resp.headers["content-type"], "application/json");
    serde_json::from_str::<Value>(text(resp)).unwrap()["error"].clone()
}

#[tokio::test]
async fn legacy_clients_get_the_url_as_plain_text() {
    let world = World::new();
    let resp = world.call(event(json!({"InvoiceID": "INV1"}), None)).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(resp.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.headers["cache-control"], "no-store");
    assert_eq!(
        text(&resp),
        "https://bucket.example/invoices/INV1.pdf?X-Amz-Expires=900"
    );
}

#[tokio::test]
async fn camel_case_parameter_and_json_on_request() {
    let world = World::new();
    let resp = world
        .call(event(
            json!({"invoiceId": "INV1"}),
            Some("application/json"),
        ))
        .await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(resp.headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(text(&resp)).unwrap();
    assert_eq!(
        body,
        json!({
            "InvoiceID": "INV1",
            "url": "https://bucket.example/invoices/INV1.pdf?X-Amz-Expires=900",
            "expiresInSeconds": 900
        })
    );
}

#[tokio::test]
async fn pdf_not_generated_yet_is_409_with_retry_after() {
    let world = World::new();
    let resp = world.call(event(json!({"InvoiceID": "INV2"}), None)).await;
    assert_eq!(resp.status_code, 409);
    assert_eq!(resp.headers["retry-after"], "5");
    assert_eq!(error(&resp)["code"], "not_ready");
}

#[tokio::test]
async fn unknown_invoice_is_404() {
    let world = World::new();
    let resp = world
        .call(event(json!({"InvoiceID": "INV404"}), None))
        .await;
    assert_eq!(resp.status_code, 404);
    assert_eq!(error(&resp)["code"], "not_found");
    assert!(resp.headers.get("retry-after").is_none());
}

#[tokio::test]
async fn missing_or_invalid_id_is_400() {
    let world = World::new();
    for query in [
        json!(null),
        json!({"id": "INV1"}),
        json!({"InvoiceID": ""}),
        json!({"InvoiceID": " INV1"}),
    ] {
        let resp = world.call(event(query.clone(), None)).await;
        assert_eq!(resp.status_code, 400, "{query}");
        assert_eq!(error(&resp)["fields"][0]["field"], "InvoiceID");
    }
    let resp = world.call(json!("not an event")).await;
    assert_eq!(resp.status_code, 400);
}

#[tokio::test]
async fn legacy_processed_rows_with_lowercase_attribute_download() {
    // Rows the original generate-pdf wrote used `s3key`; they deserialize into the same record.
    let legacy: ProcessedRecord =
        serde_json::from_value(json!({"InvoiceID": "INV2", "s3key": "invoices/INV2.pdf"})).unwrap();
    let world = World::new();
    let world = World {
        processed: MemoryProcessedStore::with([legacy]),
        ..world
    };
    let resp = world.call(event(json!({"InvoiceID": "INV2"}), None)).await;
    assert_eq!(resp.status_code, 200);
    assert!(text(&resp).contains("invoices/INV2.pdf"));
}

#[tokio::test]
async fn each_store_failure_is_500_without_internals() {
    for failing in ["processed", "invoices", "presigner"] {
        let world = World::new();
        match failing {
            "processed" => world.processed.fail.set(true),
            "invoices" => world.invoices.fail.set(true),
            _ => world.presigner.fail.set(true),
        }
        // INV2 reaches the invoices lookup; INV1 reaches the presigner.
        let id = if failing == "invoices" {
            "INV2"
        } else {
            "INV1"
        };
        let resp = world.call(event(json!({"InvoiceID": id}), None)).await;
        assert_eq!(resp.status_code, 500, "{failing}");
        assert_eq!(error(&resp)["code"], "internal_error");
        let all = serde_json::to_string(&resp).unwrap();
        assert!(
            !all.contains(INJECTED_FAILURE) && !all.contains("arn:aws"),
            "{all}"
        );
    }
}
