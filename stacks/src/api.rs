//! The REST API part of the stack: the API with its routes, the stage and its access log
//! group, the API key and usage plan, and the permissions letting API Gateway invoke each
//! function's `live` alias.
//!
//! Every resource is always listed; with `api.enabled = false` they are absent, so switching
//! the API off plans its deletion.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::model::*;
use crate::names::Names;

pub const ACCOUNT: &str = "api_account.cloudwatch_role";
pub const REST_API: &str = "rest_api.invoice";
pub const ACCESS_LOG_GROUP: &str = "log_group.api_access";
pub const STAGE: &str = "api_stage.main";
pub const API_KEY: &str = "api_key.default";
pub const USAGE_PLAN: &str = "usage_plan.default";
/// The alias every integration and permission targets.
pub use crate::invoice_app::ALIAS;

/// The app's HTTP contract, derived from the functions' routes.
pub use crate::functions::{ENDPOINTS, Endpoint};

/// The JSON access log line: request id, caller, route, status, latency, key, errors.
pub const ACCESS_LOG_FORMAT: &str = r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","apiKeyId":"$context.identity.apiKeyId","requestTime":"$context.requestTime","httpMethod":"$context.httpMethod","resourcePath":"$context.resourcePath","status":"$context.status","protocol":"$context.protocol","responseLength":"$context.responseLength","responseLatency":"$context.responseLatency","integrationLatency":"$context.integrationLatency","integrationStatus":"$context.integrationStatus","errorMessage":"$context.error.message"}"#;

use crate::names::partition;

/// Gateway responses that give API Gateway's own errors the app's error shape
/// `{"error":{"code","message","fields"}}`.
fn gateway_responses(cors_origin: Option<&str>) -> Vec<GatewayResponseSpec> {
    let mut headers = BTreeMap::new();
    if let Some(o) = cors_origin {
        // Browsers need the CORS header on errors too, or they hide the error body.
        headers.insert(
            "gatewayresponse.header.Access-Control-Allow-Origin".to_string(),
            format!("'{o}'"),
        );
    }
    let template = |code: &str, message: &str| {
        format!(r#"{{"error":{{"code":"{code}","message":{message},"fields":[]}}}}"#)
    };
    let msg = "$context.error.messageString";
    [
        ("INVALID_API_KEY", "403", template("forbidden", msg)),
        ("ACCESS_DENIED", "403", template("forbidden", msg)),
        // What API Gateway answers for a path or method that does not exist.
        (
            "MISSING_AUTHENTICATION_TOKEN",
            "404",
            template("not_found", r#""no such endpoint""#),
        ),
        ("THROTTLED", "429", template("throttled", msg)),
        ("QUOTA_EXCEEDED", "429", template("quota_exceeded", msg)),
        (
            "BAD_REQUEST_PARAMETERS",
            "400",
            template(
                "validation_failed",
                "\"$context.error.validationErrorString\"",
            ),
        ),
        ("BAD_REQUEST_BODY", "400", template("malformed_json", msg)),
        (
            "REQUEST_TOO_LARGE",
            "413",
            template("payload_too_large", msg),
        ),
        ("DEFAULT_4XX", "", template("bad_request", msg)),
        ("DEFAULT_5XX", "", template("internal_error", msg)),
    ]
    .into_iter()
    .map(|(t, status, template)| GatewayResponseSpec {
        response_type: t.to_string(),
        status_code: status.to_string(),
        template,
        headers: headers.clone(),
    })
    .collect()
}

/// The REST API resources of the stack.
pub fn resources(
    config: &Config,
    names: &Names,
    account_id: &str,
    region: &str,
    tags: &BTreeMap<String, String>,
) -> Vec<Resource> {
    let a = &config.api;
    let ensure = if a.enabled {
        Ensure::Present
    } else {
        Ensure::Absent
    };
    let api = rest_api(config, names, account_id, region, tags);
    let mut out = Vec::new();
    // The account setting is only ever added, never removed (see `Stack::into_absent`), so a
    // disabled API does not list it at all.
    if a.enabled {
        out.push(Resource {
            id: ACCOUNT.into(),
            depends_on: vec![],
            ensure,
            spec: Spec::ApiAccount(ApiAccountSpec {
                setup: a.setup_cloudwatch_role,
                role_name: names.apigateway_cloudwatch_role(),
            }),
        });
    }
    let stage = stage(config, names, account_id, region, &api, tags, ensure);
    let permissions = permissions(config, &api, ensure);
    out.push(Resource {
        id: REST_API.into(),
        depends_on: vec![],
        ensure,
        spec: Spec::RestApi(api),
    });
    out.extend(stage);
    out.extend(key_and_plan(config, names, tags, ensure));
    out.extend(permissions);
    out
}

/// The API with one route per endpoint, each integrated with its function's alias.
fn rest_api(
    config: &Config,
    names: &Names,
    account_id: &str,
    region: &str,
    tags: &BTreeMap<String, String>,
) -> RestApiSpec {
    let part = partition(region);
    let cors_origin = config.api.cors_allowed_origins.first().cloned();
    let routes: Vec<RouteSpec> = ENDPOINTS
        .iter()
        .map(|e| {
            let function_name = names.function(e.function);
            let function_arn =
                format!("arn:{part}:lambda:{region}:{account_id}:function:{function_name}:{ALIAS}");
            RouteSpec {
                path: e.path.to_string(),
                method: e.method.to_string(),
                api_key_required: true,
                query_params: e.query.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
                validate_params: e.query.iter().any(|(_, required)| *required),
                integration_uri: format!(
                    "arn:{part}:apigateway:{region}:lambda:path/2015-03-31/functions/{function_arn}/invocations"
                ),
                function_name,
                function_arn,
            }
        })
        .collect();
    RestApiSpec {
        name: names.rest_api(),
        description: format!("{} HTTP API ({})", config.app, names.env()),
        endpoint_type: config.api.endpoint_type,
        gateway_responses: gateway_responses(cors_origin.as_deref()),
        cors_origin,
        routes,
        tags: tags.clone(),
    }
}

/// The access log group and the stage that deploys `api` and logs to it.
fn stage(
    config: &Config,
    names: &Names,
    account_id: &str,
    region: &str,
    api: &RestApiSpec,
    tags: &BTreeMap<String, String>,
    ensure: Ensure,
) -> [Resource; 2] {
    let a = &config.api;
    let log_group = format!("/aws/apigateway/{}", api.name);
    let mut stage_deps = vec![REST_API.to_string(), ACCESS_LOG_GROUP.to_string()];
    if a.enabled {
        stage_deps.push(ACCOUNT.into());
    }
    [
        Resource {
            id: ACCESS_LOG_GROUP.into(),
            depends_on: vec![],
            ensure,
            spec: Spec::LogGroup(LogGroupSpec {
                name: log_group.clone(),
                retention_days: a.access_log_retention_days,
                tags: tags.clone(),
            }),
        },
        Resource {
            id: STAGE.into(),
            depends_on: stage_deps,
            ensure,
            spec: Spec::ApiStage(ApiStageSpec {
                api_name: names.rest_api(),
                stage_name: a.stage_name.clone(),
                deployment_hash: api.deployment_hash(),
                access_log_group_arn: crate::names::log_group_arn(region, account_id, &log_group),
                access_log_format: ACCESS_LOG_FORMAT.into(),
                throttle_rate: a.method_throttle.rate_limit,
                throttle_burst: a.method_throttle.burst_limit,
                tags: tags.clone(),
            }),
        },
    ]
}

/// The API key and the usage plan binding it to the stage.
fn key_and_plan(
    config: &Config,
    names: &Names,
    tags: &BTreeMap<String, String>,
    ensure: Ensure,
) -> [Resource; 2] {
    let a = &config.api;
    [
        Resource {
            id: API_KEY.into(),
            depends_on: vec![],
            ensure,
            spec: Spec::ApiKey(ApiKeySpec {
                name: names.api_key(),
                description: format!("{} API key ({})", config.app, names.env()),
                tags: tags.clone(),
            }),
        },
        Resource {
            id: USAGE_PLAN.into(),
            depends_on: vec![STAGE.into(), API_KEY.into()],
            ensure,
            spec: Spec::UsagePlan(UsagePlanSpec {
                name: names.usage_plan(),
                api_name: names.rest_api(),
                stage_name: a.stage_name.clone(),
                key_name: names.api_key(),
                rate_limit: a.usage_plan.throttle.rate_limit,
                burst_limit: a.usage_plan.throttle.burst_limit,
                quota_limit: a.usage_plan.quota.limit,
                quota_period: a.usage_plan.quota.period.as_str().into(),
                tags: tags.clone(),
            }),
        },
    ]
}

/// Per route, the statement letting API Gateway invoke the function's alias.
fn permissions(config: &Config, api: &RestApiSpec, ensure: Ensure) -> Vec<Resource> {
    let stage_name = &config.api.stage_name;
    api.routes
        .iter()
        .zip(ENDPOINTS.iter())
        .map(|(r, e)| {
            let path = r.path.trim_start_matches('/');
            let mut depends_on = vec![REST_API.to_string()];
            if config.functions.enabled {
                // The statement hangs off the function's alias, which the function resource
                // makes.
                depends_on.insert(0, crate::invoice_app::function_id(e.function));
            }
            Resource {
                id: format!("lambda_permission.{}", path.replace('-', "_")),
                depends_on,
                ensure,
                spec: Spec::LambdaPermission(LambdaPermissionSpec {
                    function_name: r.function_name.clone(),
                    qualifier: ALIAS.into(),
                    // Stable: derived from the route, so a re-apply finds it.
                    statement_id: format!("apigateway-{}-{path}", r.method.to_ascii_lowercase()),
                    principal: "apigateway.amazonaws.com".into(),
                    api_name: api.name.clone(),
                    source_arn_suffix: format!("{stage_name}/{}/{path}", r.method),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(config: &Config) -> RestApiSpec {
        let names = Names::new(config, "dev", "123456789012");
        let rs = resources(
            config,
            &names,
            "123456789012",
            "eu-west-1",
            &BTreeMap::new(),
        );
        match &rs.iter().find(|r| r.id == REST_API).unwrap().spec {
            Spec::RestApi(a) => a.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn deployment_hash_is_stable_and_order_independent() {
        let a = api(&Config::default());
        let mut b = a.clone();
        b.routes.reverse();
        b.gateway_responses.reverse();
        assert_eq!(a.deployment_hash(), b.deployment_hash());
        assert_eq!(a.deployment_hash().len(), 64);
    }

    #[test]
    fn deployment_hash_ignores_what_needs_no_deployment() {
        let a = api(&Config::default());
        let mut b = a.clone();
        b.tags.insert("team".into(), "x".into());
        b.description = "other".into();
        b.endpoint_type = crate::config::EndpointType::Edge;
        assert_eq!(a.deployment_hash(), b.deployment_hash());
    }

    #[test]
    fn deployment_hash_changes_with_targets_methods_params_and_cors() {
        let a = api(&Config::default());
        let h = a.deployment_hash();
        let mut target = a.clone();
        target.routes[0].integration_uri = target.routes[0].integration_uri.replace(":live", ":v2");
        let mut method = a.clone();
        let mut extra = a.routes[1].clone();
        extra.method = "HEAD".into();
        method.routes.push(extra);
        let mut param = a.clone();
        param.routes[1].query_params.insert("limit".into(), true);
        let mut key = a.clone();
        key.routes[2].api_key_required = false;
        let mut cors = a.clone();
        cors.cors_origin = Some("https://example.com".into());
        let mut response = a.clone();
        response.gateway_responses[0].status_code = "401".into();
        for (what, other) in [
            ("integration target", target),
            ("method", method),
            ("required parameter", param),
            ("api key", key),
            ("cors", cors),
            ("gateway response", response),
        ] {
            assert_ne!(h, other.deployment_hash(), "{what} must redeploy");
        }
    }

    #[test]
    fn integrations_target_the_live_alias_of_prefixed_functions() {
        let c = Config {
            name_prefix: "pr1-".into(),
            ..Config::default()
        };
        let a = api(&c);
        assert_eq!(a.name, "pr1-invoice-api-gateway-dev");
        let r = &a.routes[0];
        assert_eq!(r.function_name, "pr1-insert-invoice-dev");
        assert_eq!(
            r.integration_uri,
            "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:pr1-insert-invoice-dev:live/invocations"
        );
        assert!(a.routes.iter().all(|r| r.api_key_required));
    }
}
