//! Lambda entry point (`bootstrap`) of generate-pdf.
//!
//! Reads `PROCESSED_TABLE` and `PDF_BUCKET` (required), `SELLER_NAME` and `SELLER_ADDRESS`
//! (optional, printed on the PDF; address lines separated by `|`) and `LOG_LEVEL` (optional).
//! AWS endpoints and credentials come from the standard SDK environment, including
//! `AWS_ENDPOINT_URL`.

use std::convert::Infallible;

use generate_pdf::Deps;
use invoice_core::dynamo::DynamoProcessedStore;
use invoice_core::pdf::Seller;
use invoice_core::s3::S3Bucket;
use invoice_core::{aws, logging};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let processed_table = aws::required_env("PROCESSED_TABLE")?;
    let bucket = aws::required_env("PDF_BUCKET")?;
    let config = aws::sdk_config().await;
    let pdfs = S3Bucket::new(&config, bucket);
    let processed = DynamoProcessedStore::new(aws::dynamodb_client(&config), processed_table);
    let seller = Seller::from_env();
    let deps = Deps {
        pdfs: &pdfs,
        processed: &processed,
        seller: &seller,
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Infallible>(generate_pdf::handle(deps, event.payload).await)
        },
    ))
    .await
}
