//! AWS SDK clients and handler configuration from the environment.
//!
//! The clients are built without the SDK's default features, so the HTTPS client is chosen
//! here: hyper with rustls on the `ring` crypto provider. aws-lc-rs (the SDK default) adds
//! about a megabyte to every binary and minutes of C compilation to a cold build, and buys
//! nothing a Lambda function calling DynamoDB and S3 needs (post-quantum key exchange, FIPS).
//! Trust roots are read from the system when the first connection is made, not at start-up.

/// A required environment variable was missing or empty.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {0} must be set")]
pub struct MissingEnv(pub &'static str);

/// Reads a required environment variable.
pub fn required_env(name: &'static str) -> Result<String, MissingEnv> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .ok_or(MissingEnv(name))
}

/// Shared SDK configuration; honours `AWS_ENDPOINT_URL` like every AWS SDK.
#[cfg(feature = "aws")]
pub async fn sdk_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .load()
        .await
}

#[cfg(feature = "dynamodb")]
pub fn dynamodb_client(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// An S3 client. With a custom endpoint (the local emulator, usually an IP address)
/// virtual-hosted bucket names cannot resolve, so path-style addressing is forced.
#[cfg(feature = "s3")]
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let custom_endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}
