//! DynamoDB implementations of [`InvoiceStore`] and [`ProcessedStore`].
//!
//! Items are mapped with `serde_dynamo`, so the attribute names are exactly the serde names of
//! [`Invoice`] and [`ProcessedRecord`].

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::StoreError;
use crate::model::{CUSTOMER_INDEX, Invoice, ProcessedRecord};
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
    async fn insert_new(&self, invoice: &Invoice) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(invoice)?))
            // With a composite key, attribute_not_exists on the hash key means "no item with
            // this exact (InvoiceID, CustomerID)".
            .condition_expression("attribute_not_exists(InvoiceID)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::AlreadyExists)
            }
            Err(err) => Err(backend(err)),
        }
    }

    async fn find_by_id(&self, invoice_id: &str) -> Result<Option<Invoice>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("InvoiceID = :id")
            .expression_attribute_values(":id", AttributeValue::S(invoice_id.to_owned()))
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
