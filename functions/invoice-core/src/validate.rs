//! Turns untrusted JSON into a valid [`Invoice`], or into a list of field errors.
//!
//! The body is first parsed as a generic JSON value so that a wrong type is reported against
//! the field that has it (`TotalAmount: must be an integer`) rather than as a serde position.
//! Unknown fields are ignored, as the original handler did: old clients that send extra
//! attributes keep working, and those attributes are not stored.

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};
use crate::model::{Invoice, LineItem};
use crate::money;

/// Longest accepted `InvoiceID` / `CustomerID`, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest accepted free text (product, description, customer name), in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// Most entries accepted in `ProductList` or `LineItems`.
pub const MAX_ITEMS: usize = 1000;
/// Largest accepted quantity of one line item.
pub const MAX_QUANTITY: u64 = 1_000_000;

/// Stands in for an element that failed type checks; never stored (errors are returned).
const PLACEHOLDER: &str = "-";

/// Parses and validates a request body.
pub fn parse_invoice(body: &[u8]) -> Result<Invoice, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|err| ApiError::malformed_json(err.to_string()))?;
    invoice_from_value(&value).map_err(ApiError::validation)
}

/// Builds an invoice from a JSON value, reporting every offending field at once.
pub fn invoice_from_value(value: &Value) -> Result<Invoice, Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    let invoice_id = required_string(obj, "InvoiceID", &mut errors);
    let customer_id = required_string(obj, "CustomerID", &mut errors);
    let invoice_date = required_string(obj, "InvoiceDate", &mut errors);
    let product_list = string_list(obj, "ProductList", &mut errors);
    let total_amount = required_amount(obj, "TotalAmount", &mut errors);
    let currency = optional_string(obj, "Currency", &mut errors);
    let customer_name = optional_string(obj, "CustomerName", &mut errors);
    let tax_amount = optional_amount(obj, "TaxAmount", &mut errors);
    let line_items = line_items(obj, &mut errors);

    let invoice = Invoice {
        invoice_id: invoice_id.unwrap_or_default(),
        customer_id: customer_id.unwrap_or_default(),
        invoice_date: invoice_date.unwrap_or_default(),
        product_list: product_list.unwrap_or_default(),
        total_amount: total_amount.unwrap_or_default(),
        currency,
        customer_name,
        line_items,
        tax_amount,
    };
    // Value rules run even when some fields had the wrong type, so the client sees every
    // problem at once; a field already reported (or one of its elements) is not reported twice.
    let mut value_errors = Vec::new();
    check_fields(&invoice, &mut value_errors);
    for err in value_errors {
        let overlaps = errors.iter().any(|e: &FieldError| {
            e.field.starts_with(&err.field) || err.field.starts_with(&e.field)
        });
        if !overlaps {
            errors.push(err);
        }
    }
    if errors.is_empty() {
        check_totals(&invoice, &mut errors);
    }
    if errors.is_empty() {
        Ok(invoice)
    } else {
        Err(errors)
    }
}

/// Checks the rules that do not depend on JSON types. Also used on invoices read back from
/// DynamoDB (stream images), which may have been written by other code.
pub fn validate(invoice: &Invoice) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    check_fields(invoice, &mut errors);
    if errors.is_empty() {
        check_totals(invoice, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Per-field value rules.
fn check_fields(invoice: &Invoice, errors: &mut Vec<FieldError>) {
    let mut check = |field: &str, result: Result<(), String>| {
        if let Err(message) = result {
            errors.push(FieldError::new(field, message));
        }
    };
    check("InvoiceID", check_id(&invoice.invoice_id));
    check("CustomerID", check_id(&invoice.customer_id));
    check("InvoiceDate", check_date(&invoice.invoice_date));
    check("TotalAmount", check_amount(invoice.total_amount));
    if invoice.product_list.len() > MAX_ITEMS {
        check(
            "ProductList",
            Err(format!("must have at most {MAX_ITEMS} entries")),
        );
    }
    for (i, product) in invoice.product_list.iter().enumerate() {
        check(&format!("ProductList[{i}]"), check_text(product));
    }
    if let Some(currency) = &invoice.currency {
        check("Currency", check_currency(currency));
    }
    if let Some(name) = &invoice.customer_name {
        check("CustomerName", check_text(name));
    }
    if let Some(tax) = invoice.tax_amount {
        check("TaxAmount", check_amount(tax));
    }
    if let Some(items) = &invoice.line_items {
        if items.is_empty() {
            check("LineItems", Err("must not be empty when present".into()));
        }
        if items.len() > MAX_ITEMS {
            check(
                "LineItems",
                Err(format!("must have at most {MAX_ITEMS} entries")),
            );
        }
        for (i, item) in items.iter().enumerate() {
            check(
                &format!("LineItems[{i}].Description"),
                check_text(&item.description),
            );
            if item.quantity == 0 || u64::from(item.quantity) > MAX_QUANTITY {
                check(
                    &format!("LineItems[{i}].Quantity"),
                    Err(format!("must be between 1 and {MAX_QUANTITY}")),
                );
            }
            check(
                &format!("LineItems[{i}].UnitPrice"),
                check_amount(item.unit_price),
            );
        }
    }
}

/// `TotalAmount` must equal the line items plus tax, so the PDF never shows a total that its
/// own lines contradict.
fn check_totals(invoice: &Invoice, errors: &mut Vec<FieldError>) {
    let tax = invoice.tax_amount.unwrap_or(0);
    if invoice.line_items.is_some() {
        let Some(subtotal) = invoice.line_items_subtotal() else {
            errors.push(FieldError::new("LineItems", "amounts overflow"));
            return;
        };
        match subtotal.checked_add(tax) {
            Some(expected) if expected == invoice.total_amount => {}
            Some(expected) => errors.push(FieldError::new(
                "TotalAmount",
                format!(
                    "must equal the sum of LineItems ({subtotal}) plus TaxAmount ({tax}) = {expected}"
                ),
            )),
            None => errors.push(FieldError::new("TaxAmount", "amounts overflow")),
        }
    } else if tax > invoice.total_amount {
        errors.push(FieldError::new("TaxAmount", "must not exceed TotalAmount"));
    }
}

/// Rules for `InvoiceID` and `CustomerID`, also applied to query parameters.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if id.trim() != id {
        return Err("must not start or end with whitespace".into());
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!("must be at most {MAX_ID_CHARS} characters"));
    }
    if id.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("must be at most {MAX_TEXT_CHARS} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn check_amount(amount: i64) -> Result<(), String> {
    if amount < 0 {
        Err("must not be negative".into())
    } else {
        Ok(())
    }
}

fn check_currency(code: &str) -> Result<(), String> {
    money::exponent(code)
        .map(|_| ())
        .ok_or_else(|| "must be an active ISO 4217 code in upper case, e.g. EUR".into())
}

/// Accepts `YYYY-MM-DD`, or an RFC 3339 date-time whose date part is valid
/// (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`).
pub fn check_date(date: &str) -> Result<(), String> {
    const HINT: &str = "must be a date YYYY-MM-DD or an RFC 3339 date-time";
    let bytes = date.as_bytes();
    if bytes.len() < 10 || !date.is_char_boundary(10) {
        return Err(HINT.into());
    }
    let (day_part, rest) = date.split_at(10);
    if !valid_calendar_date(day_part) {
        return Err(HINT.into());
    }
    if rest.is_empty() || valid_time_suffix(rest) {
        Ok(())
    } else {
        Err(HINT.into())
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn valid_calendar_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (digits(&s[..4]), digits(&s[5..7]), digits(&s[8..]))
    else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1000 && (1..=days_in_month).contains(&day)
}

fn valid_time_suffix(rest: &str) -> bool {
    let Some(rest) = rest.strip_prefix(['T', 't']) else {
        return false;
    };
    let b = rest.as_bytes();
    if b.len() < 9 || b[2] != b':' || b[5] != b':' {
        return false;
    }
    let (Some(h), Some(m), Some(s)) =
        (digits(&rest[..2]), digits(&rest[3..5]), digits(&rest[6..8]))
    else {
        return false;
    };
    // 60 allows a leap second, as RFC 3339 does.
    if h > 23 || m > 59 || s > 60 {
        return false;
    }
    let mut tail = &rest[8..];
    if let Some(frac) = tail.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return false;
        }
        tail = &frac[len..];
    }
    match tail {
        "Z" | "z" => true,
        offset if offset.len() == 6 && (offset.starts_with('+') || offset.starts_with('-')) => {
            offset.as_bytes()[3] == b':'
                && digits(&offset[1..3]).is_some_and(|oh| oh <= 23)
                && digits(&offset[4..6]).is_some_and(|om| om <= 59)
        }
        _ => false,
    }
}

fn required_string(
    obj: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.get(name) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(name, "is required"));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(name, "must be a string"));
            None
        }
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(name, "must be a string"));
            None
        }
    }
}

/// An integer amount. Floats are refused even when whole (`12.0`): money is minor units, and a
/// float here almost always means the client sent major units.
fn integer(value: &Value) -> Result<i64, &'static str> {
    match value {
        Value::Number(n) => n.as_i64().ok_or(if n.is_u64() {
            "is too large"
        } else {
            "must be an integer (minor units)"
        }),
        _ => Err("must be an integer (minor units)"),
    }
}

fn required_amount(
    obj: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    match obj.get(name) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(name, "is required"));
            None
        }
        Some(value) => amount(value, name, errors),
    }
}

fn optional_amount(
    obj: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(value) => amount(value, name, errors),
    }
}

fn amount(value: &Value, name: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    match integer(value) {
        Ok(n) if n < 0 => {
            errors.push(FieldError::new(name, "must not be negative"));
            None
        }
        Ok(n) => Some(n),
        Err(message) => {
            errors.push(FieldError::new(name, message));
            None
        }
    }
}

fn string_list(
    obj: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(name, "is required"));
            None
        }
        Some(Value::Array(values)) => {
            let mut out = Vec::with_capacity(values.len());
            for (i, value) in values.iter().enumerate() {
                match value {
                    Value::String(s) => out.push(s.clone()),
                    _ => {
                        errors.push(FieldError::new(format!("{name}[{i}]"), "must be a string"));
                        // Placeholder keeps later indices right in value-rule errors.
                        out.push(PLACEHOLDER.to_owned());
                    }
                }
            }
            Some(out)
        }
        Some(_) => {
            errors.push(FieldError::new(name, "must be an array of strings"));
            None
        }
    }
}

fn line_items(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Vec<LineItem>> {
    let values = match obj.get("LineItems") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(values)) => values,
        Some(_) => {
            errors.push(FieldError::new("LineItems", "must be an array of objects"));
            return None;
        }
    };
    let mut items = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let Some(item) = value.as_object() else {
            errors.push(FieldError::new(
                format!("LineItems[{i}]"),
                "must be an object",
            ));
            items.push(LineItem {
                description: PLACEHOLDER.to_owned(),
                quantity: 1,
                unit_price: 0,
            });
            continue;
        };
        let before = errors.len();
        let description = match item.get("Description") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => {
                errors.push(FieldError::new(
                    format!("LineItems[{i}].Description"),
                    "is required",
                ));
                String::new()
            }
            Some(_) => {
                errors.push(FieldError::new(
                    format!("LineItems[{i}].Description"),
                    "must be a string",
                ));
                String::new()
            }
        };
        let quantity = match item.get("Quantity").map(integer) {
            None => {
                errors.push(FieldError::new(
                    format!("LineItems[{i}].Quantity"),
                    "is required",
                ));
                0
            }
            Some(Ok(q)) if (1..=MAX_QUANTITY as i64).contains(&q) => q as u32,
            Some(Ok(_)) => {
                errors.push(FieldError::new(
                    format!("LineItems[{i}].Quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
                0
            }
            Some(Err(message)) => {
                errors.push(FieldError::new(format!("LineItems[{i}].Quantity"), message));
                0
            }
        };
        let unit_price = match item.get("UnitPrice") {
            None | Some(Value::Null) => {
                errors.push(FieldError::new(
                    format!("LineItems[{i}].UnitPrice"),
                    "is required",
                ));
                0
            }
            Some(value) => amount(value, &format!("LineItems[{i}].UnitPrice"), errors).unwrap_or(0),
        };
        // An item with type errors is still pushed, with values that pass the value rules, so
        // later items keep their index in error messages.
        let failed = errors.len() != before;
        items.push(LineItem {
            description: if failed && description.is_empty() {
                PLACEHOLDER.to_owned()
            } else {
                description
            },
            quantity: if failed && quantity == 0 { 1 } else { quantity },
            unit_price,
        });
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        for ok in [
            "2024-02-29",
            "2023-12-31",
            "2024-01-15T10:20:30Z",
            "2024-01-15T10:20:30.123+02:00",
            "2024-01-15t23:59:60z",
        ] {
            assert_eq!(check_date(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-01-32",
            "24-01-01",
            "2024/01/01",
            "2024-01-01T",
            "2024-01-01T25:00:00Z",
            "2024-01-01T10:00:00",
            "2024-01-01T10:00:00.Z",
            "2024-01-01T10:00:00+2:00",
            "2024-01-01 ",
            "+024-01-01",
            "2024-01-0ż",
            "0999-01-01",
        ] {
            assert!(check_date(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("INV1").is_ok());
        assert!(check_id("Faktura-ŻÓŁĆ").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("   ").is_err());
        assert!(check_id(" INV1").is_err());
        assert!(check_id("IN\u{0}V").is_err());
        assert!(check_id(&"x".repeat(MAX_ID_CHARS + 1)).is_err());
    }
}
