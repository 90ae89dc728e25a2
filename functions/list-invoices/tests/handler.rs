//! Every response path of list-invoices, against the in-memory store.

use aws_lambda_events::apigw::ApiGatewayProxyResponse;
use aws_lambda_events::encodings::Body;
use invoice_core::Invoice;
use invoice_core::memory::{INJECTED_FAILURE, MemoryInvoiceStore};
use serde_json::{Value, json};

fn invoice(id: &str, customer: &str) -> Invoice {
    Invoice {
        invoice_id: id.into(),
        customer_id: customer.into(),
        invoice_date: "2024-02-01".into(),
        product_list: vec!["Widget".into()],
        total_amount: 1200,
        currency: None,
        customer_name: None,
        line_items: None,
        tax_amount: None,
    }
}

fn store() -> MemoryInvoiceStore {
    MemoryInvoiceStore::with(
        ["INV1", "INV2", "INV3", "INV4", "INV5"]
            .into_iter()
            .map(|id| invoice(id, "CUST1"))
            .chain([invoice("INV6", "CUST2"), invoice("INV7", "CUST2")]),
    )
}

/// The recorded event with other query parameters.
fn event(query: Value) -> Value {
    let path = format!(
        "{}/tests/fixtures/get_by_customer.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["queryStringParameters"] = query;
    event
        .as_object_mut()
        .unwrap()
        .remove("multiValueQueryStringParameters");
    event
}

fn body(resp: &ApiGatewayProxyResponse) -> Value {
    match &resp.body {
        Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

fn ids(resp: &ApiGatewayProxyResponse) -> Vec<String> {
    body(resp)
        .as_array()
        .expect("body is a JSON array")
        .iter()
        .map(|inv| inv["InvoiceID"].as_str().unwrap().to_owned())
        .collect()
}

fn next_token(resp: &ApiGatewayProxyResponse) -> Option<String> {
    resp.headers
        .get("x-next-page-token")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn recorded_event_lists_the_customers_invoices_as_an_array() {
    let path = format!(
        "{}/tests/fixtures/get_by_customer.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let resp = list_invoices::handle(&store(), recorded).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(resp.headers["content-type"], "application/json");
    assert_eq!(ids(&resp), ["INV1", "INV2", "INV3", "INV4", "INV5"]);
    assert_eq!(next_token(&resp), None);
    // Items keep the stored attribute names old clients read.
    assert_eq!(
        body(&resp)[0],
        json!({"InvoiceID": "INV1", "CustomerID": "CUST1", "InvoiceDate": "2024-02-01",
               "ProductList": ["Widget"], "TotalAmount": 1200})
    );
}

#[tokio::test]
async fn unknown_customer_gets_an_empty_array() {
    let resp = list_invoices::handle(&store(), event(json!({"customerId": "NOBODY"}))).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(body(&resp), json!([]));
}

#[tokio::test]
async fn pages_follow_the_next_page_token() {
    let store = store();
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut query = json!({"customerId": "CUST1", "limit": "2"});
        if let Some(token) = &token {
            query["pageToken"] = json!(token);
        }
        let resp = list_invoices::handle(&store, event(query)).await;
        assert_eq!(resp.status_code, 200);
        let page = ids(&resp);
        assert!(page.len() <= 2);
        seen.extend(page);
        token = next_token(&resp);
        if token.is_none() {
            break;
        }
        assert_eq!(
            resp.headers["access-control-expose-headers"],
            "X-Next-Page-Token"
        );
    }
    assert_eq!(token, None, "listing did not end");
    assert_eq!(seen, ["INV1", "INV2", "INV3", "INV4", "INV5"]);
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let store = store();
    let first =
        list_invoices::handle(&store, event(json!({"customerId": "CUST1", "limit": "1"}))).await;
    let cust1_token = next_token(&first).unwrap();
    let cases = [
        (json!(null), "customerId"),
        (json!({}), "customerId"),
        (json!({"CustomerID": "CUST1"}), "customerId"),
        (json!({"customerId": ""}), "customerId"),
        (json!({"customerId": "CUST1", "limit": "0"}), "limit"),
        (json!({"customerId": "CUST1", "limit": "lots"}), "limit"),
        (
            json!({"customerId": "CUST1", "pageToken": "garbage!"}),
            "pageToken",
        ),
        (
            json!({"customerId": "CUST2", "pageToken": cust1_token}),
            "pageToken",
        ),
    ];
    for (query, field) in cases {
        let resp = list_invoices::handle(&store, event(query.clone())).await;
        assert_eq!(resp.status_code, 400, "{query}");
        let body = body(&resp);
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["fields"][0]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn non_proxy_event_is_400() {
    let resp = list_invoices::handle(&store(), json!({"Records": []})).await;
    assert_eq!(resp.status_code, 400);
    assert_eq!(body(&resp)["error"]["code"], "bad_request");
}

#[tokio::test]
async fn store_failure_is_500_without_internals() {
    let store = store();
    store.fail.set(true);
    let resp = list_invoices::handle(&store, event(json!({"customerId": "CUST1"}))).await;
    assert_eq!(resp.status_code, 500);
    let text = serde_json::to_string(&resp).unwrap();
    assert!(
        !text.contains(INJECTED_FAILURE) && !text.contains("arn:aws"),
        "{text}"
    );
    assert_eq!(body(&resp)["error"]["code"], "internal_error");
}
