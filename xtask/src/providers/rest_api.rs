//! REST APIs with their resources, methods, integrations and gateway responses, managed as
//! one composite resource: a deployment freezes all of them together, and the stage's
//! deployment hash covers all of them, so splitting them into separate resources would only
//! multiply reads.
//!
//! Live state is read in three calls whatever the API's size: GetRestApis (found by name),
//! GetResources with methods embedded, GetGatewayResponses. Changes are applied per route:
//! a changed method is deleted and put again (PutMethod refuses to overwrite), a route no
//! longer wanted is deleted with its resource when nothing else lives there.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use std::time::Duration;

use aws_sdk_apigateway::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_apigateway::operation::delete_method::DeleteMethodError;
use aws_sdk_apigateway::operation::delete_resource::DeleteResourceError;
use aws_sdk_apigateway::operation::delete_rest_api::DeleteRestApiError;
use aws_sdk_apigateway::operation::get_resources::GetResourcesError;
use aws_sdk_apigateway::types::{
    ApiKeySourceType, EndpointConfiguration, EndpointType, GatewayResponseType, IntegrationType,
    Op, PatchOperation,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use serde::Serialize;
use serde_json::Value;
use stacks::RestApiSpec;

use super::apigw::{self, Quota};
use crate::engine::retry::{Backoff, retry, retry_at_most};
use crate::engine::{Ctx, Diff, Provider};

pub struct RestApi;

/// What a REST API's diff compares. Each route and each gateway response is a field of its
/// own, named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiField {
    Description,
    EndpointType,
    /// One route, by its key (`POST /insert-invoice`).
    Route(String),
    /// The gateway response types, shown on create.
    GatewayResponses,
    /// One gateway response, by its type.
    GatewayResponse(String),
    /// The deployment's hash, shown on create.
    DeploymentHash,
    Tags,
}

impl std::fmt::Display for ApiField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiField::Description => f.write_str("description"),
            ApiField::EndpointType => f.write_str("endpoint_type"),
            ApiField::Route(key) => write!(f, "route.{key}"),
            ApiField::GatewayResponses => f.write_str("gateway_responses"),
            ApiField::GatewayResponse(t) => write!(f, "gateway_response.{t}"),
            ApiField::DeploymentHash => f.write_str("deployment_hash"),
            ApiField::Tags => f.write_str("tags"),
        }
    }
}

super::not_found_errors!(
    DeleteRestApiError::NotFoundException,
    DeleteResourceError::NotFoundException,
    DeleteMethodError::NotFoundException,
);

/// Where a method sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Target {
    /// Lambda proxy integration to `uri`.
    AwsProxy { uri: String },
    /// A CORS preflight answered by API Gateway itself with this allowed origin.
    Mock { allow_origin: Option<String> },
    /// Anything else found live (never created by this provider).
    Other { kind: String, uri: Option<String> },
}

/// One method as far as this stack cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteState {
    pub api_key_required: bool,
    /// Query string parameter -> required.
    pub query_params: BTreeMap<String, bool>,
    /// Attached to a request validator that validates parameters.
    pub validate_params: bool,
    pub target: Target,
}

/// A gateway response as far as this stack cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseState {
    pub status_code: String,
    pub template: String,
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedApi {
    pub id: String,
    pub description: String,
    pub endpoint_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub root_id: Option<String>,
    /// Path (`/insert-invoice`) -> resource id, root excluded.
    pub resources: BTreeMap<String, String>,
    /// `"<METHOD> <path>"` -> method.
    pub routes: BTreeMap<String, RouteState>,
    pub responses: BTreeMap<String, ResponseState>,
    /// The API's request validators: id -> (name, validates parameters).
    pub validators: BTreeMap<String, (String, bool)>,
}

/// The request validator this provider creates for methods with required parameters.
pub const PARAMS_VALIDATOR: &str = "xtask-required-parameters";

pub const QUERY: &str = "method.request.querystring.";
pub const ALLOW_ORIGIN: &str = "method.response.header.Access-Control-Allow-Origin";
pub const ALLOW_HEADERS: &str = "method.response.header.Access-Control-Allow-Headers";
pub const ALLOW_METHODS: &str = "method.response.header.Access-Control-Allow-Methods";
/// The request headers a CORS preflight allows (quoted, as API Gateway wants static values).
pub const CORS_ALLOWED_HEADERS: &str = "'Content-Type,X-Api-Key,Accept'";
/// The mock integration's request template that makes a preflight answer 200.
pub const MOCK_TEMPLATE: &str = r#"{"statusCode": 200}"#;

fn route_key(method: &str, path: &str) -> String {
    format!("{method} {path}")
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once(' ').unwrap_or((key, "/"))
}

/// The routes the spec asks for, including CORS preflights.
pub fn desired_routes(spec: &RestApiSpec) -> BTreeMap<String, RouteState> {
    let mut out = BTreeMap::new();
    for r in &spec.routes {
        out.insert(
            route_key(&r.method, &r.path),
            RouteState {
                api_key_required: r.api_key_required,
                query_params: r.query_params.clone(),
                validate_params: r.validate_params,
                target: Target::AwsProxy {
                    uri: r.integration_uri.clone(),
                },
            },
        );
        if let Some(origin) = &spec.cors_origin {
            // Browsers send preflights without the API key: they must not require one.
            out.insert(
                route_key("OPTIONS", &r.path),
                RouteState {
                    api_key_required: false,
                    query_params: BTreeMap::new(),
                    validate_params: false,
                    target: Target::Mock {
                        allow_origin: Some(origin.clone()),
                    },
                },
            );
        }
    }
    out
}

fn desired_responses(spec: &RestApiSpec) -> BTreeMap<String, ResponseState> {
    spec.gateway_responses
        .iter()
        .map(|g| {
            (
                g.response_type.clone(),
                ResponseState {
                    status_code: g.status_code.clone(),
                    template: g.template.clone(),
                    headers: g.headers.clone(),
                },
            )
        })
        .collect()
}

/// Allowed methods of a path, for the preflight's Access-Control-Allow-Methods.
pub fn methods_of(spec: &RestApiSpec, path: &str) -> String {
    let mut m: Vec<&str> = spec
        .routes
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method.as_str())
        .collect();
    m.push("OPTIONS");
    m.join(",")
}

fn unquote(s: &str) -> String {
    s.trim_matches('\'').to_string()
}

fn route_state(
    m: &aws_sdk_apigateway::types::Method,
    validators: &BTreeMap<String, (String, bool)>,
) -> RouteState {
    let query_params = m
        .request_parameters()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| k.strip_prefix(QUERY).map(|n| (n.to_string(), *v)))
        .collect();
    let target = match m.method_integration() {
        Some(i) if i.r#type() == Some(&IntegrationType::AwsProxy) => Target::AwsProxy {
            uri: i.uri().unwrap_or_default().to_string(),
        },
        Some(i) if i.r#type() == Some(&IntegrationType::Mock) => Target::Mock {
            allow_origin: i
                .integration_responses()
                .and_then(|r| r.get("200"))
                .and_then(|r| r.response_parameters())
                .and_then(|p| p.get(ALLOW_ORIGIN))
                .map(|o| unquote(o)),
        },
        Some(i) => Target::Other {
            kind: i
                .r#type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            uri: i.uri().map(str::to_string),
        },
        None => Target::Other {
            kind: "NONE".into(),
            uri: None,
        },
    };
    RouteState {
        api_key_required: m.api_key_required().unwrap_or(false),
        query_params,
        validate_params: m
            .request_validator_id()
            .and_then(|id| validators.get(id))
            .is_some_and(|(_, params)| *params),
        target,
    }
}

/// A REST API's resources (methods embedded), gateway responses and request validators as
/// API Gateway returns them: the one reading of an API's routes, shared by this provider and
/// the local gateway (`local::deployed`), which each keep what they need of it.
#[derive(Debug, Clone)]
pub struct LiveApi {
    pub api: aws_sdk_apigateway::types::RestApi,
    pub resources: Vec<aws_sdk_apigateway::types::Resource>,
    pub responses: Vec<aws_sdk_apigateway::types::GatewayResponse>,
    /// id -> (name, validates parameters).
    pub validators: BTreeMap<String, (String, bool)>,
}

impl LiveApi {
    /// Reads the routes of `api` (as found by name) in three concurrent calls; `None` when
    /// the API was deleted since it was found.
    pub async fn read(
        gw: &aws_sdk_apigateway::Client,
        api: aws_sdk_apigateway::types::RestApi,
    ) -> Result<Option<LiveApi>> {
        let id = api.id().unwrap_or_default();
        let (resources, responses, validators) = tokio::join!(
            gw.get_resources()
                .rest_api_id(id)
                .embed("methods")
                .limit(500)
                .send(),
            gw.get_gateway_responses().rest_api_id(id).limit(500).send(),
            gw.get_request_validators()
                .rest_api_id(id)
                .limit(500)
                .send()
        );
        let resources = match resources {
            Ok(r) => r,
            // Deleted between the two calls: as good as absent.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), GetResourcesError::NotFoundException(_)) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e).context("GetResources"),
        };
        let responses = responses.context("GetGatewayResponses")?;
        let validators = validators
            .context("GetRequestValidators")?
            .items()
            .iter()
            .map(|v| {
                (
                    v.id().unwrap_or_default().to_string(),
                    (
                        v.name().unwrap_or_default().to_string(),
                        v.validate_request_parameters(),
                    ),
                )
            })
            .collect();
        Ok(Some(LiveApi {
            api,
            resources: resources.items().to_vec(),
            responses: responses.items().to_vec(),
            validators,
        }))
    }
}

#[async_trait]
impl Provider for RestApi {
    type Spec = RestApiSpec;
    type Observed = ObservedApi;
    type Field = ApiField;
    const KIND: &'static str = "rest_api";
    /// GetRestApis (one for every API of the pass), then the API's resources, stage and the rest.
    const READ_ROUND_TRIPS: u32 = 2;
    const ROUND_TRIPS: u32 = 7;

    async fn read(&self, ctx: &Ctx, spec: &RestApiSpec) -> Result<Option<ObservedApi>> {
        let Some(api) = apigw::find_rest_api(ctx, &spec.name).await? else {
            return Ok(None);
        };
        let Some(LiveApi {
            api,
            resources,
            responses,
            validators,
        }) = LiveApi::read(&ctx.aws.apigateway, api).await?
        else {
            return Ok(None);
        };
        let mut o = ObservedApi {
            id: api.id().unwrap_or_default().to_string(),
            description: api.description().unwrap_or_default().to_string(),
            endpoint_type: api
                .endpoint_configuration()
                .and_then(|c| c.types().first())
                .map(|t| t.as_str().to_string()),
            tags: apigw::tags(api.tags()),
            root_id: api.root_resource_id().map(str::to_string),
            resources: BTreeMap::new(),
            routes: BTreeMap::new(),
            responses: BTreeMap::new(),
            validators,
        };
        for r in &resources {
            let path = r.path().unwrap_or_default();
            if path == "/" {
                o.root_id = r.id().map(str::to_string);
            } else {
                o.resources
                    .insert(path.to_string(), r.id().unwrap_or_default().to_string());
            }
            for (method, m) in r.resource_methods().into_iter().flatten() {
                o.routes
                    .insert(route_key(method, path), route_state(m, &o.validators));
            }
        }
        for g in &responses {
            let Some(t) = g.response_type() else { continue };
            o.responses.insert(
                t.as_str().to_string(),
                ResponseState {
                    status_code: g.status_code().unwrap_or_default().to_string(),
                    template: g
                        .response_templates()
                        .and_then(|t| t.get("application/json"))
                        .cloned()
                        .unwrap_or_default(),
                    headers: g
                        .response_parameters()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
            );
        }
        Ok(Some(o))
    }

    fn tags(o: &ObservedApi) -> Option<&BTreeMap<String, String>> {
        Some(&o.tags)
    }

    fn describe(spec: &RestApiSpec) -> Diff<ApiField> {
        let mut d = Diff::default();
        d.push(
            ApiField::EndpointType,
            &Value::Null,
            &spec.endpoint_type.as_str(),
            false,
        );
        for (k, r) in desired_routes(spec) {
            d.push(ApiField::Route(k), &Value::Null, &r, false);
        }
        d.push(
            ApiField::GatewayResponses,
            &Value::Null,
            &spec
                .gateway_responses
                .iter()
                .map(|g| g.response_type.as_str())
                .collect::<Vec<_>>(),
            false,
        );
        d.push(
            ApiField::DeploymentHash,
            &Value::Null,
            &spec.deployment_hash(),
            false,
        );
        d.push(ApiField::Tags, &Value::Null, &spec.tags, false);
        d
    }

    fn diff(spec: &RestApiSpec, o: &ObservedApi) -> Diff<ApiField> {
        let mut d = Diff::default();
        d.field(ApiField::Description, &spec.description, &o.description);
        d.field(
            ApiField::EndpointType,
            Some(spec.endpoint_type.as_str().to_string()),
            o.endpoint_type.clone(),
        );
        let want = desired_routes(spec);
        for (k, r) in &want {
            let live = o.routes.get(k);
            if live != Some(r) {
                d.push(ApiField::Route(k.clone()), &live, r, false);
            }
        }
        for (k, live) in &o.routes {
            if !want.contains_key(k) {
                d.push(ApiField::Route(k.clone()), live, &Value::Null, false);
            }
        }
        for (t, r) in desired_responses(spec) {
            let live = o.responses.get(&t);
            if live != Some(&r) {
                d.push(ApiField::GatewayResponse(t.clone()), &live, &r, false);
            }
        }
        d.field(ApiField::Tags, &spec.tags, &o.tags);
        d
    }

    async fn create(&self, ctx: &Ctx, spec: &RestApiSpec) -> Result<()> {
        let gw = &ctx.aws.apigateway;
        // Tags go into the create call: the API is never unowned, and TagResource on a REST
        // API is not served by every emulator.
        let tags: HashMap<String, String> = spec.tags.clone().into_iter().collect();
        let quota = Quota::create_rest_api(spec.endpoint_type.as_str());
        let tags = &tags;
        let created = retry_at_most(
            "CreateRestApi",
            quota.backoff(ctx.wait_timeout),
            apigw::QUOTA_ATTEMPTS,
            || async move {
                gw.create_rest_api()
                    .name(&spec.name)
                    .description(&spec.description)
                    .api_key_source(ApiKeySourceType::Header)
                    .endpoint_configuration(
                        EndpointConfiguration::builder()
                            .types(EndpointType::from(spec.endpoint_type.as_str()))
                            .build(),
                    )
                    .set_tags(Some(tags.clone()))
                    .customize()
                    .config_override(apigw::no_sdk_retries())
                    .send()
                    .await
            },
            apigw::create_api_retryable,
        )
        .await
        .context("CreateRestApi")?;
        let id = created.id().unwrap_or_default().to_string();
        apigw::remember_rest_api(&spec.name, &id);
        // A fresh API has only its root resource (AWS adds no gateway responses), whose id
        // the create's answer carries; an answer without it costs a read back.
        let live = match created.root_resource_id() {
            Some(root) => ObservedApi {
                id,
                description: spec.description.clone(),
                endpoint_type: Some(spec.endpoint_type.as_str().to_string()),
                tags: spec.tags.clone(),
                root_id: Some(root.to_string()),
                resources: BTreeMap::new(),
                routes: BTreeMap::new(),
                responses: BTreeMap::new(),
                validators: BTreeMap::new(),
            },
            None => self
                .read(ctx, spec)
                .await?
                .filter(|o| o.id == id)
                .with_context(|| format!("REST API {} vanished after creation", spec.name))?,
        };
        converge(ctx, spec, &live).await
    }

    async fn update(
        &self,
        ctx: &Ctx,
        spec: &RestApiSpec,
        o: &ObservedApi,
        changes: &[ApiField],
    ) -> Result<()> {
        let gw = &ctx.aws.apigateway;
        let mut patch = Vec::new();
        let mut tags = false;
        for field in changes {
            match field {
                ApiField::Description => patch.push(
                    PatchOperation::builder()
                        .op(Op::Replace)
                        .path("/description")
                        .value(&spec.description)
                        .build(),
                ),
                ApiField::EndpointType => {
                    let old = o.endpoint_type.clone().unwrap_or_else(|| "EDGE".into());
                    patch.push(
                        PatchOperation::builder()
                            .op(Op::Replace)
                            .path(format!("/endpointConfiguration/types/{old}"))
                            .value(spec.endpoint_type.as_str())
                            .build(),
                    );
                }
                ApiField::Tags => tags = true,
                // `converge` below compares every route and response with live state.
                ApiField::Route(_) | ApiField::GatewayResponse(_) => {}
                // Shown on create only; `diff` never reports them.
                ApiField::GatewayResponses | ApiField::DeploymentHash => {}
            }
        }
        if !patch.is_empty() {
            gw.update_rest_api()
                .rest_api_id(&o.id)
                .set_patch_operations(Some(patch))
                .send()
                .await
                .context("UpdateRestApi")?;
        }
        if tags {
            let arn = apigw::resource_arn(&ctx.region, &format!("/restapis/{}", o.id));
            update_tags(ctx, &arn, &spec.tags, &o.tags).await?;
        }
        converge(ctx, spec, o).await
    }

    async fn delete(&self, ctx: &Ctx, _spec: &RestApiSpec, o: &ObservedApi) -> Result<()> {
        let gw = &ctx.aws.apigateway;
        let result = retry(
            "DeleteRestApi",
            Quota::DeleteRestApi.backoff(ctx.wait_timeout),
            || async {
                gw.delete_rest_api()
                    .rest_api_id(&o.id)
                    .customize()
                    .config_override(apigw::no_sdk_retries())
                    .send()
                    .await
            },
            apigw::delete_api_retryable,
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if super::not_found(&e) => Ok(()),
            Err(e) => Err(e).context("DeleteRestApi"),
        }
    }
}

/// Replaces a resource's tags: adds and changes with TagResource, drops with UntagResource.
pub async fn update_tags(
    ctx: &Ctx,
    arn: &str,
    want: &BTreeMap<String, String>,
    live: &BTreeMap<String, String>,
) -> Result<()> {
    let gw = &ctx.aws.apigateway;
    let stale: Vec<String> = live
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    if !stale.is_empty() {
        gw.untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(stale))
            .send()
            .await
            .context("UntagResource")?;
    }
    gw.tag_resource()
        .resource_arn(arn)
        .set_tags(Some(want.clone().into_iter().collect()))
        .send()
        .await
        .context("TagResource")?;
    Ok(())
}

/// Brings routes and gateway responses from `live` to what `spec` asks for.
async fn converge(ctx: &Ctx, spec: &RestApiSpec, live: &ObservedApi) -> Result<()> {
    let root = live
        .root_id
        .clone()
        .context("the REST API has no root resource")?;
    let want = desired_routes(spec);

    // The writes go out together where they do not depend on each other, each retried while
    // API Gateway answers that another change of the same API is in progress (see `write`).
    // First what goes.
    delete_stale(ctx, live, &want).await?;

    // Then, together: the validator, the missing resources and the gateway responses.
    let pending: Vec<(&String, &RouteState)> = want
        .iter()
        .filter(|(key, state)| live.routes.get(*key) != Some(*state))
        .collect();
    let validator = async {
        if pending.iter().any(|(_, r)| r.validate_params) {
            params_validator(ctx, live).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (validator, resources, responses) = tokio::join!(
        validator,
        create_resources(ctx, live, &root, &pending),
        put_responses(ctx, spec, live)
    );
    responses?;
    let validator = validator?;
    let resources = resources?;

    // Last, every route that differs, each on its own resource.
    let api = live.id.as_str();
    let routes = pending.iter().map(|(key, state)| {
        let (method, path) = split_key(key);
        let resource = &resources[path];
        let validator = validator.as_deref();
        async move { put_route(ctx, api, resource, method, path, state, spec, validator).await }
    });
    futures::future::join_all(routes)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// Deletes, together, the resources no route lives on any more (with their methods) and the
/// methods that changed (PutMethod will not overwrite).
async fn delete_stale(
    ctx: &Ctx,
    live: &ObservedApi,
    want: &BTreeMap<String, RouteState>,
) -> Result<()> {
    let gw = &ctx.aws.apigateway;
    let api = live.id.as_str();
    let wanted_paths: std::collections::BTreeSet<&str> =
        want.keys().map(|k| split_key(k).1).collect();
    let gone = live
        .resources
        .iter()
        .filter(|(path, _)| !wanted_paths.contains(path.as_str()))
        .map(|(path, id)| async move {
            let deleted = write(ctx, &format!("DeleteResource {path}"), || {
                gw.delete_resource().rest_api_id(api).resource_id(id).send()
            })
            .await;
            match deleted {
                Ok(_) => Ok(()),
                Err(e) if super::not_found(&e) => Ok(()),
                Err(e) => Err(anyhow::Error::new(e).context(format!("DeleteResource {path}"))),
            }
        });
    let changed = live
        .routes
        .iter()
        .filter(|(key, state)| {
            want.get(*key) != Some(*state) && wanted_paths.contains(split_key(key).1)
        })
        .map(|(key, _)| async move {
            let (method, path) = split_key(key);
            let id = &live.resources[path];
            let deleted = write(ctx, &format!("DeleteMethod {key}"), || {
                gw.delete_method()
                    .rest_api_id(api)
                    .resource_id(id)
                    .http_method(method)
                    .send()
            })
            .await;
            match deleted {
                Ok(_) => Ok(()),
                Err(e) if super::not_found(&e) => Ok(()),
                Err(e) => Err(anyhow::Error::new(e).context(format!("DeleteMethod {key}"))),
            }
        });
    let (gone, changed) = tokio::join!(
        futures::future::join_all(gone),
        futures::future::join_all(changed)
    );
    gone.into_iter()
        .chain(changed)
        .collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// Creates, together, the resources the `pending` routes live on and the API lacks: every
/// resource by path, the live ones and the new ones.
async fn create_resources(
    ctx: &Ctx,
    live: &ObservedApi,
    root: &str,
    pending: &[(&String, &RouteState)],
) -> Result<BTreeMap<String, String>> {
    let gw = &ctx.aws.apigateway;
    let api = live.id.as_str();
    let missing: std::collections::BTreeSet<&str> = pending
        .iter()
        .map(|(key, _)| split_key(key).1)
        .filter(|path| !live.resources.contains_key(*path))
        .collect();
    let created = futures::future::join_all(missing.iter().map(|path| async move {
        let created = write(ctx, &format!("CreateResource {path}"), || {
            gw.create_resource()
                .rest_api_id(api)
                .parent_id(root)
                .path_part(path.trim_start_matches('/'))
                .send()
        })
        .await
        .with_context(|| format!("CreateResource {path}"))?;
        Ok::<_, anyhow::Error>((
            path.to_string(),
            created.id().unwrap_or_default().to_string(),
        ))
    }))
    .await;
    let mut resources = live.resources.clone();
    for made in created {
        let (path, id) = made?;
        resources.insert(path, id);
    }
    Ok(resources)
}

/// Puts, together, every gateway response that differs from `live`.
async fn put_responses(ctx: &Ctx, spec: &RestApiSpec, live: &ObservedApi) -> Result<()> {
    let gw = &ctx.aws.apigateway;
    let api = live.id.as_str();
    futures::future::join_all(
        desired_responses(spec)
            .into_iter()
            .filter(|(t, r)| live.responses.get(t) != Some(r))
            .map(|(t, r)| async move {
                write(ctx, &format!("PutGatewayResponse {t}"), || {
                    let mut req = gw
                        .put_gateway_response()
                        .rest_api_id(api)
                        .response_type(GatewayResponseType::from(t.as_str()))
                        .response_templates("application/json", &r.template)
                        .set_response_parameters(Some(r.headers.clone().into_iter().collect()));
                    if !r.status_code.is_empty() {
                        req = req.status_code(&r.status_code);
                    }
                    req.send()
                })
                .await
                .with_context(|| format!("PutGatewayResponse {t}"))
                .map(|_| ())
            }),
    )
    .await
    .into_iter()
    .collect()
}

/// How often one write is sent while API Gateway answers ConflictException: about 12 s of
/// backoff. The same exception also means "already exists" (a PutMethod whose lost answer the
/// SDK retried), which no wait mends: the bound keeps that failure quick.
const CONFLICT_ATTEMPTS: u32 = 8;

/// Sends one write to a REST API, again while API Gateway answers ConflictException: AWS
/// refuses a change while another change of the same API is in progress ("Unable to complete
/// operation due to concurrent modification"), which the writes of one converge, sent
/// together, run into. Bounded ([`CONFLICT_ATTEMPTS`]), logged by `retry`.
async fn write<T, E, F, Fut>(ctx: &Ctx, what: &str, op: F) -> Result<T, SdkError<E, HttpResponse>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata,
{
    retry_at_most(
        what,
        Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(3),
            deadline: ctx.wait_timeout,
        },
        CONFLICT_ATTEMPTS,
        op,
        |e| {
            (e.code() == Some("ConflictException"))
                .then_some("another change of this REST API is in progress")
        },
    )
    .await
}

/// The id of the parameters-only request validator, created when the API has none.
async fn params_validator(ctx: &Ctx, live: &ObservedApi) -> Result<String> {
    if let Some((id, _)) = live
        .validators
        .iter()
        .find(|(_, (name, params))| name == PARAMS_VALIDATOR && *params)
    {
        return Ok(id.clone());
    }
    let created = write(ctx, "CreateRequestValidator", || {
        ctx.aws
            .apigateway
            .create_request_validator()
            .rest_api_id(&live.id)
            .name(PARAMS_VALIDATOR)
            .validate_request_parameters(true)
            .validate_request_body(false)
            .send()
    })
    .await
    .context("CreateRequestValidator")?;
    Ok(created.id().unwrap_or_default().to_string())
}

#[allow(clippy::too_many_arguments)]
async fn put_route(
    ctx: &Ctx,
    api: &str,
    resource: &str,
    method: &str,
    path: &str,
    state: &RouteState,
    spec: &RestApiSpec,
    validator: Option<&str>,
) -> Result<()> {
    let gw = &ctx.aws.apigateway;
    let key = route_key(method, path);
    let params: HashMap<String, bool> = state
        .query_params
        .iter()
        .map(|(n, r)| (format!("{QUERY}{n}"), *r))
        .collect();
    write(ctx, &format!("PutMethod {key}"), || {
        gw.put_method()
            .rest_api_id(api)
            .resource_id(resource)
            .http_method(method)
            .authorization_type("NONE")
            .api_key_required(state.api_key_required)
            .set_request_parameters((!params.is_empty()).then(|| params.clone()))
            .set_request_validator_id(
                validator
                    .filter(|_| state.validate_params)
                    .map(str::to_string),
            )
            .send()
    })
    .await
    .with_context(|| format!("PutMethod {key}"))?;
    match &state.target {
        Target::AwsProxy { uri } => {
            write(ctx, &format!("PutIntegration {key}"), || {
                gw.put_integration()
                    .rest_api_id(api)
                    .resource_id(resource)
                    .http_method(method)
                    .r#type(IntegrationType::AwsProxy)
                    // Lambda is always invoked with POST, whatever the client's method.
                    .integration_http_method("POST")
                    .uri(uri)
                    .send()
            })
            .await
            .with_context(|| format!("PutIntegration {key}"))?;
        }
        Target::Mock { allow_origin } => {
            let origin = allow_origin.clone().unwrap_or_else(|| "*".into());
            // The method response needs only the method; the integration response needs both.
            let (integration_what, response_what) = (
                format!("PutIntegration {key}"),
                format!("PutMethodResponse {key}"),
            );
            let integration = write(ctx, &integration_what, || {
                gw.put_integration()
                    .rest_api_id(api)
                    .resource_id(resource)
                    .http_method(method)
                    .r#type(IntegrationType::Mock)
                    .request_templates("application/json", MOCK_TEMPLATE)
                    .send()
            });
            let method_response = write(ctx, &response_what, || {
                gw.put_method_response()
                    .rest_api_id(api)
                    .resource_id(resource)
                    .http_method(method)
                    .status_code("200")
                    .response_parameters(ALLOW_ORIGIN, false)
                    .response_parameters(ALLOW_HEADERS, false)
                    .response_parameters(ALLOW_METHODS, false)
                    .send()
            });
            let (integration, method_response) = tokio::join!(integration, method_response);
            integration.with_context(|| format!("PutIntegration {key}"))?;
            method_response.with_context(|| format!("PutMethodResponse {key}"))?;
            write(ctx, &format!("PutIntegrationResponse {key}"), || {
                gw.put_integration_response()
                    .rest_api_id(api)
                    .resource_id(resource)
                    .http_method(method)
                    .status_code("200")
                    .response_parameters(ALLOW_ORIGIN, format!("'{origin}'"))
                    .response_parameters(ALLOW_HEADERS, CORS_ALLOWED_HEADERS)
                    .response_parameters(ALLOW_METHODS, format!("'{}'", methods_of(spec, path)))
                    .send()
            })
            .await
            .with_context(|| format!("PutIntegrationResponse {key}"))?;
        }
        Target::Other { kind, .. } => {
            anyhow::bail!("{key}: cannot create an integration of type {kind}")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacks::config::Config;

    fn spec(config: &Config) -> RestApiSpec {
        let stack = stacks::invoice_app(
            config,
            &stacks::Target {
                env: "dev",
                account_id: "123456789012",
                region: "eu-west-1",
            },
            &Default::default(),
        );
        match &stack.get(stacks::api::REST_API).unwrap().spec {
            stacks::Spec::RestApi(a) => a.clone(),
            _ => unreachable!(),
        }
    }

    /// A method as GetResources (`embed=methods`) returns it: a Lambda proxy integration of
    /// the `live` alias of `function`.
    fn aws_method(
        method: &str,
        function: &str,
        query: &[(&str, bool)],
        validator: Option<&str>,
    ) -> aws_sdk_apigateway::types::Method {
        let uri = format!(
            "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:{function}:live/invocations"
        );
        aws_sdk_apigateway::types::Method::builder()
            .http_method(method)
            .authorization_type("NONE")
            .api_key_required(true)
            .set_request_parameters(Some(
                query
                    .iter()
                    .map(|(name, required)| (format!("{QUERY}{name}"), *required))
                    .collect(),
            ))
            .set_request_validator_id(validator.map(str::to_string))
            .method_integration(
                aws_sdk_apigateway::types::Integration::builder()
                    .r#type(IntegrationType::AwsProxy)
                    .http_method("POST")
                    .uri(uri)
                    .build(),
            )
            .build()
    }

    /// The default config's API as API Gateway describes it, written out rather than derived
    /// from the spec (routes go through the reader's own parsing of each method), so that a
    /// route, response or field the diff reads differently from how it is written shows up.
    fn matching() -> ObservedApi {
        let validators = BTreeMap::from([("v1".to_string(), (PARAMS_VALIDATOR.to_string(), true))]);
        let methods = [
            (
                "/insert-invoice",
                aws_method("POST", "insert-invoice-dev", &[], None),
            ),
            (
                "/list-invoices",
                aws_method(
                    "GET",
                    "list-invoices-dev",
                    &[("customerId", true), ("limit", false), ("pageToken", false)],
                    Some("v1"),
                ),
            ),
            (
                "/download-invoice",
                aws_method(
                    "GET",
                    "download-pdf-dev",
                    &[("InvoiceID", false), ("invoiceId", false)],
                    None,
                ),
            ),
        ];
        let error = |code: &str, message: &str| {
            format!(r#"{{"error":{{"code":"{code}","message":{message},"fields":[]}}}}"#)
        };
        let text = "$context.error.messageString";
        let responses = [
            ("INVALID_API_KEY", "403", error("forbidden", text)),
            ("ACCESS_DENIED", "403", error("forbidden", text)),
            (
                "MISSING_AUTHENTICATION_TOKEN",
                "404",
                error("not_found", r#""no such endpoint""#),
            ),
            ("THROTTLED", "429", error("throttled", text)),
            ("QUOTA_EXCEEDED", "429", error("quota_exceeded", text)),
            (
                "BAD_REQUEST_PARAMETERS",
                "400",
                error(
                    "validation_failed",
                    r#""$context.error.validationErrorString""#,
                ),
            ),
            ("BAD_REQUEST_BODY", "400", error("malformed_json", text)),
            ("REQUEST_TOO_LARGE", "413", error("payload_too_large", text)),
            // The defaults carry no status of their own.
            ("DEFAULT_4XX", "", error("bad_request", text)),
            ("DEFAULT_5XX", "", error("internal_error", text)),
        ];
        ObservedApi {
            id: "abc".into(),
            description: "invoice-app HTTP API (dev)".into(),
            endpoint_type: Some("REGIONAL".into()),
            tags: BTreeMap::from([
                ("app".into(), "invoice-app".into()),
                ("env".into(), "dev".into()),
                ("managed-by".into(), "xtask".into()),
            ]),
            root_id: Some("root".into()),
            resources: methods
                .iter()
                .map(|(path, _)| (path.to_string(), format!("id{path}")))
                .collect(),
            routes: methods
                .iter()
                .map(|(path, m)| {
                    (
                        route_key(m.http_method().unwrap(), path),
                        route_state(m, &validators),
                    )
                })
                .collect(),
            responses: responses
                .into_iter()
                .map(|(kind, status, template)| {
                    (
                        kind.to_string(),
                        ResponseState {
                            status_code: status.into(),
                            template,
                            headers: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
            validators,
        }
    }

    #[test]
    fn methods_with_required_parameters_are_validated_and_a_missing_validator_is_a_change() {
        let s = spec(&Config::default());
        let want = desired_routes(&s);
        assert!(want["GET /list-invoices"].validate_params);
        // download-invoice takes one of two names: neither is required, nothing to validate.
        assert!(!want["GET /download-invoice"].validate_params);
        assert!(!want["POST /insert-invoice"].validate_params);
        let mut live = matching();
        live.routes
            .get_mut("GET /list-invoices")
            .unwrap()
            .validate_params = false;
        assert!(!RestApi::diff(&s, &live).0.is_empty());
    }

    #[test]
    fn a_matching_api_has_no_diff() {
        let s = spec(&Config::default());
        assert!(RestApi::diff(&s, &matching()).0.is_empty());
    }

    #[test]
    fn a_changed_target_and_an_extra_live_method_are_route_changes() {
        let s = spec(&Config::default());
        let mut o = matching();
        let key = "POST /insert-invoice".to_string();
        o.routes.get_mut(&key).unwrap().target = Target::AwsProxy {
            uri: "arn:other".into(),
        };
        o.routes
            .insert("DELETE /insert-invoice".into(), o.routes[&key].clone());
        let d = RestApi::diff(&s, &o);
        let fields: Vec<String> = d.0.iter().map(|c| c.field.to_string()).collect();
        assert_eq!(
            fields,
            ["route.POST /insert-invoice", "route.DELETE /insert-invoice"]
        );
        assert!(d.0.iter().all(|c| !c.forces_replacement));
    }

    #[test]
    fn cors_adds_keyless_preflights() {
        let mut c = Config::default();
        c.api.cors_allowed_origins = vec!["https://app.example.com".into()];
        let s = spec(&c);
        let r = desired_routes(&s);
        let pre = &r["OPTIONS /list-invoices"];
        assert!(!pre.api_key_required);
        assert_eq!(
            pre.target,
            Target::Mock {
                allow_origin: Some("https://app.example.com".into())
            }
        );
        assert_eq!(methods_of(&s, "/list-invoices"), "GET,OPTIONS");
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn required_query_parameters_are_declared() {
        let s = spec(&Config::default());
        let r = desired_routes(&s);
        assert!(r["GET /list-invoices"].query_params["customerId"]);
        assert!(!r["GET /list-invoices"].query_params["limit"]);
        assert!(r.values().all(|r| r.api_key_required));
    }
}
