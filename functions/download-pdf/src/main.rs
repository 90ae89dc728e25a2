//! Lambda entry point (`bootstrap`) of download-pdf.
//!
//! Reads `INVOICES_TABLE`, `PROCESSED_TABLE` and `PDF_BUCKET` (required) and `LOG_LEVEL`
//! (optional); AWS endpoints and credentials come from the standard SDK environment, including
//! `AWS_ENDPOINT_URL`.

use std::convert::Infallible;

use download_pdf::Deps;
use invoice_core::dynamo::{DynamoInvoiceStore, DynamoProcessedStore};
use invoice_core::s3::S3Bucket;
use invoice_core::{aws, logging};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let invoices_table = aws::required_env("INVOICES_TABLE")?;
    let processed_table = aws::required_env("PROCESSED_TABLE")?;
    let bucket = aws::required_env("PDF_BUCKET")?;
    let config = aws::sdk_config().await;
    let dynamodb = aws::dynamodb_client(&config);
    let invoices = DynamoInvoiceStore::new(dynamodb.clone(), invoices_table);
    let processed = DynamoProcessedStore::new(dynamodb, processed_table);
    let presigner = S3Bucket::new(&config, bucket);
    let deps = Deps {
        invoices: &invoices,
        processed: &processed,
        presigner: &presigner,
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Infallible>(download_pdf::handle(deps, event.payload).await)
        },
    ))
    .await
}
