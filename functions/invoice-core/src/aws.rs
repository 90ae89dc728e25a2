//! AWS SDK clients and handler configuration from the environment.
//!
//! The clients are built without the SDK's default features, so the HTTPS client is chosen
//! here: hyper with rustls on the `ring` crypto provider. aws-lc-rs (the SDK default) adds
//! about a megabyte to every binary and minutes of C compilation to a cold build, and buys
//! nothing a Lambda function calling DynamoDB and S3 needs (post-quantum key exchange, FIPS).
//! Trust roots are read from the system when the first connection is made, not at start-up.
//! The configuration comes from the environment alone ([`sdk_config`]).

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

/// Shared SDK configuration, from what Lambda puts in the environment: `AWS_REGION` (or
/// `AWS_DEFAULT_REGION`), the `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`
/// credentials, and `AWS_ENDPOINT_URL` like every AWS SDK (the local emulator).
///
/// Not `aws_config::load`: its default chains (profile files, SSO, web identity and
/// assume-role through an STS client, ECS and EC2 metadata clients) end up in every binary
/// that calls it, about 300 KB of each zip, and a Lambda function only ever gets its
/// credentials from the environment. Retries, timeouts, the sleep implementation and the
/// identity cache are the clients' defaults for the behaviour version, as with `load`.
#[cfg(feature = "aws")]
pub async fn sdk_config() -> aws_config::SdkConfig {
    sdk_config_from(|name| std::env::var(name).ok())
}

/// [`sdk_config`] with the region and endpoint read through `env` (credentials are always
/// read from the process environment, when a client first signs).
#[cfg(feature = "aws")]
pub fn sdk_config_from(env: impl Fn(&str) -> Option<String>) -> aws_config::SdkConfig {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

    let var = |name| env(name).filter(|value| !value.trim().is_empty());
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(
            var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .map(aws_config::Region::new),
        )
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .http_client(https);
    config.set_endpoint_url(var("AWS_ENDPOINT_URL"));
    config.build()
}

#[cfg(feature = "dynamodb")]
pub fn dynamodb_client(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn config_comes_from_lambda_s_environment() {
        let config = sdk_config_from(env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ]));
        assert_eq!(config.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert!(config.credentials_provider().is_some());
        assert!(config.http_client().is_some());
        assert!(config.behavior_version().is_some());

        let config = sdk_config_from(env(&[
            ("AWS_REGION", " "),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", ""),
        ]));
        assert_eq!(config.region().map(|r| r.as_ref()), Some("us-east-1"));
        assert_eq!(config.endpoint_url(), None);

        let config = sdk_config_from(env(&[]));
        assert_eq!(config.region(), None);
    }
}
