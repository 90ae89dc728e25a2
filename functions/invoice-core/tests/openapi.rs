//! `openapi/invoice-api.json` against the validation it documents: the invoice's required and
//! nullable fields are the ones the validator treats so, and the limits and the currency list
//! are the validator's own. Either side changing alone fails here. (Patterns and formats are
//! exercised over HTTP by schemathesis in `xtask/tests/local_e2e.rs`.)

use std::collections::BTreeSet;

use invoice_core::money;
use invoice_core::validate::{
    MAX_ID_CHARS, MAX_ITEMS, MAX_QUANTITY, MAX_TEXT_CHARS, invoice_from_value,
};
use invoice_core::{ApiError, FieldError};
use serde_json::Value;

fn document() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../openapi/invoice-api.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("the OpenAPI document is JSON")
}

/// A valid invoice using every documented field.
fn full_invoice() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/unicode_invoice.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let invoice: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(invoice_from_value(&invoice).map(|_| ()), Ok(()));
    invoice
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Whether the validator says `field` "is required" for this body.
fn reported_required(body: &Value, field: &str) -> bool {
    match invoice_from_value(body) {
        Ok(_) => false,
        Err(errors) => errors.contains(&FieldError::new(field, "is required")),
    }
}

/// For each property of `schema`, edits a valid invoice through `at` (the object holding the
/// property) and checks that leaving it out is refused as "is required" exactly for the
/// properties the document lists as required, that `null` is refused for those, and that
/// `null` is accepted for the others exactly when the document says nullable.
fn check_required_and_nullable(
    schema: &Value,
    at: impl Fn(&mut Value) -> &mut Value,
    path: impl Fn(&str) -> String,
) {
    let documented = names(&schema["required"]);
    let properties = schema["properties"].as_object().unwrap();
    for (name, property) in properties {
        let mut absent = full_invoice();
        at(&mut absent).as_object_mut().unwrap().remove(name);
        let mut null = full_invoice();
        at(&mut null)[name.as_str()] = Value::Null;
        let required = documented.contains(name);
        assert_eq!(
            reported_required(&absent, &path(name)),
            required,
            "{name}: left out"
        );
        // A null required field is refused, as missing or (`Quantity: null`) as not an
        // integer; a null optional one is accepted exactly when documented as nullable.
        let null_accepted_as_absent = invoice_from_value(&null)
            .err()
            .is_none_or(|errors| !errors.iter().any(|e| e.field == path(name)));
        assert!(
            !(required && null_accepted_as_absent),
            "{name}: null accepted for a required field"
        );
        assert_eq!(
            property["nullable"].as_bool().unwrap_or(false),
            null_accepted_as_absent,
            "{name}: nullable"
        );
    }
}

#[test]
fn required_and_nullable_fields_are_the_validators() {
    let doc = document();
    let mut properties: BTreeSet<String> = schema(&doc, "Invoice")["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // The fixture uses every documented field, so each one is tried.
    for key in full_invoice().as_object().unwrap().keys() {
        properties.remove(key);
    }
    assert!(properties.is_empty(), "not in the fixture: {properties:?}");
    check_required_and_nullable(schema(&doc, "Invoice"), |v| v, str::to_string);
    check_required_and_nullable(
        schema(&doc, "LineItem"),
        |v| &mut v["LineItems"][0],
        |name| format!("LineItems[0].{name}"),
    );
}

#[test]
fn limits_and_currencies_are_the_validators() {
    let doc = document();
    let id = schema(&doc, "Id");
    assert_eq!(id["minLength"], 1);
    assert_eq!(id["maxLength"], MAX_ID_CHARS);
    let invoice = &schema(&doc, "Invoice")["properties"];
    let item = &schema(&doc, "LineItem")["properties"];
    for text in [
        &invoice["ProductList"]["items"],
        &invoice["CustomerName"],
        &item["Description"],
    ] {
        assert_eq!(text["minLength"], 1);
        assert_eq!(text["maxLength"], MAX_TEXT_CHARS, "{text}");
    }
    assert_eq!(invoice["ProductList"]["maxItems"], MAX_ITEMS);
    assert_eq!(invoice["LineItems"]["maxItems"], MAX_ITEMS);
    assert_eq!(invoice["LineItems"]["minItems"], 1);
    assert_eq!(item["Quantity"]["minimum"], 1);
    assert_eq!(item["Quantity"]["maximum"], MAX_QUANTITY);
    for amount in [
        &invoice["TotalAmount"],
        &invoice["TaxAmount"],
        &item["UnitPrice"],
    ] {
        assert_eq!(amount["minimum"], 0);
        assert_eq!(amount["maximum"], i64::MAX);
    }
    let documented: Vec<&str> = invoice["Currency"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(documented, money::codes().collect::<Vec<_>>());
}

#[test]
fn every_error_code_the_handlers_answer_is_documented() {
    let doc = document();
    let documented =
        names(&schema(&doc, "Error")["properties"]["error"]["properties"]["code"]["enum"]);
    for err in [
        ApiError::validation(vec![]),
        ApiError::malformed_json("x"),
        ApiError::bad_request("x"),
        ApiError::not_found("x"),
        ApiError::conflict("x"),
        ApiError::not_ready("x", 1),
        ApiError::payload_too_large(1),
        ApiError::internal(),
    ] {
        assert!(documented.contains(err.code), "{}", err.code);
    }
}
