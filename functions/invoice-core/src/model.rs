//! The invoice as clients send it and as it is stored in DynamoDB.
//!
//! Attribute names are the ones the original Go handlers used (`InvoiceID`, `CustomerID`, ...),
//! so items written by either implementation read back the same. Everything added since
//! (`Currency`, `CustomerName`, `LineItems`, `TaxAmount`) is optional and omitted when absent,
//! which keeps old items and old clients valid.

use serde::{Deserialize, Serialize};

/// Name of the invoices table's global secondary index keyed by `CustomerID`.
pub const CUSTOMER_INDEX: &str = "CustomerID-Index";

/// `CustomerID` of the guard item that reserves an `InvoiceID` for the customer who stored it
/// first (the table's key is `(InvoiceID, CustomerID)`, so nothing else stops a second
/// customer). It starts with a control character, which [`crate::validate::check_id`] refuses
/// in any client's `CustomerID`: no request can create, list or query it as a customer.
pub const INVOICE_ID_GUARD: &str = "\u{1}invoice-id-guard";
/// Attribute of the guard item naming the customer the `InvoiceID` belongs to.
pub const GUARD_OWNER: &str = "OwnerCustomerID";

/// Whether an item with this `CustomerID` is an InvoiceID guard rather than an invoice.
pub fn is_guard(customer_id: &str) -> bool {
    customer_id == INVOICE_ID_GUARD
}

/// One invoice. Money is in integer minor units of [`Invoice::currency`] (cents for EUR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    #[serde(rename = "InvoiceID")]
    pub invoice_id: String,
    #[serde(rename = "CustomerID")]
    pub customer_id: String,
    /// `YYYY-MM-DD` or an RFC 3339 date-time, kept as sent.
    #[serde(rename = "InvoiceDate")]
    pub invoice_date: String,
    #[serde(rename = "ProductList", default)]
    pub product_list: Vec<String>,
    #[serde(rename = "TotalAmount")]
    pub total_amount: i64,
    /// ISO 4217 code. Absent on invoices from old clients.
    #[serde(rename = "Currency", default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(
        rename = "CustomerName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_name: Option<String>,
    #[serde(rename = "LineItems", default, skip_serializing_if = "Option::is_none")]
    pub line_items: Option<Vec<LineItem>>,
    #[serde(rename = "TaxAmount", default, skip_serializing_if = "Option::is_none")]
    pub tax_amount: Option<i64>,
}

/// A priced line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Quantity")]
    pub quantity: u32,
    /// Price of one unit in minor units.
    #[serde(rename = "UnitPrice")]
    pub unit_price: i64,
}

impl LineItem {
    /// `quantity * unit_price`, `None` on overflow (validation rejects such items).
    pub fn amount(&self) -> Option<i64> {
        self.unit_price.checked_mul(i64::from(self.quantity))
    }
}

impl Invoice {
    /// Sum of the line items before tax, `None` without line items or on overflow.
    pub fn line_items_subtotal(&self) -> Option<i64> {
        self.line_items
            .as_ref()?
            .iter()
            .try_fold(0i64, |acc, item| acc.checked_add(item.amount()?))
    }

    /// The date part (`YYYY-MM-DD`) of [`Invoice::invoice_date`].
    pub fn date_only(&self) -> &str {
        self.invoice_date
            .get(..10)
            .unwrap_or(self.invoice_date.as_str())
    }

    /// Key of the invoice's PDF in the bucket. Deterministic so that a re-delivered stream
    /// record overwrites the same object instead of leaving an orphan.
    pub fn pdf_key(&self) -> String {
        pdf_key(&self.invoice_id)
    }
}

/// `invoices/<InvoiceID>.pdf`, with every byte outside `[A-Za-z0-9._-]` percent-encoded so that
/// an ID containing `/` or non-ASCII text cannot create surprising prefixes.
pub fn pdf_key(invoice_id: &str) -> String {
    let mut key = String::with_capacity(invoice_id.len() + 13);
    key.push_str("invoices/");
    for byte in invoice_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            key.push(char::from(byte));
        } else {
            key.push_str(&format!("%{byte:02X}"));
        }
    }
    key.push_str(".pdf");
    key
}

/// A row of the processed table: which object holds an invoice's PDF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessedRecord {
    #[serde(rename = "InvoiceID")]
    pub invoice_id: String,
    /// The original generate-pdf wrote `s3key`; accepting it on read makes PDFs it generated
    /// downloadable. New rows are always written as `S3Key`.
    #[serde(rename = "S3Key", alias = "s3key")]
    pub s3_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_key_escapes_separators_and_unicode() {
        assert_eq!(pdf_key("INV1"), "invoices/INV1.pdf");
        assert_eq!(pdf_key("a/b c"), "invoices/a%2Fb%20c.pdf");
        assert_eq!(pdf_key("Ż"), "invoices/%C5%BB.pdf");
    }

    #[test]
    fn processed_record_reads_legacy_attribute_name() {
        let legacy: ProcessedRecord =
            serde_json::from_str(r#"{"InvoiceID":"INV1","s3key":"invoices/INV1.pdf"}"#).unwrap();
        assert_eq!(legacy.s3_key, "invoices/INV1.pdf");
        let written = serde_json::to_value(&legacy).unwrap();
        assert_eq!(written["S3Key"], "invoices/INV1.pdf");
        assert!(written.get("s3key").is_none());
    }

    #[test]
    fn subtotal_overflow_is_none() {
        let mut invoice = Invoice {
            invoice_id: "I".into(),
            customer_id: "C".into(),
            invoice_date: "2024-01-01".into(),
            product_list: vec![],
            total_amount: 0,
            currency: None,
            customer_name: None,
            line_items: Some(vec![LineItem {
                description: "x".into(),
                quantity: 3,
                unit_price: i64::MAX / 2,
            }]),
            tax_amount: None,
        };
        assert_eq!(invoice.line_items_subtotal(), None);
        invoice.line_items = Some(vec![LineItem {
            description: "x".into(),
            quantity: 3,
            unit_price: 250,
        }]);
        assert_eq!(invoice.line_items_subtotal(), Some(750));
        assert_eq!(invoice.date_only(), "2024-01-01");
    }
}
