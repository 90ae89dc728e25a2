//! Lambda entry point (`bootstrap`) of list-invoices.
//!
//! Reads `INVOICES_TABLE` (required) and `LOG_LEVEL` (optional); AWS endpoints and credentials
//! come from the standard SDK environment, including `AWS_ENDPOINT_URL`.

use std::convert::Infallible;

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
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Infallible>(list_invoices::handle(store, event.payload).await)
        },
    ))
    .await
}
