//! DynamoDB implementations of [`InvoiceStore`] and [`ProcessedStore`].
//!
//! Items are mapped with `serde_dynamo`, so the attribute names are exactly the serde names of
//! [`Invoice`] and [`ProcessedRecord`].

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::AsyncSleep as _;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use crate::error::StoreError;
use crate::model::{CUSTOMER_INDEX, GUARD_OWNER, INVOICE_ID_GUARD, Invoice, ProcessedRecord};

/// Runs of an insert's transaction when a concurrent one on the same guard cancels it.
const TRANSACTION_ATTEMPTS: u64 = 4;
use crate::store::{InvoicePage, InvoiceStore, ProcessedStore};

fn backend<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    StoreError::Backend(DisplayErrorContext(&err).to_string())
}

fn to_item<T: serde::Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(value).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn from_item<T: serde::de::DeserializeOwned>(
    item: HashMap<String, AttributeValue>,
) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// The invoices table.
#[derive(Debug, Clone)]
pub struct DynamoInvoiceStore {
    client: Client,
    table: String,
}

impl DynamoInvoiceStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl InvoiceStore for DynamoInvoiceStore {
    /// One transaction writes the invoice and its InvoiceID guard: the guard's condition
    /// fails when another customer holds the InvoiceID (even one whose first write is racing
    /// this one), the invoice's when this exact key exists. Either way nothing is written and
    /// the caller looks up what is there.
    async fn insert_new(&self, invoice: &Invoice) -> Result<(), StoreError> {
        let invoice_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(invoice)?))
            // With a composite key, attribute_not_exists on the hash key means "no item with
            // this exact (InvoiceID, CustomerID)".
            .condition_expression("attribute_not_exists(InvoiceID)")
            .build()
            .map_err(|err| StoreError::Backend(err.to_string()))?;
        let guard_put = Put::builder()
            .table_name(&self.table)
            .item("InvoiceID", AttributeValue::S(invoice.invoice_id.clone()))
            .item("CustomerID", AttributeValue::S(INVOICE_ID_GUARD.to_owned()))
            .item(GUARD_OWNER, AttributeValue::S(invoice.customer_id.clone()))
            // The owner may write again (its invoice deleted by hand, say); nobody else.
            .condition_expression("attribute_not_exists(InvoiceID) OR #owner = :owner")
            .expression_attribute_names("#owner", GUARD_OWNER)
            .expression_attribute_values(":owner", AttributeValue::S(invoice.customer_id.clone()))
            .build()
            .map_err(|err| StoreError::Backend(err.to_string()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .transact_items(
                    TransactWriteItem::builder()
                        .put(invoice_put.clone())
                        .build(),
                )
                .transact_items(TransactWriteItem::builder().put(guard_put.clone()).build())
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            let reasons: Vec<String> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
                    .cancellation_reasons()
                    .iter()
                    .filter_map(|r| r.code().map(str::to_owned))
                    .collect(),
                _ => return Err(backend(err)),
            };
            if reasons.iter().any(|c| c == "ConditionalCheckFailed") {
                return Err(StoreError::AlreadyExists);
            }
            // A concurrent transaction on the same guard: DynamoDB cancels one of them
            // without evaluating conditions. Running it again evaluates them against the
            // winner's committed items.
            if attempt < TRANSACTION_ATTEMPTS && reasons.iter().any(|c| c == "TransactionConflict")
            {
                // The client's own sleep (no runtime dependency here); without one, retry at once.
                if let Some(sleep) = self.client.config().sleep_impl() {
                    sleep
                        .sleep(std::time::Duration::from_millis(20 * attempt))
                        .await;
                }
                continue;
            }
            return Err(backend(err));
        }
    }

    async fn find_by_id(&self, invoice_id: &str) -> Result<Option<Invoice>, StoreError> {
        // The guard shares the InvoiceID and sorts first (its CustomerID starts with \u{1}):
        // ask for the items after it.
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("InvoiceID = :id AND CustomerID > :guard")
            .expression_attribute_values(":id", AttributeValue::S(invoice_id.to_owned()))
            .expression_attribute_values(":guard", AttributeValue::S(INVOICE_ID_GUARD.to_owned()))
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(backend)?;
        output
            .items
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(from_item)
            .transpose()
    }

    async fn list_by_customer(
        &self,
        customer_id: &str,
        limit: u32,
        start_after: Option<&str>,
    ) -> Result<InvoicePage, StoreError> {
        let start_key = start_after.map(|invoice_id| {
            HashMap::from([
                (
                    "InvoiceID".to_owned(),
                    AttributeValue::S(invoice_id.to_owned()),
                ),
                (
                    "CustomerID".to_owned(),
                    AttributeValue::S(customer_id.to_owned()),
                ),
            ])
        });
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(CUSTOMER_INDEX)
            .key_condition_expression("CustomerID = :c")
            .expression_attribute_values(":c", AttributeValue::S(customer_id.to_owned()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(backend)?;
        let mut invoices = Vec::new();
        for item in output.items.unwrap_or_default() {
            match from_item::<Invoice>(item) {
                Ok(invoice) => invoices.push(invoice),
                // One bad row (written by other code) must not hide all of a customer's
                // invoices; it is logged for someone to fix.
                Err(err) => tracing::warn!(error = %err, "skipping unreadable invoice item"),
            }
        }
        let last_invoice_id =
            output
                .last_evaluated_key
                .and_then(|key| match key.get("InvoiceID") {
                    Some(AttributeValue::S(id)) => Some(id.clone()),
                    _ => None,
                });
        Ok(InvoicePage {
            invoices,
            last_invoice_id,
        })
    }
}

/// The processed table.
#[derive(Debug, Clone)]
pub struct DynamoProcessedStore {
    client: Client,
    table: String,
}

impl DynamoProcessedStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl ProcessedStore for DynamoProcessedStore {
    async fn record(&self, record: &ProcessedRecord) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(record)?))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get(&self, invoice_id: &str) -> Result<Option<ProcessedRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("InvoiceID", AttributeValue::S(invoice_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        output.item.map(from_item).transpose()
    }
}
