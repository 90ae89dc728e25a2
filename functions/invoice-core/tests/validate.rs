//! Validation of request bodies: every client mistake is a 400 naming the field.

use invoice_core::FieldError;
use invoice_core::validate::{MAX_ID_CHARS, invoice_from_value, parse_invoice};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn fields(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}

fn base() -> Value {
    json!({
        "InvoiceID": "INV1",
        "CustomerID": "CUST1",
        "InvoiceDate": "2024-01-15",
        "ProductList": ["Laptop"],
        "TotalAmount": 1000
    })
}

#[test]
fn legacy_and_rich_invoices_are_accepted() {
    let legacy = parse_invoice(&fixture("legacy_invoice.json")).unwrap();
    assert_eq!(legacy.invoice_id, "INV42");
    assert_eq!(legacy.total_amount, 129_900);
    assert_eq!(legacy.currency, None);

    let rich = parse_invoice(&fixture("unicode_invoice.json")).unwrap();
    assert_eq!(rich.line_items.as_ref().map(Vec::len), Some(4));
    assert_eq!(rich.line_items_subtotal(), Some(45_747));
    assert_eq!(rich.tax_amount, Some(9_149));
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let err = parse_invoice(&fixture("invoice_invalid_fields.json")).unwrap_err();
    assert_eq!(err.status, 400);
    assert_eq!(err.code, "validation_failed");
    let mut got = fields(&err.fields);
    got.sort();
    assert_eq!(
        got,
        [
            "Currency",
            "CustomerID",
            "InvoiceDate",
            "InvoiceID",
            "ProductList[1]",
            "TotalAmount"
        ]
    );
}

#[test]
fn line_item_errors_keep_their_index() {
    let err = parse_invoice(&fixture("invoice_bad_line_items.json")).unwrap_err();
    let got = fields(&err.fields);
    assert_eq!(
        got,
        [
            "LineItems[1].Description",
            "LineItems[1].Quantity",
            "LineItems[2]",
            "LineItems[3].Quantity",
            "LineItems[3].UnitPrice",
            "LineItems[3].Description",
        ],
        "{:?}",
        err.fields
    );
}

#[test]
fn malformed_json_and_non_objects() {
    for body in [
        &b"{"[..],
        b"not json",
        b"{\"InvoiceID\": \"x\",}",
        b"\xff\xfe",
    ] {
        let err = parse_invoice(body).unwrap_err();
        assert_eq!((err.status, err.code), (400, "malformed_json"));
        assert_eq!(fields(&err.fields), ["body"]);
    }
    for body in ["[]", "42", "\"text\"", "null"] {
        let err = parse_invoice(body.as_bytes()).unwrap_err();
        assert_eq!(fields(&err.fields), ["body"], "{body}");
    }
}

#[test]
fn missing_required_fields() {
    let errors = invoice_from_value(&json!({})).unwrap_err();
    assert_eq!(
        fields(&errors),
        [
            "InvoiceID",
            "CustomerID",
            "InvoiceDate",
            "ProductList",
            "TotalAmount"
        ]
    );
    assert!(errors.iter().all(|e| e.message == "is required"));
}

#[test]
fn amounts_must_be_non_negative_integers() {
    for (value, message) in [
        (json!(-1), "must not be negative"),
        (json!(12.5), "must be an integer (minor units)"),
        (json!(12.0), "must be an integer (minor units)"),
        (json!("100"), "must be an integer (minor units)"),
        (json!(u64::MAX), "is too large"),
    ] {
        let mut body = base();
        body["TotalAmount"] = value.clone();
        let errors = invoice_from_value(&body).unwrap_err();
        assert_eq!(errors, [FieldError::new("TotalAmount", message)], "{value}");
    }
    let mut body = base();
    body["TotalAmount"] = json!(0);
    assert!(invoice_from_value(&body).is_ok());
}

#[test]
fn totals_must_match_line_items_and_tax() {
    let mut body = base();
    body["LineItems"] = json!([
        {"Description": "A", "Quantity": 2, "UnitPrice": 300},
        {"Description": "B", "Quantity": 1, "UnitPrice": 200}
    ]);
    body["TaxAmount"] = json!(200);
    assert!(invoice_from_value(&body).is_ok(), "600 + 200 + 200 = 1000");

    body["TaxAmount"] = json!(100);
    let errors = invoice_from_value(&body).unwrap_err();
    assert_eq!(fields(&errors), ["TotalAmount"]);
    assert!(errors[0].message.contains("900"), "{}", errors[0].message);

    body["LineItems"] =
        json!([{"Description": "A", "Quantity": 1_000_000, "UnitPrice": i64::MAX / 10}]);
    assert_eq!(
        fields(&invoice_from_value(&body).unwrap_err()),
        ["LineItems"]
    );

    let mut body = base();
    body["TaxAmount"] = json!(1001);
    assert_eq!(
        fields(&invoice_from_value(&body).unwrap_err()),
        ["TaxAmount"]
    );

    let mut body = base();
    body["LineItems"] = json!([]);
    assert_eq!(
        fields(&invoice_from_value(&body).unwrap_err()),
        ["LineItems"]
    );
}

#[test]
fn ids_text_and_currency_rules() {
    let cases = [
        ("InvoiceID", json!("   "), "must not be empty"),
        (
            "InvoiceID",
            json!(" INV1"),
            "must not start or end with whitespace",
        ),
        (
            "CustomerID",
            json!("x".repeat(MAX_ID_CHARS + 1)),
            "must be at most 128 characters",
        ),
        (
            "CustomerID",
            json!("a\nb"),
            "must not contain control characters",
        ),
        (
            "Currency",
            json!("eur"),
            "must be an active ISO 4217 code in upper case, e.g. EUR",
        ),
        ("CustomerName", json!(""), "must not be empty"),
        (
            "InvoiceDate",
            json!("15/01/2024"),
            "must be a date YYYY-MM-DD or an RFC 3339 date-time",
        ),
    ];
    for (field, value, message) in cases {
        let mut body = base();
        body[field] = value;
        let errors = invoice_from_value(&body).unwrap_err();
        assert_eq!(errors, [FieldError::new(field, message)], "{field}");
    }
    let mut body = base();
    body["ProductList"] = json!(["x".repeat(501)]);
    assert_eq!(
        fields(&invoice_from_value(&body).unwrap_err()),
        ["ProductList[0]"]
    );
}

#[test]
fn unknown_fields_are_ignored_and_not_kept() {
    let mut body = base();
    body["Extra"] = json!({"nested": true});
    let invoice = invoice_from_value(&body).unwrap();
    let stored = serde_json::to_value(&invoice).unwrap();
    assert!(stored.get("Extra").is_none());
    assert_eq!(stored, base());
}
