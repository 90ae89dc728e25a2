//! What is deployed in the emulator, read back from its control plane: the local data plane
//! serves this, not a second reading of the config.
//!
//! - Functions: the version each `live` alias points to, that version's environment, memory and
//!   timeout, and its code. The code is the artifact whose SHA-256 the version reports
//!   (`CodeSha256`), fetched from the artifacts bucket by its content-addressed key and checked
//!   against that hash, so what runs is exactly what was deployed.
//! - The REST API: resources, methods (API key required, required parameters and the request
//!   validator that enforces them, integration and its timeout), the stage (access log format
//!   and destination, method throttling), gateway responses, API keys and the usage plans that
//!   bind them to the stage.
//!
//! Which resources to read comes from the stack's naming ([`Names`]); everything about them
//! comes from the emulator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use stacks::names::Names;

use aws_sdk_apigateway::operation::get_stage::GetStageOutput;
use aws_sdk_apigateway::types::Method;

use super::runtime::{Code, FunctionConfig};
use crate::aws::Clients;
use crate::providers::rest_api::LiveApi;

/// One function as deployed behind its alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedFunction {
    /// The Lambda function name (`insert-invoice-local`).
    pub name: String,
    pub alias: String,
    /// The version the alias points to.
    pub version: String,
    /// `CodeSha256` of that version (base64 of the zip's digest).
    pub code_sha256: String,
    pub env: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout: Duration,
    pub handler: String,
}

impl DeployedFunction {
    /// The runtime's definition, running the artifact at `zip`.
    pub fn runtime_config(&self, zip: PathBuf) -> FunctionConfig {
        let mut s = FunctionConfig::new(self.name.clone(), Code::Zip(zip));
        s.env = self.env.clone();
        s.memory_mb = self.memory_mb;
        s.timeout = self.timeout;
        s.handler = self.handler.clone();
        s.version = self.version.clone();
        s
    }
}

/// Reads the version behind `alias` of `function`; `None` when the function or alias is
/// missing (not deployed yet).
pub async fn read_function(
    aws: &Clients,
    function: &str,
    alias: &str,
) -> Result<Option<DeployedFunction>> {
    let version = match aws
        .lambda
        .get_alias()
        .function_name(function)
        .name(alias)
        .send()
        .await
    {
        Ok(a) => a.function_version().unwrap_or_default().to_string(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("GetAlias {function}:{alias}")),
    };
    let c = aws
        .lambda
        .get_function_configuration()
        .function_name(function)
        .qualifier(&version)
        .send()
        .await
        .with_context(|| format!("GetFunctionConfiguration {function}:{version}"))?;
    let env = c
        .environment()
        .and_then(|e| e.variables())
        .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Some(DeployedFunction {
        name: function.to_string(),
        alias: alias.to_string(),
        version,
        code_sha256: c.code_sha256().unwrap_or_default().to_string(),
        env,
        memory_mb: c.memory_size().unwrap_or(128).max(0) as u32,
        timeout: Duration::from_secs(c.timeout().unwrap_or(3).max(1) as u64),
        handler: c.handler().unwrap_or("bootstrap").to_string(),
    }))
}

/// Fetches the zip a function version runs into `cache` (named by its SHA-256, so each
/// artifact is downloaded once), checking its digest against `CodeSha256`.
pub async fn fetch_code(
    aws: &Clients,
    artifacts_bucket: &str,
    f: &DeployedFunction,
    cache: &Path,
) -> Result<PathBuf> {
    let digest = base64::engine::general_purpose::STANDARD
        .decode(&f.code_sha256)
        .with_context(|| format!("{}: CodeSha256 {:?} is not base64", f.name, f.code_sha256))?;
    let hex = hex::encode(&digest);
    let path = cache.join(format!("{hex}.zip"));
    if path.is_file() {
        return Ok(path);
    }
    // The stack stores code under `functions/<crate>/<sha256 hex>.zip`; the crate part is not
    // derivable from the function name alone (prefixes), so find the key by its digest.
    let mut token = None;
    let key = loop {
        let page = aws
            .s3
            .list_objects_v2()
            .bucket(artifacts_bucket)
            .prefix("functions/")
            .set_continuation_token(token)
            .send()
            .await
            .with_context(|| format!("listing the artifacts in {artifacts_bucket}"))?;
        let found = page
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .find(|k| k.ends_with(&format!("/{hex}.zip")))
            .map(str::to_string);
        match (found, page.next_continuation_token()) {
            (None, Some(t)) => token = Some(t.to_string()),
            (found, _) => break found,
        }
    };
    let Some(key) = key else {
        bail!(
            "{} version {}: no artifact with SHA-256 {hex} in s3://{artifacts_bucket}/functions/",
            f.name,
            f.version
        );
    };
    let body = aws
        .s3
        .get_object()
        .bucket(artifacts_bucket)
        .key(&key)
        .send()
        .await
        .with_context(|| format!("GetObject s3://{artifacts_bucket}/{key}"))?
        .body
        .collect()
        .await
        .with_context(|| format!("reading s3://{artifacts_bucket}/{key}"))?
        .into_bytes();
    if Sha256::digest(&body).as_slice() != digest.as_slice() {
        bail!(
            "s3://{artifacts_bucket}/{key} does not match the SHA-256 its name and the function version give"
        );
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    // Write then rename: a concurrent reader never sees half a zip.
    let tmp = cache.join(format!(".{hex}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Where a method sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integration {
    /// AWS_PROXY to a Lambda function (name, qualifier).
    Lambda {
        function: String,
        qualifier: Option<String>,
        timeout: Duration,
    },
    /// A MOCK integration (CORS preflights): status and static headers of its response.
    Mock {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// Anything else; answered with 500 as an unsupported integration.
    Unsupported(String),
}

/// One method of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub resource_id: String,
    /// The resource path template: `/insert-invoice`, `/items/{id}`, `/{proxy+}`.
    pub path: String,
    /// `GET`, `POST`, ..., or `ANY`.
    pub method: String,
    pub api_key_required: bool,
    /// Required query string parameters and headers; enforced only when `validate_params`.
    pub required_query: Vec<String>,
    pub required_headers: Vec<String>,
    /// The method has a request validator that validates parameters.
    pub validate_params: bool,
    pub integration: Integration,
}

/// A gateway response: how the gateway answers errors it raises itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayResponse {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    /// `application/json` template.
    pub template: Option<String>,
}

/// A usage plan bound to the served stage.
#[derive(Debug, Clone, PartialEq)]
pub struct UsagePlan {
    pub id: String,
    /// Requests per second and bucket size; `None` when the plan does not throttle.
    pub throttle: Option<(f64, u32)>,
    /// Requests per period (`DAY`, `WEEK`, `MONTH`).
    pub quota: Option<(u64, String)>,
    pub key_ids: Vec<String>,
}

/// An API key (with its value: the gateway compares it with `x-api-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub value: String,
    pub enabled: bool,
}

/// A REST API stage as deployed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployedApi {
    pub id: String,
    pub name: String,
    pub stage: String,
    pub deployment_id: String,
    pub routes: Vec<Route>,
    pub gateway_responses: BTreeMap<String, GatewayResponse>,
    pub binary_media_types: Vec<String>,
    /// Log group ARN and format of the stage's access logs.
    pub access_log: Option<(String, String)>,
    /// Stage-wide (`*/*`) method throttling: rate and burst.
    pub stage_throttle: Option<(f64, u32)>,
    pub keys: Vec<ApiKey>,
    pub usage_plans: Vec<UsagePlan>,
}

/// The function name and qualifier in an AWS_PROXY integration URI:
/// `arn:aws:apigateway:<region>:lambda:path/2015-03-31/functions/<function arn>/invocations`.
pub fn lambda_target(uri: &str) -> Option<(String, Option<String>)> {
    let arn = uri
        .split_once("/functions/")?
        .1
        .strip_suffix("/invocations")?;
    // arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
    let rest = arn.split_once(":function:")?.1;
    Some(match rest.split_once(':') {
        Some((name, q)) => (name.to_string(), Some(q.to_string())),
        None => (rest.to_string(), None),
    })
}

/// API Gateway quotes static header values in mappings: `'*'` -> `*`.
fn unquote(v: &str) -> String {
    v.strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(v)
        .to_string()
}

/// Reads stage `stage` of the REST API called `api_name`; `None` when the API or the stage
/// does not exist. The routes and gateway responses come from the providers' reader
/// ([`LiveApi`]); the stage, usage plans and keys are what only the data plane needs.
pub async fn read_api(aws: &Clients, api_name: &str, stage: &str) -> Result<Option<DeployedApi>> {
    let gw = &aws.apigateway;
    let Some(api) = crate::providers::apigw::find_rest_api_with(gw, api_name).await? else {
        return Ok(None);
    };
    let id = api.id().unwrap_or_default().to_string();
    let st = match gw
        .get_stage()
        .rest_api_id(&id)
        .stage_name(stage)
        .send()
        .await
    {
        Ok(s) => s,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("GetStage {api_name}/{stage}")),
    };
    let Some(live) = LiveApi::read(gw, api).await? else {
        return Ok(None);
    };
    let access_log = st
        .access_log_settings()
        .and_then(|a| Some((a.destination_arn()?.to_string(), a.format()?.to_string())));
    Ok(Some(DeployedApi {
        routes: routes(gw, &live).await?,
        gateway_responses: gateway_responses(&live.responses),
        binary_media_types: live.api.binary_media_types().to_vec(),
        access_log,
        stage_throttle: stage_throttle(&st),
        keys: api_keys(gw).await?,
        usage_plans: usage_plans(gw, &id, stage).await?,
        id,
        name: api_name.to_string(),
        stage: stage.to_string(),
        deployment_id: st.deployment_id().unwrap_or_default().to_string(),
    }))
}

/// Every method of every resource, sorted by path and method.
async fn routes(gw: &aws_sdk_apigateway::Client, live: &LiveApi) -> Result<Vec<Route>> {
    let mut routes = Vec::new();
    for r in &live.resources {
        let path = r.path().unwrap_or("/");
        let resource_id = r.id().unwrap_or_default();
        for (verb, m) in r.resource_methods().into_iter().flatten() {
            // Without `embed`, AWS lists only the verbs: read the method then.
            let m = if m.method_integration().is_some() {
                m.clone()
            } else {
                let api_id = live.api.id().unwrap_or_default();
                let got = gw
                    .get_method()
                    .rest_api_id(api_id)
                    .resource_id(resource_id)
                    .http_method(verb)
                    .send()
                    .await
                    .with_context(|| format!("GetMethod {verb} {path}"))?;
                Method::builder()
                    .set_api_key_required(got.api_key_required())
                    .set_request_parameters(got.request_parameters().cloned())
                    .set_request_validator_id(got.request_validator_id().map(str::to_string))
                    .set_method_integration(got.method_integration().cloned())
                    .build()
            };
            routes.push(route(resource_id, path, verb, &m, &live.validators));
        }
    }
    routes.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    Ok(routes)
}

/// One method as the gateway serves it.
fn route(
    resource_id: &str,
    path: &str,
    verb: &str,
    m: &Method,
    validators: &BTreeMap<String, (String, bool)>,
) -> Route {
    let mut required_query = Vec::new();
    let mut required_headers = Vec::new();
    for (p, required) in m.request_parameters().into_iter().flatten() {
        if !required {
            continue;
        }
        if let Some(q) = p.strip_prefix("method.request.querystring.") {
            required_query.push(q.to_string());
        } else if let Some(h) = p.strip_prefix("method.request.header.") {
            required_headers.push(h.to_string());
        }
    }
    required_query.sort();
    required_headers.sort();
    Route {
        resource_id: resource_id.to_string(),
        path: path.to_string(),
        method: verb.to_string(),
        api_key_required: m.api_key_required().unwrap_or(false),
        required_query,
        required_headers,
        validate_params: m
            .request_validator_id()
            .and_then(|v| validators.get(v))
            .is_some_and(|(_, params)| *params),
        integration: integration(m.method_integration()),
    }
}

/// Where a method sends requests, as far as the local gateway can run it.
fn integration(i: Option<&aws_sdk_apigateway::types::Integration>) -> Integration {
    let Some(i) = i else {
        return Integration::Unsupported("no integration".into());
    };
    match i.r#type().map(|t| t.as_str()) {
        Some("AWS_PROXY") => match i.uri().and_then(lambda_target) {
            Some((function, qualifier)) => Integration::Lambda {
                function,
                qualifier,
                timeout: Duration::from_millis(
                    match i.timeout_in_millis() {
                        0 => 29_000,
                        t => t,
                    }
                    .max(50) as u64,
                ),
            },
            None => {
                Integration::Unsupported(format!("AWS_PROXY to {}", i.uri().unwrap_or_default()))
            }
        },
        Some("MOCK") => {
            let responses = i.integration_responses();
            let chosen = responses.and_then(|r| r.get("200").or_else(|| r.values().next()));
            let status = chosen
                .and_then(|r| r.status_code())
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let headers = prefixed_headers(
                chosen.and_then(|r| r.response_parameters()),
                "method.response.header.",
            );
            Integration::Mock { status, headers }
        }
        other => Integration::Unsupported(other.unwrap_or("?").to_string()),
    }
}

/// The static header values among mapping `parameters` (`<prefix><name>` -> `'value'`),
/// unquoted and sorted.
fn prefixed_headers(
    parameters: Option<&std::collections::HashMap<String, String>>,
    prefix: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = parameters
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|h| (h.to_string(), unquote(v))))
        .collect();
    headers.sort();
    headers
}

/// The API's gateway responses by type.
fn gateway_responses(
    responses: &[aws_sdk_apigateway::types::GatewayResponse],
) -> BTreeMap<String, GatewayResponse> {
    responses
        .iter()
        .filter_map(|r| {
            let t = r.response_type()?;
            Some((
                t.as_str().to_string(),
                GatewayResponse {
                    status: r.status_code().and_then(|s| s.parse().ok()),
                    headers: prefixed_headers(r.response_parameters(), "gatewayresponse.header."),
                    template: r
                        .response_templates()
                        .and_then(|t| t.get("application/json"))
                        .cloned(),
                },
            ))
        })
        .collect()
}

/// Stage-wide (`*/*`) method throttling, when it throttles.
fn stage_throttle(st: &GetStageOutput) -> Option<(f64, u32)> {
    let s = st.method_settings()?.get("*/*")?;
    (s.throttling_rate_limit() > 0.0 || s.throttling_burst_limit() > 0).then(|| {
        (
            s.throttling_rate_limit(),
            s.throttling_burst_limit().max(0) as u32,
        )
    })
}

/// The usage plans bound to stage `stage` of API `api_id`, with their keys.
async fn usage_plans(
    gw: &aws_sdk_apigateway::Client,
    api_id: &str,
    stage: &str,
) -> Result<Vec<UsagePlan>> {
    let mut usage_plans = Vec::new();
    let plans = gw
        .get_usage_plans()
        .limit(500)
        .send()
        .await
        .context("GetUsagePlans")?;
    for p in plans.items() {
        let bound = p
            .api_stages()
            .iter()
            .any(|s| s.api_id() == Some(api_id) && s.stage() == Some(stage));
        if !bound {
            continue;
        }
        let plan_id = p.id().unwrap_or_default().to_string();
        let keys = gw
            .get_usage_plan_keys()
            .usage_plan_id(&plan_id)
            .limit(500)
            .send()
            .await
            .with_context(|| format!("GetUsagePlanKeys {plan_id}"))?;
        usage_plans.push(UsagePlan {
            id: plan_id,
            throttle: p.throttle().and_then(|t| {
                (t.rate_limit() > 0.0 || t.burst_limit() > 0)
                    .then(|| (t.rate_limit(), t.burst_limit().max(0) as u32))
            }),
            quota: p.quota().and_then(|q| {
                (q.limit() > 0).then(|| {
                    (
                        q.limit() as u64,
                        q.period()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_else(|| "DAY".into()),
                    )
                })
            }),
            key_ids: keys
                .items()
                .iter()
                .filter_map(|k| k.id().map(str::to_string))
                .collect(),
        });
    }
    Ok(usage_plans)
}

/// Every API key of the account, with its value.
async fn api_keys(gw: &aws_sdk_apigateway::Client) -> Result<Vec<ApiKey>> {
    let mut keys = Vec::new();
    let mut position = None;
    loop {
        let page = gw
            .get_api_keys()
            .include_values(true)
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("GetApiKeys")?;
        keys.extend(page.items().iter().map(|k| ApiKey {
            id: k.id().unwrap_or_default().to_string(),
            value: k.value().unwrap_or_default().to_string(),
            enabled: k.enabled(),
        }));
        match page.position() {
            Some(p) if !p.is_empty() && !page.items().is_empty() => position = Some(p.to_string()),
            _ => return Ok(keys),
        }
    }
}

/// The functions of the app that the local data plane runs, by Lambda function name.
pub fn function_names(names: &Names) -> Vec<String> {
    stacks::invoice_app::FUNCTIONS
        .iter()
        .map(|f| names.function(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integration_uri_names_function_and_qualifier() {
        let uri = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:pr1-insert-invoice-dev:live/invocations";
        assert_eq!(
            lambda_target(uri),
            Some(("pr1-insert-invoice-dev".into(), Some("live".into())))
        );
        let unqualified = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:1:function:f/invocations";
        assert_eq!(lambda_target(unqualified), Some(("f".into(), None)));
        assert_eq!(
            lambda_target("arn:aws:apigateway:us-east-1:s3:path/x"),
            None
        );
    }

    #[test]
    fn static_mapping_values_lose_their_quotes() {
        assert_eq!(unquote("'*'"), "*");
        assert_eq!(unquote("'GET,POST'"), "GET,POST");
        assert_eq!(
            unquote("method.request.header.x"),
            "method.request.header.x"
        );
    }
}
