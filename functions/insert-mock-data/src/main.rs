//! Lambda entry point (`bootstrap`) of insert-mock-data.
//!
//! Invoked manually (any payload); answers the [`insert_mock_data::Summary`] as JSON, or fails
//! the invocation if some invoices could not be stored. Reads `INVOICES_TABLE` (required) and
//! `LOG_LEVEL` (optional).

use invoice_core::dynamo::DynamoInvoiceStore;
use invoice_core::{aws, logging};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let table = aws::required_env("INVOICES_TABLE")?;
    let config = aws::sdk_config().await;
    let store = DynamoInvoiceStore::new(aws::dynamodb_client(&config), table);
    let store = &store;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            insert_mock_data::seed(store).await.map_err(Error::from)
        },
    ))
    .await
}
