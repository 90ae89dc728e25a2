//! What the API Gateway providers share: finding a REST API or API key by name (the name is
//! the only stable handle: there is no state file to remember ids in), the account's request
//! quotas on a few control-plane calls, and the ARNs API Gateway resources are tagged by.
//!
//! The quota-limited calls are paced by the API Gateway client itself
//! ([`crate::aws::transport`]), so that this process's calls never exceed the quota; a
//! TooManyRequests (someone else in the account used it) is retried here a bounded number of
//! times ([`QUOTA_ATTEMPTS`]), a quota interval apart.

use std::time::Duration;

use anyhow::{Context as _, Result};
use aws_sdk_apigateway::error::SdkError;
use aws_sdk_apigateway::operation::create_deployment::CreateDeploymentError;
use aws_sdk_apigateway::operation::create_rest_api::CreateRestApiError;
use aws_sdk_apigateway::operation::delete_rest_api::DeleteRestApiError;
use aws_sdk_apigateway::types::RestApi;

use crate::aws::transport;
use crate::engine::Ctx;
use crate::engine::retry::Backoff;

/// Attempts of a quota-limited call before its TooManyRequests is returned.
pub const QUOTA_ATTEMPTS: u32 = 5;

/// Per-account quotas of API Gateway calls that are much lower than the ~10 rps of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// CreateDeployment: one every 5 seconds.
    CreateDeployment,
    /// CreateRestApi of a REGIONAL or PRIVATE API: one every 3 seconds.
    CreateRestApi,
    /// CreateRestApi of an EDGE API: one every 30 seconds.
    CreateEdgeRestApi,
    /// DeleteRestApi: one every 30 seconds.
    DeleteRestApi,
    /// UpdateAccount: one every 20 seconds.
    UpdateAccount,
}

impl Quota {
    /// The operation as the transport's pacer names it.
    fn operation(self) -> &'static str {
        match self {
            Quota::CreateDeployment => "CreateDeployment",
            Quota::CreateRestApi => "CreateRestApi",
            Quota::CreateEdgeRestApi => transport::CREATE_EDGE_REST_API,
            Quota::DeleteRestApi => "DeleteRestApi",
            Quota::UpdateAccount => "UpdateAccount",
        }
    }

    /// The quota's interval, as the pacer applies it (one table of limits, in the transport).
    pub fn interval(self) -> Duration {
        transport::api_gateway_limit(self.operation())
            .map(|l| l.interval)
            .expect("every quota has a limit in the pacer")
    }

    /// The CreateRestApi quota for an endpoint type (`EDGE`, `REGIONAL`, `PRIVATE`).
    pub fn create_rest_api(endpoint_type: &str) -> Quota {
        if endpoint_type.eq_ignore_ascii_case("EDGE") {
            Quota::CreateEdgeRestApi
        } else {
            Quota::CreateRestApi
        }
    }

    /// Backoff for a throttled call: the first retry waits one quota interval (retrying
    /// sooner is bound to be throttled again), later ones up to two.
    pub fn backoff(self, deadline: Duration) -> Backoff {
        Backoff {
            first: self.interval(),
            max: self.interval() * 2,
            deadline,
        }
    }
}

/// Why a CreateDeployment error is worth retrying, if it is.
pub fn deployment_retryable<R>(e: &SdkError<CreateDeploymentError, R>) -> Option<&'static str> {
    match e {
        SdkError::ServiceError(s)
            if matches!(s.err(), CreateDeploymentError::TooManyRequestsException(_)) =>
        {
            Some("CreateDeployment quota (1 per 5 s per account)")
        }
        _ => None,
    }
}

pub fn create_api_retryable<R>(e: &SdkError<CreateRestApiError, R>) -> Option<&'static str> {
    match e {
        SdkError::ServiceError(s)
            if matches!(s.err(), CreateRestApiError::TooManyRequestsException(_)) =>
        {
            Some("CreateRestApi quota (1 per 3 s per account, 1 per 30 s for EDGE)")
        }
        _ => None,
    }
}

pub fn delete_api_retryable<R>(e: &SdkError<DeleteRestApiError, R>) -> Option<&'static str> {
    match e {
        SdkError::ServiceError(s)
            if matches!(s.err(), DeleteRestApiError::TooManyRequestsException(_)) =>
        {
            Some("DeleteRestApi quota (1 per 30 s per account)")
        }
        _ => None,
    }
}

/// SDK config for the quota-limited calls: no SDK-level retries, so the quota-aware retry
/// helper is the only one waiting (the SDK's own backoff is far shorter than the quotas).
pub fn no_sdk_retries() -> aws_sdk_apigateway::config::Builder {
    aws_sdk_apigateway::config::Builder::default()
        .retry_config(aws_sdk_apigateway::config::retry::RetryConfig::disabled())
}

/// The REST API called `name`, if any (all pages of GetRestApis).
pub async fn find_rest_api(ctx: &Ctx, name: &str) -> Result<Option<RestApi>> {
    // Every API Gateway resource starts here: one listing per plan pass serves them all.
    let all = crate::engine::lookup::once("apigateway.GetRestApis", || {
        all_rest_apis(&ctx.aws.apigateway)
    })
    .await?;
    Ok(all.into_iter().find(|a| a.name() == Some(name)))
}

async fn all_rest_apis(gw: &aws_sdk_apigateway::Client) -> Result<Vec<RestApi>> {
    let mut all = Vec::new();
    let mut position = None;
    loop {
        let page = gw
            .get_rest_apis()
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("GetRestApis")?;
        all.extend(page.items().iter().cloned());
        match page.position() {
            Some(p) if !p.is_empty() && !page.items().is_empty() => position = Some(p.to_string()),
            _ => return Ok(all),
        }
    }
}

/// [`find_rest_api`] with a bare client (the local data plane has no engine context).
pub async fn find_rest_api_with(
    gw: &aws_sdk_apigateway::Client,
    name: &str,
) -> Result<Option<RestApi>> {
    let mut position = None;
    loop {
        let page = gw
            .get_rest_apis()
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("GetRestApis")?;
        if let Some(api) = page.items().iter().find(|a| a.name() == Some(name)) {
            return Ok(Some(api.clone()));
        }
        match page.position() {
            Some(p) if !p.is_empty() && !page.items().is_empty() => position = Some(p.to_string()),
            _ => return Ok(None),
        }
    }
}

/// Where an apply pass keeps the id of a REST API it created ([`remember_rest_api`]).
fn rest_api_key(name: &str) -> String {
    format!("apigateway.rest_api_id.{name}")
}

/// Tells the rest of this apply pass the id of the REST API just created as `name`: its
/// stage, usage plan and permissions then need no `GetRestApis` to find it.
pub fn remember_rest_api(name: &str, id: &str) {
    crate::engine::lookup::remember(&rest_api_key(name), id);
}

/// Where an apply pass keeps the id of an API key it created ([`remember_api_key`]).
fn api_key_key(name: &str) -> String {
    format!("apigateway.api_key_id.{name}")
}

/// Tells the rest of this apply pass the id of the API key just created as `name`.
pub fn remember_api_key(name: &str, id: &str) {
    crate::engine::lookup::remember(&api_key_key(name), id);
}

/// The id of the API key created as `name` earlier in this apply pass, if any.
pub fn recall_api_key(name: &str) -> Option<String> {
    crate::engine::lookup::recall(&api_key_key(name))
}

/// The id of the REST API called `name`, or an error saying it must exist first.
pub async fn rest_api_id(ctx: &Ctx, name: &str) -> Result<String> {
    if let Some(id) = crate::engine::lookup::recall(&rest_api_key(name)) {
        return Ok(id);
    }
    find_rest_api(ctx, name)
        .await?
        .and_then(|a| a.id().map(str::to_string))
        .with_context(|| format!("REST API {name} does not exist"))
}

/// The id of the API key called `name`, if any.
pub async fn find_api_key(
    ctx: &Ctx,
    name: &str,
) -> Result<Option<aws_sdk_apigateway::types::ApiKey>> {
    crate::engine::lookup::once(&format!("apigateway.GetApiKeys.{name}"), || {
        find_api_key_now(ctx, name)
    })
    .await
}

async fn find_api_key_now(
    ctx: &Ctx,
    name: &str,
) -> Result<Option<aws_sdk_apigateway::types::ApiKey>> {
    let mut position = None;
    loop {
        let page = ctx
            .aws
            .apigateway
            .get_api_keys()
            .name_query(name)
            .include_values(false)
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("GetApiKeys")?;
        if let Some(k) = page.items().iter().find(|k| k.name() == Some(name)) {
            return Ok(Some(k.clone()));
        }
        match page.position() {
            Some(p) if !p.is_empty() && !page.items().is_empty() => position = Some(p.to_string()),
            _ => return Ok(None),
        }
    }
}

/// The ARN API Gateway resources are tagged by: `arn:aws:apigateway:<region>::<path>`.
pub fn resource_arn(region: &str, path: &str) -> String {
    format!(
        "arn:{}:apigateway:{region}::{path}",
        super::partition(region)
    )
}

/// Tag maps come back as `HashMap`s; compare them ordered and without AWS-managed tags.
pub fn tags(
    live: Option<&std::collections::HashMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    live.into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with("aws:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_apigateway::types::error::{BadRequestException, TooManyRequestsException};
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn service_error<E>(err: E, status: u16) -> SdkError<E, Response> {
        SdkError::service_error(
            err,
            Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn throttled_deployments_are_retried_other_errors_are_final() {
        let throttled = service_error(
            CreateDeploymentError::TooManyRequestsException(
                TooManyRequestsException::builder().build(),
            ),
            429,
        );
        assert!(deployment_retryable(&throttled).is_some());
        let bad = service_error(
            CreateDeploymentError::BadRequestException(BadRequestException::builder().build()),
            400,
        );
        assert_eq!(deployment_retryable(&bad), None);
    }

    #[test]
    fn create_and_delete_quotas_are_classified_by_variant() {
        let create = service_error(
            CreateRestApiError::TooManyRequestsException(
                TooManyRequestsException::builder().build(),
            ),
            429,
        );
        assert!(create_api_retryable(&create).is_some());
        let delete = service_error(
            DeleteRestApiError::TooManyRequestsException(
                TooManyRequestsException::builder().build(),
            ),
            429,
        );
        assert!(delete_api_retryable(&delete).is_some());
        let gone = service_error(
            DeleteRestApiError::NotFoundException(
                aws_sdk_apigateway::types::error::NotFoundException::builder().build(),
            ),
            404,
        );
        assert_eq!(delete_api_retryable(&gone), None);
    }

    #[test]
    fn quota_backoff_never_retries_sooner_than_the_quota() {
        for q in [
            Quota::CreateDeployment,
            Quota::CreateRestApi,
            Quota::CreateEdgeRestApi,
            Quota::DeleteRestApi,
            Quota::UpdateAccount,
        ] {
            let b = q.backoff(Duration::from_secs(600));
            assert_eq!(b.first, q.interval());
            assert!(b.max >= b.first);
        }
        assert_eq!(Quota::CreateDeployment.interval(), Duration::from_secs(5));
        assert_eq!(Quota::CreateRestApi.interval(), Duration::from_secs(3));
        assert_eq!(Quota::CreateEdgeRestApi.interval(), Duration::from_secs(30));
        assert_eq!(Quota::DeleteRestApi.interval(), Duration::from_secs(30));
        assert_eq!(Quota::UpdateAccount.interval(), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_deployment_waits_a_quota_interval_then_succeeds() {
        use std::cell::Cell;
        let calls = Cell::new(0);
        let start = tokio::time::Instant::now();
        let out: Result<&str, SdkError<CreateDeploymentError, Response>> =
            crate::engine::retry::retry(
                "CreateDeployment",
                Quota::CreateDeployment.backoff(Duration::from_secs(60)),
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        if n < 3 {
                            Err(service_error(
                                CreateDeploymentError::TooManyRequestsException(
                                    TooManyRequestsException::builder().build(),
                                ),
                                429,
                            ))
                        } else {
                            Ok("deployed")
                        }
                    }
                },
                deployment_retryable,
            )
            .await;
        assert_eq!(out.unwrap(), "deployed");
        assert_eq!(calls.get(), 3);
        // Jitter takes at most 20% off each wait.
        assert!(
            start.elapsed() >= Duration::from_secs(8),
            "{:?}",
            start.elapsed()
        );
    }
}
