//! No input makes the handler panic or answer anything but a 2xx/4xx: thousands of generated
//! JSON documents, as bodies and as whole events.

use invoice_core::memory::MemoryInvoiceStore;
use serde_json::{Map, Value, json};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: &[&str] = &[
    "InvoiceID",
    "CustomerID",
    "InvoiceDate",
    "ProductList",
    "TotalAmount",
    "Currency",
    "CustomerName",
    "LineItems",
    "TaxAmount",
    "Description",
    "Quantity",
    "UnitPrice",
    "body",
    "httpMethod",
    "requestContext",
    "isBase64Encoded",
    "queryStringParameters",
    "headers",
    "x",
];

fn value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 3 { 7 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!((rng.next() as f64) / 7.0 - 1e18),
        4 => json!(
            [
                "",
                "INV1",
                "2024-02-29",
                "EUR",
                "  ",
                "Ż\u{0}",
                "9999-99-99",
                "POST"
            ][rng.below(8) as usize]
        ),
        5 => json!(rng.below(2_000) as i64 - 1_000),
        6 => json!("x".repeat(rng.below(600) as usize)),
        7 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth + 1)).collect()),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.below(8) {
                map.insert(
                    KEYS[rng.below(KEYS.len() as u64) as usize].to_owned(),
                    value(rng, depth + 1),
                );
            }
            Value::Object(map)
        }
    }
}

fn valid_invoice() -> Value {
    json!({
        "InvoiceID": "INV1", "CustomerID": "CUST1", "InvoiceDate": "2024-01-01",
        "ProductList": ["a"], "TotalAmount": 100,
        "LineItems": [{"Description": "a", "Quantity": 1, "UnitPrice": 100}]
    })
}

#[tokio::test]
async fn generated_bodies_and_events_never_panic_or_500() {
    let store = MemoryInvoiceStore::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..3_000 {
        let event = if round % 3 == 0 {
            // A whole random event.
            value(&mut rng, 0)
        } else {
            // A proxy event whose body is a mutated valid invoice or random JSON.
            let body = if round % 3 == 1 {
                let mut invoice = valid_invoice();
                let key = KEYS[rng.below(9) as usize];
                invoice[key] = value(&mut rng, 1);
                invoice
            } else {
                value(&mut rng, 0)
            };
            json!({"httpMethod": "POST", "requestContext": {"httpMethod": "POST"}, "body": body.to_string()})
        };
        let resp = insert_invoice::handle(&store, event.clone()).await;
        assert!(
            matches!(resp.status_code, 200 | 400 | 409 | 413),
            "status {} for {event}",
            resp.status_code
        );
    }
}
