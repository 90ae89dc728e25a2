//! The PDF bucket, spoken to without the S3 SDK client: [`PdfStore`] (generate-pdf's upload)
//! and [`Presigner`] (download-pdf's links).
//!
//! The functions make two kinds of S3 request: one `PutObject` and presigned `GetObject`
//! URLs. `aws-sdk-s3` brought a megabyte of binary for them (every operation's endpoint
//! rules, the flexible-checksum machinery with its CRC tables, the S3 runtime plugins), about
//! a third of download-pdf's zip. Both are SigV4 requests, so this module signs them with
//! `aws-sigv4`, the signer the SDK itself uses, with the settings the S3 client uses (single
//! URI encoding, no path normalisation, `x-amz-content-sha256`; `UNSIGNED-PAYLOAD` for
//! presigned URLs), and sends the upload on the SDK's own HTTP connector (hyper, rustls on
//! ring), which the DynamoDB client links anyway. The tests compare presigned URLs with the
//! SDK's byte for byte, and the moto tests upload and download through it.
//!
//! Addressing follows the SDK's for the buckets this app creates: virtual-hosted
//! (`https://<bucket>.s3.<region>.amazonaws.com/<key>`) on AWS, path-style
//! (`<endpoint>/<bucket>/<key>`) with a custom endpoint (`AWS_ENDPOINT_URL_S3` or
//! `AWS_ENDPOINT_URL`, e.g. the local emulator, usually an IP address) and for bucket names
//! with dots, which a virtual-hosted TLS certificate cannot cover.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_http::label::{self, EncodingStrategy};
use aws_smithy_http::query;
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::http::Request;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;

use crate::error::StoreError;
use crate::store::{PdfStore, Presigner};

/// The longest lifetime SigV4 allows a presigned URL (7 days).
const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Attempts of one upload: S3 asks clients to retry 500 and 503 (`SlowDown`), and a
/// connection can drop; after these the stream record fails and Lambda retries the batch.
const PUT_ATTEMPTS: u32 = 3;

/// The SDK's defaults for this behaviour version: connect within 3.1 s; a read timeout
/// bounds a stalled upload well inside the function's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One bucket: its address, and the credentials and region to sign with.
#[derive(Debug)]
pub struct S3Bucket {
    credentials: Option<SharedCredentialsProvider>,
    region: Option<String>,
    /// A custom endpoint (path-style addressing), without a trailing slash.
    endpoint: Option<String>,
    bucket: String,
    /// Made at the first upload: download-pdf never uploads.
    connector: OnceLock<Connector>,
}

impl S3Bucket {
    /// Credentials, region and endpoint from the shared SDK configuration; an S3-specific
    /// endpoint (`AWS_ENDPOINT_URL_S3`) wins over the global one, as in the SDK.
    pub fn new(config: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .ok()
            .filter(|url| !url.is_empty())
            .or_else(|| config.endpoint_url().map(str::to_owned));
        Self {
            credentials: config.credentials_provider(),
            region: config.region().map(|r| r.as_ref().to_owned()),
            endpoint: endpoint.map(|url| url.trim_end_matches('/').to_owned()),
            bucket: bucket.into(),
            connector: OnceLock::new(),
        }
    }

    fn region(&self) -> Result<&str, StoreError> {
        self.region
            .as_deref()
            .ok_or_else(|| StoreError::Backend("s3: no AWS region configured".into()))
    }

    async fn credentials(&self) -> Result<Credentials, StoreError> {
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| StoreError::Backend("s3: no AWS credentials configured".into()))?;
        provider
            .provide_credentials()
            .await
            .map_err(|err| StoreError::Backend(format!("s3: credentials: {err}")))
    }

    /// The object's URL with the operation's `x-id` (as the SDK sends it; S3 ignores it,
    /// logs and proxies see it).
    fn object_url(&self, key: &str, operation: &str) -> Result<String, StoreError> {
        let region = self.region()?;
        let path = label::fmt_string(key, EncodingStrategy::Greedy);
        let bucket = &self.bucket;
        Ok(match &self.endpoint {
            Some(endpoint) => format!("{endpoint}/{bucket}/{path}?x-id={operation}"),
            None if bucket.contains('.') => {
                format!("https://s3.{region}.amazonaws.com/{bucket}/{path}?x-id={operation}")
            }
            None => format!("https://{bucket}.s3.{region}.amazonaws.com/{path}?x-id={operation}"),
        })
    }

    /// The presigned GET URL of `key` for these credentials at `now`: everything but the
    /// clock and the credential chain, so tests can pin both.
    fn presigned_url_at(
        &self,
        credentials: Credentials,
        key: &str,
        now: SystemTime,
        expires_in: Duration,
    ) -> Result<String, StoreError> {
        if expires_in > MAX_EXPIRY {
            return Err(StoreError::Backend(format!(
                "s3: {} s is longer than the 7 days a presigned URL may last",
                expires_in.as_secs()
            )));
        }
        let mut url = self.object_url(key, "GetObject")?;
        let mut settings = signing_settings();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires_in);
        let identity = Identity::from(credentials);
        let request = SignableRequest::new(
            "GET",
            &url,
            std::iter::empty(),
            SignableBody::UnsignedPayload,
        )
        .map_err(signing_error)?;
        let params = signing_params(&identity, self.region()?, now, settings)?;
        let (instructions, _signature) =
            sign(request, &params).map_err(signing_error)?.into_parts();
        for (name, value) in instructions.params() {
            url.push('&');
            url.push_str(&query::fmt_string(name));
            url.push('=');
            url.push_str(&query::fmt_string(value));
        }
        Ok(url)
    }

    /// A signed `PutObject` of `body` at `now`.
    fn put_request(
        &self,
        credentials: Credentials,
        key: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Request, StoreError> {
        let url = self.object_url(key, "PutObject")?;
        let length = body.len().to_string();
        let headers = [
            ("content-type", "application/pdf"),
            ("content-length", length.as_str()),
        ];
        let mut settings = signing_settings();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = Identity::from(credentials);
        let signable = SignableRequest::new(
            "PUT",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(signing_error)?;
        let params = signing_params(&identity, self.region()?, now, settings)?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(signing_error)?.into_parts();

        let mut request = Request::new(SdkBody::from(body.to_vec()));
        request
            .set_method("PUT")
            .map_err(|err| StoreError::Backend(format!("s3: {err}")))?;
        request
            .set_uri(url.as_str())
            .map_err(|err| StoreError::Backend(format!("s3: {url}: {err}")))?;
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request
                .headers_mut()
                .try_insert(name.to_owned(), value.to_owned())
                .map_err(|err| StoreError::Backend(format!("s3: header {name}: {err}")))?;
        }
        Ok(request)
    }

    fn connector(&self) -> &Connector {
        self.connector.get_or_init(|| {
            Connector::builder()
                .connector_settings(
                    HttpConnectorSettings::builder()
                        .connect_timeout(CONNECT_TIMEOUT)
                        .read_timeout(READ_TIMEOUT)
                        .build(),
                )
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build()
        })
    }
}

fn signing_settings() -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings
}

fn signing_params<'a>(
    identity: &'a Identity,
    region: &'a str,
    now: SystemTime,
    settings: SigningSettings,
) -> Result<aws_sigv4::http_request::SigningParams<'a>, StoreError> {
    Ok(v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name("s3")
        .time(now)
        .settings(settings)
        .build()
        .map_err(signing_error)?
        .into())
}

fn signing_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("s3: signing: {err}"))
}

/// S3's error code from an error response body (`<Error><Code>SlowDown</Code>...`).
fn error_code(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(&text[start..end])
}

impl PdfStore for S3Bucket {
    async fn put_pdf(&self, key: &str, pdf: Vec<u8>) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            let credentials = self.credentials().await?;
            let request = self.put_request(credentials, key, &pdf, SystemTime::now())?;
            let failure = match self.connector().call(request).await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = ByteStream::new(response.into_body())
                        .collect()
                        .await
                        .map(|bytes| bytes.into_bytes())
                        .unwrap_or_default();
                    let code = error_code(&body).unwrap_or("no error code");
                    let retryable = matches!(status, 500 | 502 | 503 | 504);
                    (format!("PutObject {key}: HTTP {status}: {code}"), retryable)
                }
                Err(err) => (
                    format!(
                        "PutObject {key}: {}",
                        aws_smithy_types::error::display::DisplayErrorContext(&err)
                    ),
                    err.is_io() || err.is_timeout(),
                ),
            };
            let (message, retryable) = failure;
            if !retryable || attempt >= PUT_ATTEMPTS {
                return Err(StoreError::Backend(format!("s3: {message}")));
            }
            tracing::warn!(attempt, error = %message, "s3 upload failed; retrying");
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            attempt += 1;
        }
    }
}

impl Presigner for S3Bucket {
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, StoreError> {
        let credentials = self.credentials().await?;
        self.presigned_url_at(credentials, key, SystemTime::now(), expires_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_s3::presigning::PresigningConfig;

    const KEY: &str = "invoices/CUST 1/INV-1 ü+&=?.pdf";

    fn credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
    }

    fn sdk_config(endpoint: Option<&str>, region: &str) -> aws_config::SdkConfig {
        let mut config = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(credentials(Some(
                "FQoGZXIvYXdzEJr//////////wEaDHRva2VuK3dpdGgvc2xhc2hlcz0=",
            ))));
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        config.build()
    }

    /// What the S3 SDK presigns for the same request at the same instant.
    async fn sdk_url(
        config: &aws_config::SdkConfig,
        bucket: &str,
        now: SystemTime,
        expires_in: Duration,
    ) -> String {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(config.endpoint_url().is_some())
            .build();
        let presigning = PresigningConfig::builder()
            .start_time(now)
            .expires_in(expires_in)
            .build()
            .unwrap();
        aws_sdk_s3::Client::from_conf(s3)
            .get_object()
            .bucket(bucket)
            .key(KEY)
            .presigned(presigning)
            .await
            .unwrap()
            .uri()
            .to_owned()
    }

    #[tokio::test]
    async fn presigned_urls_match_the_s3_sdk() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_806_400);
        let expires_in = Duration::from_secs(900);
        let cases = [
            (None, "eu-west-1", "invoice-app-pdfs-dev-111111111111"),
            (None, "us-east-1", "invoice-app-pdfs-prod-111111111111"),
            (None, "eu-central-1", "bucket.with.dots"),
            (Some("http://127.0.0.1:4566"), "us-east-1", "pdfs"),
            (Some("http://localhost:5000/"), "eu-west-1", "pdfs"),
        ];
        for (endpoint, region, bucket) in cases {
            let config = sdk_config(endpoint, region);
            let mut ours = S3Bucket::new(&config, bucket);
            // The test pins the endpoint; the process environment must not leak in.
            ours.endpoint = endpoint.map(|url| url.trim_end_matches('/').to_owned());
            for token in [
                None,
                Some("FQoGZXIvYXdzEJr//////////wEaDHRva2VuK3dpdGgvc2xhc2hlcz0="),
            ] {
                let creds = credentials(token);
                let mut config = aws_config::SdkConfig::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new(region.to_owned()))
                    .credentials_provider(SharedCredentialsProvider::new(creds.clone()));
                config.set_endpoint_url(endpoint.map(str::to_owned));
                let config = config.build();
                let expected = sdk_url(&config, bucket, now, expires_in).await;
                let got = ours.presigned_url_at(creds, KEY, now, expires_in).unwrap();
                assert_eq!(got, expected, "{endpoint:?} {region} {bucket} {token:?}");
            }
        }
    }

    #[tokio::test]
    async fn presign_get_uses_the_configured_credentials() {
        let config = sdk_config(Some("http://127.0.0.1:4566"), "us-east-1");
        let mut bucket = S3Bucket::new(&config, "pdfs");
        bucket.endpoint = Some("http://127.0.0.1:4566".into());
        let url = bucket
            .presign_get("a.pdf", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:4566/pdfs/a.pdf?x-id=GetObject&"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Credential=AKIDEXAMPLE%2F"), "{url}");
        assert!(url.contains("X-Amz-Security-Token="), "{url}");
        assert!(url.contains("X-Amz-Expires=60&"), "{url}");
    }

    #[test]
    fn refuses_what_s3_would_refuse() {
        let config = sdk_config(None, "eu-west-1");
        let mut ours = S3Bucket::new(&config, "b");
        ours.endpoint = None;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_806_400);
        let err = ours
            .presigned_url_at(
                credentials(None),
                "k",
                now,
                MAX_EXPIRY + Duration::from_secs(1),
            )
            .unwrap_err();
        assert!(err.to_string().contains("7 days"), "{err}");

        ours.region = None;
        let err = ours
            .presigned_url_at(credentials(None), "k", now, Duration::from_secs(60))
            .unwrap_err();
        assert!(err.to_string().contains("region"), "{err}");
    }

    #[test]
    fn uploads_are_signed_as_s3_expects() {
        let config = sdk_config(None, "eu-west-1");
        let mut bucket = S3Bucket::new(&config, "invoice-app-pdfs-dev-111111111111");
        bucket.endpoint = None;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_806_400);
        let body = b"%PDF-1.7 bytes";
        let request = bucket
            .put_request(
                credentials(Some("token/with+slash=")),
                "invoices/INV 1.pdf",
                body,
                now,
            )
            .unwrap();
        assert_eq!(request.method(), "PUT");
        assert_eq!(
            request.uri(),
            "https://invoice-app-pdfs-dev-111111111111.s3.eu-west-1.amazonaws.com/invoices/INV%201.pdf?x-id=PutObject"
        );
        let header = |name| request.headers().get(name).unwrap_or_default();
        assert_eq!(header("content-type"), "application/pdf");
        assert_eq!(header("content-length"), body.len().to_string());
        // S3 refuses a SigV4 request without the payload's SHA-256.
        // (`printf '%PDF-1.7 bytes' | sha256sum`)
        assert_eq!(
            header("x-amz-content-sha256"),
            "98aa765a672bcf35483a98591538c5a7cacbf9370cbec06647c8010955b1180d"
        );
        assert_eq!(header("x-amz-date"), "20251204T000000Z");
        assert_eq!(header("x-amz-security-token"), "token/with+slash=");
        let authorization = header("authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251204/eu-west-1/s3/aws4_request, \
                 SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
                 Signature="
            ),
            "{authorization}"
        );
    }

    #[test]
    fn error_codes_come_from_s3_s_xml() {
        let body =
            b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce</Message></Error>";
        assert_eq!(error_code(body), Some("SlowDown"));
        assert_eq!(error_code(b"<html>bad gateway</html>"), None);
    }
}
