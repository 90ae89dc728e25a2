//! S3 implementations of [`PdfStore`] and [`Presigner`].

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

use crate::error::StoreError;
use crate::store::{PdfStore, Presigner};

/// The PDF bucket.
#[derive(Debug, Clone)]
pub struct S3PdfStore {
    client: Client,
    bucket: String,
}

impl S3PdfStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

impl PdfStore for S3PdfStore {
    async fn put_pdf(&self, key: &str, pdf: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/pdf")
            .body(ByteStream::from(pdf))
            .send()
            .await
            .map_err(|err| StoreError::Backend(DisplayErrorContext(&err).to_string()))?;
        Ok(())
    }
}

impl Presigner for S3PdfStore {
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, StoreError> {
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|err| StoreError::Backend(err.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|err| StoreError::Backend(DisplayErrorContext(&err).to_string()))?;
        Ok(request.uri().to_owned())
    }
}
