//! The local API Gateway: serves a deployed REST API stage ([`DeployedApi`]) on
//! `http://127.0.0.1:<port>/<stage>/...`, invoking functions through the local Lambda runtime.
//!
//! It does what API Gateway does for a REST API with Lambda proxy integrations, in its order:
//! 1. route by the API's resources (literal segments before `{param}` before `{proxy+}`) and
//!    methods (`ANY` last); no match is `MISSING_AUTHENTICATION_TOKEN` (API Gateway answers 403
//!    "Missing Authentication Token" for unknown paths and methods alike);
//! 2. `apiKeyRequired`: `x-api-key` must be an enabled key of a usage plan bound to the stage,
//!    else `INVALID_API_KEY` (403);
//! 3. the usage plan's throttle (token bucket: rate, burst) and quota (per UTC day, week or
//!    month), then the stage's method throttle: `THROTTLED` / `QUOTA_EXCEEDED` (429);
//! 4. required query parameters and headers, when the method's request validator validates
//!    parameters: `BAD_REQUEST_PARAMETERS` (400);
//! 5. the proxy event (payload v1: headers and multi-value headers, query parameters, path
//!    parameters, request context with stage, request id, identity with source IP and API key);
//! 6. the function's answer mapped back (status, headers, multi-value headers, base64 bodies
//!    decoded when the client accepts a binary media type); a function error, crash or
//!    malformed answer is 502, an integration slower than its timeout (29 s unless the
//!    integration says otherwise) is 504 `INTEGRATION_TIMEOUT`.
//!
//! Errors the gateway raises itself (a `GatewayError`) are rendered through the API's gateway
//! responses (status, headers, `application/json` template), falling back to
//! `DEFAULT_4XX`/`DEFAULT_5XX` and then to API Gateway's own `{"message": ...}`. Every request gets an access log line in the
//! stage's format, sent to [`AccessLog`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::deployed::{DeployedApi, Integration, Route};
use super::http::{self, Request, Response};
use super::runtime::{InvokeOutcome, LocalLambda, civil_from_days, request_id};

/// API Gateway's payload limit for REST APIs.
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;

/// What the gateway serves: the API stage and the runtime running the functions it invokes.
/// Swapped as a whole when a new deployment is picked up.
pub struct Served {
    pub api: DeployedApi,
    pub lambda: LocalLambda,
}

/// One access log line, already formatted in the stage's format, plus a short summary for the
/// terminal.
#[derive(Debug, Clone)]
pub struct AccessLog {
    pub line: String,
    pub summary: String,
}

/// The gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    served: RwLock<Arc<Served>>,
    limits: Mutex<Limits>,
    access: Option<mpsc::UnboundedSender<AccessLog>>,
    account_id: String,
    host: String,
}

impl Gateway {
    /// `host` is what clients address (`127.0.0.1:3000`), used for `Host`-less requests and
    /// the request context's domain name. Access log lines go to `access` when given.
    pub fn new(
        served: Served,
        account_id: impl Into<String>,
        host: impl Into<String>,
        access: Option<mpsc::UnboundedSender<AccessLog>>,
    ) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                served: RwLock::new(Arc::new(served)),
                limits: Mutex::new(Limits::default()),
                access,
                account_id: account_id.into(),
                host: host.into(),
            }),
        }
    }

    /// The API and runtime served now.
    pub fn served(&self) -> Arc<Served> {
        self.inner
            .served
            .read()
            .expect("gateway state lock")
            .clone()
    }

    /// Serves `served` from now on and returns the previous one (the caller shuts its runtime
    /// down once in-flight requests are done with it). Rate limit state is kept for the same
    /// usage plans, as API Gateway keeps counting across deployments.
    pub fn replace(&self, served: Served) -> Arc<Served> {
        let mut guard = self.inner.served.write().expect("gateway state lock");
        std::mem::replace(&mut *guard, Arc::new(served))
    }

    /// Accepts connections until `shutdown` turns true.
    pub async fn serve(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let gw = self.clone();
                    connections.spawn(http::serve_connection(stream, move |req| {
                        let gw = gw.clone();
                        async move { gw.handle(req, peer.ip()).await }
                    }));
                }
                _ = shutdown.changed() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    }

    /// Answers one request as API Gateway would.
    pub async fn handle(&self, req: Request, peer: IpAddr) -> Response {
        let started = Instant::now();
        let served = self.served();
        let mut context = RequestContext::new(&req, peer);
        let mut response = match self.dispatch(&served, &req, &mut context).await {
            Ok(response) => response,
            Err(e) => e.render(&served.api, &mut context),
        };
        response
            .headers
            .push(("x-amzn-RequestId".into(), context.request_id.clone()));
        context.status = response.status;
        context.response_length = response.body.len();
        if let Some(tx) = &self.inner.access {
            let format = served
                .api
                .access_log
                .as_ref()
                .map(|(_, f)| f.as_str())
                .unwrap_or(DEFAULT_LOG_FORMAT);
            let line = render_access_log(format, &context, &served.api, started.elapsed());
            let summary = format!(
                "{} {} {} {} ms",
                context.method,
                context.path,
                context.status,
                started.elapsed().as_millis()
            );
            let _ = tx.send(AccessLog { line, summary });
        }
        response
    }

    /// The steps of the module docs, in their order; the first that refuses the request
    /// decides the answer.
    async fn dispatch(
        &self,
        served: &Served,
        req: &Request,
        context: &mut RequestContext,
    ) -> Result<Response, GatewayError> {
        let api = &served.api;
        let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
        // Another stage, no stage, no such resource or no such method: API Gateway answers all
        // of them alike.
        let (route, path_params) = strip_stage(path, &api.stage)
            .and_then(|rest| find_route(&api.routes, rest, &req.method))
            .ok_or(GatewayError::MissingAuthenticationToken)?;
        context.resource_path = route.path.clone();

        // API keys are checked whenever the client sends one, as API Gateway does, so usage
        // plans count them; required or not decides whether a missing key is an error.
        let key_value = req.header("x-api-key");
        let key = key_value.and_then(|v| usable_key(api, v));
        if let Some((key_id, _)) = &key {
            context.api_key_id = key_id.clone();
        }
        if route.api_key_required && key.is_none() {
            return Err(GatewayError::InvalidApiKey);
        }
        let plan_key = key.as_ref().filter(|_| route.api_key_required);
        self.inner.limits.lock().expect("limits lock").admit(
            api,
            plan_key,
            Instant::now(),
            epoch_ms() / 86_400_000,
        )?;

        let query = parse_query(query);
        validate(route, req, &query)?;

        match &route.integration {
            Integration::Mock { status, headers } => Ok(Response {
                status: *status,
                headers: headers.clone(),
                body: Vec::new(),
            }),
            Integration::Unsupported(what) => Err(GatewayError::ApiConfiguration(format!(
                "the local gateway cannot run a {what} integration"
            ))),
            Integration::Lambda {
                function, timeout, ..
            } => {
                let event = proxy_event(&EventInput {
                    api,
                    route,
                    req,
                    path_params: &path_params,
                    query: &query,
                    context,
                    api_key: key_value.filter(|_| key.is_some()),
                    account_id: &self.inner.account_id,
                    host: &self.inner.host,
                });
                invoke_lambda(served, function, *timeout, event, req, context).await
            }
        }
    }
}

/// Step 4: required query parameters and headers, when the method's request validator
/// validates parameters; then API Gateway's payload limit.
fn validate(route: &Route, req: &Request, query: &[(String, String)]) -> Result<(), GatewayError> {
    if route.validate_params {
        let mut missing: Vec<String> = route
            .required_query
            .iter()
            .filter(|q| !query.iter().any(|(k, v)| k == *q && !v.is_empty()))
            .cloned()
            .collect();
        missing.extend(
            route
                .required_headers
                .iter()
                .filter(|h| req.header(h).is_none())
                .cloned(),
        );
        if !missing.is_empty() {
            return Err(GatewayError::BadRequestParameters(missing));
        }
    }
    if req.body.len() > MAX_REQUEST_BODY {
        return Err(GatewayError::RequestTooLarge);
    }
    Ok(())
}

/// Steps 5 and 6 for a Lambda proxy integration: invokes `function` with `event` within the
/// integration's timeout and maps its answer back.
async fn invoke_lambda(
    served: &Served,
    function: &str,
    timeout: Duration,
    event: Value,
    req: &Request,
    context: &mut RequestContext,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let invoked = tokio::time::timeout(timeout, served.lambda.invoke(function, event)).await;
    context.integration_latency = started.elapsed().as_millis().to_string();
    let invoked = match invoked {
        Err(_) => {
            context.integration_status = String::new();
            return Err(GatewayError::IntegrationTimeout);
        }
        Ok(Err(e)) => return Err(GatewayError::IntegrationFailure(e.to_string())),
        Ok(Ok(i)) => i,
    };
    // Lambda answered 200, with X-Amz-Function-Error or not: API Gateway gives 502 for a
    // function error.
    context.integration_status = "200".into();
    match &invoked.outcome {
        InvokeOutcome::Ok(v) => {
            proxy_response(v, req.header("accept"), &served.api.binary_media_types).map_err(|why| {
                tracing::warn!("{function}: malformed Lambda proxy response: {why}");
                GatewayError::BadGateway
            })
        }
        other => {
            let (payload, _) = other.invoke_payload(&invoked.request_id);
            tracing::warn!("{function}: invocation failed: {payload}");
            Err(GatewayError::BadGateway)
        }
    }
}

/// The request's facts that access logs and gateway responses refer to (`$context.*`).
struct RequestContext {
    request_id: String,
    started_epoch_ms: u64,
    source_ip: String,
    method: String,
    path: String,
    resource_path: String,
    api_key_id: String,
    status: u16,
    integration_status: String,
    integration_latency: String,
    error_message: String,
    response_length: usize,
}

impl RequestContext {
    fn new(req: &Request, peer: IpAddr) -> RequestContext {
        RequestContext {
            request_id: request_id(),
            started_epoch_ms: epoch_ms(),
            source_ip: peer.to_string(),
            method: req.method.clone(),
            path: req.path.split('?').next().unwrap_or("/").to_string(),
            resource_path: String::new(),
            api_key_id: String::new(),
            status: 0,
            integration_status: String::new(),
            integration_latency: String::new(),
            error_message: String::new(),
            response_length: 0,
        }
    }
}

/// The usage plans' and stage's rate limit state.
#[derive(Default)]
struct Limits {
    buckets: HashMap<String, TokenBucket>,
    /// Per plan and key: (period window, requests counted in it).
    quota: HashMap<String, (u64, u64)>,
}

impl Limits {
    /// Step 3: the throttle and quota of each usage plan of `key` (id and plan indexes, given
    /// only when the method requires a key), then the stage's method throttle. `day` is the
    /// UTC day number, for quota windows.
    fn admit(
        &mut self,
        api: &DeployedApi,
        key: Option<&(String, Vec<usize>)>,
        now: Instant,
        day: u64,
    ) -> Result<(), GatewayError> {
        if let Some((key_id, plans)) = key {
            for plan in plans {
                let plan = &api.usage_plans[*plan];
                if let Some((rate, burst)) = plan.throttle
                    && !self.take(format!("plan:{}:{key_id}", plan.id), rate, burst, now)
                {
                    return Err(GatewayError::Throttled);
                }
                if let Some((limit, period)) = &plan.quota {
                    let window = quota_window(period, day);
                    let used = self
                        .quota
                        .entry(format!("{}:{key_id}", plan.id))
                        .or_insert((window, 0));
                    if used.0 != window {
                        *used = (window, 0);
                    }
                    if used.1 >= *limit {
                        return Err(GatewayError::QuotaExceeded);
                    }
                    used.1 += 1;
                }
            }
        }
        if let Some((rate, burst)) = api.stage_throttle
            && !self.take("stage".into(), rate, burst, now)
        {
            return Err(GatewayError::Throttled);
        }
        Ok(())
    }

    /// Takes a token from the bucket called `name`, creating it full.
    fn take(&mut self, name: String, rate: f64, burst: u32, now: Instant) -> bool {
        self.buckets
            .entry(name)
            .or_insert_with(|| TokenBucket::new(burst, now))
            .take(rate, burst, now)
    }
}

/// API Gateway's throttling model: a bucket of `burst` tokens refilled at `rate` per second.
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes a token if there is one. The limits are passed each time: a reloaded deployment
    /// may have changed them.
    fn take(&mut self, rate: f64, burst: u32, now: Instant) -> bool {
        let capacity = f64::from(burst.max(1));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The quota window a UTC day falls in: the day, the week (weeks start on Monday, as usage
/// plan quotas with no offset do) or the month.
fn quota_window(period: &str, day: u64) -> u64 {
    match period {
        // 1970-01-01 was a Thursday: shift so that windows turn over on Mondays.
        "WEEK" => (day + 3) / 7,
        "MONTH" => {
            let (y, m, _) = civil_from_days(day as i64);
            y as u64 * 12 + u64::from(m)
        }
        _ => day,
    }
}

/// The key with this value if it is enabled and in a usage plan of the stage, with the
/// indexes of those plans.
fn usable_key(api: &DeployedApi, value: &str) -> Option<(String, Vec<usize>)> {
    let key = api.keys.iter().find(|k| k.enabled && k.value == value)?;
    let plans: Vec<usize> = api
        .usage_plans
        .iter()
        .enumerate()
        .filter(|(_, p)| p.key_ids.contains(&key.id))
        .map(|(i, _)| i)
        .collect();
    (!plans.is_empty()).then(|| (key.id.clone(), plans))
}

/// `/v1/list-invoices` -> `/list-invoices` for stage `v1`.
fn strip_stage<'a>(path: &'a str, stage: &str) -> Option<&'a str> {
    let rest = path.strip_prefix('/')?.strip_prefix(stage)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// The route serving `method` on `path` (stage stripped) and its path parameters. Literal
/// segments win over `{param}`, which wins over `{proxy+}`; an exact method over `ANY`.
pub fn find_route<'a>(
    routes: &'a [Route],
    path: &str,
    method: &str,
) -> Option<(&'a Route, BTreeMap<String, String>)> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    type Candidate<'r> = ((u32, u32), &'r Route, BTreeMap<String, String>);
    let mut best: Option<Candidate<'a>> = None;
    for route in routes {
        let method_rank = if route.method.eq_ignore_ascii_case(method) {
            1
        } else if route.method == "ANY" {
            0
        } else {
            continue;
        };
        let Some((specificity, params)) = match_template(&route.path, &segments) else {
            continue;
        };
        let rank = (specificity, method_rank);
        if best.as_ref().is_none_or(|(r, _, _)| rank > *r) {
            best = Some((rank, route, params));
        }
    }
    best.map(|(_, r, p)| (r, p))
}

/// Matches a resource path template against request segments; the score orders matches by
/// how literal they are.
fn match_template(template: &str, segments: &[&str]) -> Option<(u32, BTreeMap<String, String>)> {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let mut params = BTreeMap::new();
    let mut score = 0u32;
    for (i, part) in parts.iter().enumerate() {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix("+}")) {
            // Greedy: the rest of the path, at least one segment, and only as the last part.
            if i + 1 != parts.len() || segments.len() <= i {
                return None;
            }
            let rest: Vec<String> = segments[i..].iter().map(|s| percent_decode(s)).collect();
            params.insert(name.to_string(), rest.join("/"));
            return Some((score, params));
        }
        let seg = segments.get(i)?;
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            params.insert(name.to_string(), percent_decode(seg));
            score += 1;
        } else if *part == *seg {
            score += 2;
        } else {
            return None;
        }
    }
    (parts.len() == segments.len()).then_some((score * 2 + 1, params))
}

/// `%41` -> `A`; invalid escapes stay as they are. `+` is not a space in a path.
fn percent_decode(s: &str) -> String {
    urlencoding::decode(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// Query string pairs in order, decoded; `a` alone is `("a", "")`. A `+` is a space, as API
/// Gateway hands it to a proxy integration (`?sort=-+createdAt` arrives as `"- createdAt"`,
/// aws-cdk#19827) and as form-encoding clients (Python's `urlencode`) mean it; `%2B` is `+`.
fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode(&s.replace('+', " "));
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// `25/Nov/2026:19:52:06 +0000`, API Gateway's `requestTime`.
fn request_time(epoch_ms: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = epoch_ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

struct EventInput<'a> {
    api: &'a DeployedApi,
    route: &'a Route,
    req: &'a Request,
    path_params: &'a BTreeMap<String, String>,
    query: &'a [(String, String)],
    context: &'a RequestContext,
    api_key: Option<&'a str>,
    account_id: &'a str,
    host: &'a str,
}

/// Whether a content type is one of the API's binary media types (`image/*`, `*/*` allowed).
fn is_binary(content_type: Option<&str>, binary_media_types: &[String]) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    binary_media_types.iter().any(|t| {
        let t = t.to_ascii_lowercase();
        t == ct
            || t == "*/*"
            || t.strip_suffix("/*")
                .is_some_and(|major| ct.split('/').next() == Some(major))
    })
}

/// The Lambda proxy event (payload format 1.0) API Gateway sends for this request.
fn proxy_event(e: &EventInput<'_>) -> Value {
    let mut headers = Map::new();
    let mut multi_headers: Map<String, Value> = Map::new();
    for (name, value) in &e.req.headers {
        headers.insert(name.clone(), Value::String(value.clone()));
        match multi_headers.get_mut(name) {
            Some(Value::Array(values)) => values.push(Value::String(value.clone())),
            _ => {
                multi_headers.insert(name.clone(), json!([value]));
            }
        }
    }
    let mut query = Map::new();
    let mut multi_query: Map<String, Value> = Map::new();
    for (k, v) in e.query {
        query.insert(k.clone(), Value::String(v.clone()));
        match multi_query.get_mut(k) {
            Some(Value::Array(values)) => values.push(Value::String(v.clone())),
            _ => {
                multi_query.insert(k.clone(), json!([v]));
            }
        }
    }
    let none_if_empty = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    let (body, base64) = if e.req.body.is_empty() {
        (Value::Null, false)
    } else if is_binary(e.req.header("content-type"), &e.api.binary_media_types) {
        (
            Value::String(base64::engine::general_purpose::STANDARD.encode(&e.req.body)),
            true,
        )
    } else {
        (
            Value::String(String::from_utf8_lossy(&e.req.body).into_owned()),
            false,
        )
    };
    let path = strip_stage(&e.context.path, &e.api.stage).unwrap_or("/");
    let host = e.req.header("host").unwrap_or(e.host);
    json!({
        "resource": e.route.path,
        "path": path,
        "httpMethod": e.req.method,
        "headers": none_if_empty(headers),
        "multiValueHeaders": none_if_empty(multi_headers),
        "queryStringParameters": none_if_empty(query),
        "multiValueQueryStringParameters": none_if_empty(multi_query),
        "pathParameters": if e.path_params.is_empty() { Value::Null } else { json!(e.path_params) },
        "stageVariables": Value::Null,
        "requestContext": {
            "accountId": e.account_id,
            "apiId": e.api.id,
            "resourceId": e.route.resource_id,
            "resourcePath": e.route.path,
            "httpMethod": e.req.method,
            "extendedRequestId": e.context.request_id,
            "requestId": e.context.request_id,
            "requestTime": request_time(e.context.started_epoch_ms),
            "requestTimeEpoch": e.context.started_epoch_ms,
            "path": e.context.path,
            "protocol": "HTTP/1.1",
            "stage": e.api.stage,
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or(host),
            "identity": {
                "accessKey": null,
                "accountId": null,
                "apiKey": e.api_key,
                "apiKeyId": if e.api_key.is_some() { Value::String(e.context.api_key_id.clone()) } else { Value::Null },
                "caller": null,
                "cognitoAuthenticationProvider": null,
                "cognitoAuthenticationType": null,
                "cognitoIdentityId": null,
                "cognitoIdentityPoolId": null,
                "principalOrgId": null,
                "sourceIp": e.context.source_ip,
                "user": null,
                "userAgent": e.req.header("user-agent"),
                "userArn": null,
            },
        },
        "body": body,
        "isBase64Encoded": base64,
    })
}

/// Maps a Lambda proxy response to HTTP, or says why it is malformed (API Gateway then
/// answers 502). A base64 body is decoded only when the client's `Accept` names a binary
/// media type of the API, as API Gateway does; otherwise the client gets the base64 text.
fn proxy_response(
    v: &Value,
    accept: Option<&str>,
    binary_media_types: &[String],
) -> Result<Response, String> {
    let obj = v.as_object().ok_or("the response is not a JSON object")?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "statusCode" | "headers" | "multiValueHeaders" | "body" | "isBase64Encoded"
        ) {
            return Err(format!("unexpected field `{key}`"));
        }
    }
    let status = match obj.get("statusCode") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        None | Some(Value::Null) => Some(200),
        _ => None,
    }
    .filter(|s| (100..=599).contains(s))
    .ok_or("`statusCode` is not an HTTP status")? as u16;
    let mut headers: Vec<(String, String)> = Vec::new();
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    if let Some(h) = obj.get("headers").filter(|h| !h.is_null()) {
        for (k, v) in h.as_object().ok_or("`headers` is not an object")? {
            headers.push((
                k.clone(),
                scalar(v).ok_or_else(|| format!("header `{k}` is not a string"))?,
            ));
        }
    }
    if let Some(h) = obj.get("multiValueHeaders").filter(|h| !h.is_null()) {
        for (k, vs) in h
            .as_object()
            .ok_or("`multiValueHeaders` is not an object")?
        {
            // A name in both maps: the multi-value list wins, as in API Gateway.
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
            for v in vs
                .as_array()
                .ok_or_else(|| format!("`multiValueHeaders.{k}` is not a list"))?
            {
                headers.push((
                    k.clone(),
                    scalar(v).ok_or_else(|| format!("header `{k}` is not a string"))?,
                ));
            }
        }
    }
    let base64 = match obj.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        _ => return Err("`isBase64Encoded` is not a boolean".into()),
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => {
            let accept_binary = accept.is_some_and(|a| {
                a.split(',')
                    .next()
                    .is_some_and(|first| is_binary(Some(first), binary_media_types))
            });
            if base64 && accept_binary {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| format!("`body` is not valid base64: {e}"))?
            } else {
                s.clone().into_bytes()
            }
        }
        Some(_) => return Err("`body` is not a string".into()),
    };
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Fallback when a gateway response type is not configured (its family's default).
fn family_default(status: u16) -> &'static str {
    if status >= 500 {
        "DEFAULT_5XX"
    } else {
        "DEFAULT_4XX"
    }
}

/// An error the gateway raises itself: the gateway response type it is rendered through, its
/// status unless the API's gateway response overrides it, and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GatewayError {
    MissingAuthenticationToken,
    InvalidApiKey,
    Throttled,
    QuotaExceeded,
    /// The required parameters that are missing.
    BadRequestParameters(Vec<String>),
    RequestTooLarge,
    /// Why the integration cannot run.
    ApiConfiguration(String),
    IntegrationTimeout,
    /// Why the invocation failed (for the access log; the client sees API Gateway's message).
    IntegrationFailure(String),
    /// A function error, crash or malformed proxy response.
    BadGateway,
}

impl GatewayError {
    /// The gateway response type (`$context.error.responseType`).
    fn response_type(&self) -> &'static str {
        match self {
            GatewayError::MissingAuthenticationToken => "MISSING_AUTHENTICATION_TOKEN",
            GatewayError::InvalidApiKey => "INVALID_API_KEY",
            GatewayError::Throttled => "THROTTLED",
            GatewayError::QuotaExceeded => "QUOTA_EXCEEDED",
            GatewayError::BadRequestParameters(_) => "BAD_REQUEST_PARAMETERS",
            GatewayError::RequestTooLarge => "REQUEST_TOO_LARGE",
            GatewayError::ApiConfiguration(_) => "API_CONFIGURATION_ERROR",
            GatewayError::IntegrationTimeout => "INTEGRATION_TIMEOUT",
            GatewayError::IntegrationFailure(_) => "INTEGRATION_FAILURE",
            GatewayError::BadGateway => "DEFAULT_5XX",
        }
    }

    /// The status API Gateway answers with when no gateway response sets one.
    fn status(&self) -> u16 {
        match self {
            GatewayError::MissingAuthenticationToken | GatewayError::InvalidApiKey => 403,
            GatewayError::Throttled | GatewayError::QuotaExceeded => 429,
            GatewayError::BadRequestParameters(_) => 400,
            GatewayError::RequestTooLarge => 413,
            GatewayError::ApiConfiguration(_) | GatewayError::IntegrationFailure(_) => 500,
            GatewayError::IntegrationTimeout => 504,
            GatewayError::BadGateway => 502,
        }
    }

    /// `$context.error.message`.
    fn message(&self) -> String {
        match self {
            GatewayError::MissingAuthenticationToken => "Missing Authentication Token".into(),
            GatewayError::InvalidApiKey => "Forbidden".into(),
            GatewayError::Throttled => "Too Many Requests".into(),
            GatewayError::QuotaExceeded => "Limit Exceeded".into(),
            GatewayError::BadRequestParameters(_) => self.validation(),
            GatewayError::RequestTooLarge => "Request Too Long".into(),
            GatewayError::ApiConfiguration(why) => why.clone(),
            GatewayError::IntegrationTimeout => "Endpoint request timed out".into(),
            GatewayError::IntegrationFailure(_) | GatewayError::BadGateway => {
                "Internal server error".into()
            }
        }
    }

    /// `$context.error.validationErrorString`: empty unless validation refused the request.
    fn validation(&self) -> String {
        match self {
            GatewayError::BadRequestParameters(missing) => format!(
                "Missing required request parameters: [{}]",
                missing.join(", ")
            ),
            _ => String::new(),
        }
    }

    /// What the access log's `$context.error.message` says: the message, with the cause of an
    /// integration failure.
    fn log_message(&self) -> String {
        match self {
            GatewayError::IntegrationFailure(why) => format!("Internal server error ({why})"),
            _ => self.message(),
        }
    }

    /// The `x-amzn-ErrorType` API Gateway sends with its own errors.
    fn error_type(&self) -> &'static str {
        match self {
            GatewayError::MissingAuthenticationToken => "IncompleteSignatureException",
            GatewayError::InvalidApiKey => "ForbiddenException",
            GatewayError::Throttled | GatewayError::QuotaExceeded => "TooManyRequestsException",
            GatewayError::BadRequestParameters(_) => "BadRequestException",
            GatewayError::RequestTooLarge => "RequestTooLongException",
            _ => "InternalServerErrorException",
        }
    }

    /// Renders the error through the API's gateway responses: the type's own, else its
    /// family's default, else API Gateway's `{"message": ...}`.
    fn render(&self, api: &DeployedApi, context: &mut RequestContext) -> Response {
        let kind = self.response_type();
        let message = self.message();
        if context.error_message.is_empty() {
            context.error_message = self.log_message();
        }
        let specific = api.gateway_responses.get(kind);
        let family = api.gateway_responses.get(family_default(self.status()));
        let status = specific.and_then(|g| g.status).unwrap_or(self.status());
        let chosen = specific.or(family);
        let template = chosen.and_then(|g| g.template.clone());
        let mut headers = chosen.map(|g| g.headers.clone()).unwrap_or_default();
        let body = match template {
            Some(t) => t
                .replace(
                    "$context.error.messageString",
                    &Value::String(message.clone()).to_string(),
                )
                .replace("$context.error.validationErrorString", &self.validation())
                .replace("$context.error.message", &message)
                .replace("$context.error.responseType", kind)
                .replace("$context.requestId", &context.request_id),
            None => json!({ "message": message }).to_string(),
        };
        headers.push(("Content-Type".into(), "application/json".into()));
        headers.push(("x-amzn-ErrorType".into(), self.error_type().into()));
        Response {
            status,
            headers,
            body: body.into_bytes(),
        }
    }
}

/// Used when the stage has no access log settings: the common log format API Gateway
/// suggests.
const DEFAULT_LOG_FORMAT: &str = "$context.identity.sourceIp - - [$context.requestTime] \"$context.httpMethod $context.resourcePath $context.protocol\" $context.status $context.responseLength $context.requestId";

/// Substitutes the `$context.*` variables of an access log format.
fn render_access_log(
    format: &str,
    ctx: &RequestContext,
    api: &DeployedApi,
    latency: Duration,
) -> String {
    let vars: [(&str, String); 17] = [
        ("$context.identity.sourceIp", ctx.source_ip.clone()),
        ("$context.identity.apiKeyId", ctx.api_key_id.clone()),
        (
            "$context.integrationLatency",
            ctx.integration_latency.clone(),
        ),
        ("$context.integrationStatus", ctx.integration_status.clone()),
        (
            "$context.requestTimeEpoch",
            ctx.started_epoch_ms.to_string(),
        ),
        ("$context.requestTime", request_time(ctx.started_epoch_ms)),
        ("$context.requestId", ctx.request_id.clone()),
        ("$context.extendedRequestId", ctx.request_id.clone()),
        ("$context.httpMethod", ctx.method.clone()),
        ("$context.resourcePath", ctx.resource_path.clone()),
        ("$context.responseLength", ctx.response_length.to_string()),
        ("$context.responseLatency", latency.as_millis().to_string()),
        ("$context.protocol", "HTTP/1.1".into()),
        ("$context.status", ctx.status.to_string()),
        ("$context.stage", api.stage.clone()),
        ("$context.apiId", api.id.clone()),
        ("$context.error.message", ctx.error_message.clone()),
    ];
    let mut out = format.to_string();
    // Longest names first, so `$context.requestTimeEpoch` is not eaten by `$context.requestTime`
    // (the array above lists the longer of each such pair first).
    for (name, value) in &vars {
        // Inside a JSON format a value must stay a valid JSON string body.
        let escaped = Value::String(value.clone()).to_string();
        out = out.replace(name, &escaped[1..escaped.len() - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::deployed::{ApiKey, GatewayResponse, UsagePlan};

    fn route(path: &str, method: &str) -> Route {
        Route {
            resource_id: format!("id{path}"),
            path: path.into(),
            method: method.into(),
            api_key_required: true,
            required_query: vec![],
            required_headers: vec![],
            validate_params: false,
            integration: Integration::Mock {
                status: 200,
                headers: vec![],
            },
        }
    }

    #[test]
    fn routes_prefer_literals_then_params_then_greedy_and_exact_methods() {
        let routes = vec![
            route("/{proxy+}", "ANY"),
            route("/items/{id}", "GET"),
            route("/items/special", "GET"),
            route("/items/{id}", "ANY"),
            route("/", "GET"),
        ];
        let (r, p) = find_route(&routes, "/items/special", "GET").unwrap();
        assert_eq!(r.path, "/items/special");
        assert!(p.is_empty());
        let (r, p) = find_route(&routes, "/items/a%20b", "GET").unwrap();
        assert_eq!((r.path.as_str(), r.method.as_str()), ("/items/{id}", "GET"));
        assert_eq!(p["id"], "a b");
        let (r, _) = find_route(&routes, "/items/x", "DELETE").unwrap();
        assert_eq!((r.path.as_str(), r.method.as_str()), ("/items/{id}", "ANY"));
        let (r, p) = find_route(&routes, "/a/b/c", "POST").unwrap();
        assert_eq!(r.path, "/{proxy+}");
        assert_eq!(p["proxy"], "a/b/c");
        assert_eq!(find_route(&routes, "/", "GET").unwrap().0.path, "/");
        let only = vec![route("/list-invoices", "GET")];
        assert!(find_route(&only, "/list-invoices", "POST").is_none());
        assert!(find_route(&only, "/list-invoices/x", "GET").is_none());
        assert!(find_route(&only, "/", "GET").is_none());
    }

    #[test]
    fn stage_prefix_is_required() {
        assert_eq!(
            strip_stage("/v1/list-invoices", "v1"),
            Some("/list-invoices")
        );
        assert_eq!(strip_stage("/v1", "v1"), Some("/"));
        assert_eq!(strip_stage("/v10/x", "v1"), None);
        assert_eq!(strip_stage("/list-invoices", "v1"), None);
    }

    #[test]
    fn query_plus_is_a_space_and_escapes_decode() {
        assert_eq!(
            parse_query("q=-+createdAt&id=a%2Bb&x&n%20m=%E2%82%AC"),
            [
                ("q".to_string(), "- createdAt".to_string()),
                ("id".to_string(), "a+b".to_string()),
                ("x".to_string(), String::new()),
                ("n m".to_string(), "€".to_string()),
            ]
        );
    }

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, t0);
        assert!((0..3).all(|_| b.take(2.0, 3, t0)));
        assert!(!b.take(2.0, 3, t0));
        assert!(b.take(2.0, 3, t0 + Duration::from_millis(500)));
        assert!(!b.take(2.0, 3, t0 + Duration::from_millis(500)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(2.0, 3, later)));
        assert!(!b.take(2.0, 3, later));
    }

    #[test]
    fn quota_windows_turn_over_on_day_monday_and_month() {
        // 2026-11-23 is a Monday: day 20_780.
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_ne!(quota_window("WEEK", 20_779), quota_window("WEEK", 20_780));
        assert_eq!(quota_window("WEEK", 20_780), quota_window("WEEK", 20_786));
        assert_ne!(quota_window("DAY", 20_780), quota_window("DAY", 20_781));
        // 2026-11-30 and 2026-12-01.
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        assert_ne!(quota_window("MONTH", 20_787), quota_window("MONTH", 20_788));
        assert_eq!(quota_window("MONTH", 20_780), quota_window("MONTH", 20_787));
    }

    #[test]
    fn request_time_has_api_gateway_shape() {
        // 2026-11-25T19:52:06Z
        assert_eq!(
            request_time(1_795_636_326_000),
            "25/Nov/2026:19:52:06 +0000"
        );
    }

    fn api() -> DeployedApi {
        DeployedApi {
            id: "abc123".into(),
            name: "api".into(),
            stage: "v1".into(),
            deployment_id: "d1".into(),
            routes: vec![],
            gateway_responses: BTreeMap::from([
                (
                    "INVALID_API_KEY".into(),
                    GatewayResponse {
                        status: Some(403),
                        headers: vec![("Access-Control-Allow-Origin".into(), "*".into())],
                        template: Some(
                            r#"{"error":{"code":"forbidden","message":$context.error.messageString}}"#
                                .into(),
                        ),
                    },
                ),
                (
                    "DEFAULT_5XX".into(),
                    GatewayResponse {
                        status: None,
                        headers: vec![],
                        template: Some(r#"{"error":{"code":"internal_error"}}"#.into()),
                    },
                ),
            ]),
            binary_media_types: vec!["application/pdf".into()],
            access_log: None,
            stage_throttle: None,
            keys: vec![
                ApiKey {
                    id: "k1".into(),
                    value: "secret".into(),
                    enabled: true,
                },
                ApiKey {
                    id: "k2".into(),
                    value: "off".into(),
                    enabled: false,
                },
                ApiKey {
                    id: "k3".into(),
                    value: "planless".into(),
                    enabled: true,
                },
            ],
            usage_plans: vec![UsagePlan {
                id: "p1".into(),
                throttle: Some((1.0, 1)),
                quota: Some((5, "DAY".into())),
                key_ids: vec!["k1".into(), "k2".into()],
            }],
        }
    }

    fn ctx() -> RequestContext {
        RequestContext {
            request_id: "rid".into(),
            started_epoch_ms: 0,
            source_ip: "127.0.0.1".into(),
            method: "GET".into(),
            path: "/v1/x".into(),
            resource_path: "/x".into(),
            api_key_id: String::new(),
            status: 0,
            integration_status: String::new(),
            integration_latency: String::new(),
            error_message: String::new(),
            response_length: 0,
        }
    }

    #[test]
    fn only_enabled_keys_in_a_plan_of_the_stage_are_usable() {
        let api = api();
        assert_eq!(usable_key(&api, "secret"), Some(("k1".into(), vec![0])));
        assert_eq!(usable_key(&api, "off"), None);
        assert_eq!(usable_key(&api, "planless"), None);
        assert_eq!(usable_key(&api, "nope"), None);
    }

    #[test]
    fn limits_apply_the_plan_throttle_and_quota_then_the_stage_throttle() {
        let mut api = api();
        api.usage_plans[0].throttle = Some((1000.0, 2));
        api.usage_plans[0].quota = Some((2, "DAY".into()));
        let key = ("k1".to_string(), vec![0]);
        let mut limits = Limits::default();
        let now = Instant::now();
        assert_eq!(limits.admit(&api, Some(&key), now, 10), Ok(()));
        assert_eq!(limits.admit(&api, Some(&key), now, 10), Ok(()));
        // The bucket's two tokens are gone before the quota is looked at.
        assert_eq!(
            limits.admit(&api, Some(&key), now, 10),
            Err(GatewayError::Throttled)
        );
        let later = now + Duration::from_secs(1);
        assert_eq!(
            limits.admit(&api, Some(&key), later, 10),
            Err(GatewayError::QuotaExceeded)
        );
        // A new day, a new quota window.
        assert_eq!(limits.admit(&api, Some(&key), later, 11), Ok(()));
        // Without a key (the method requires none) only the stage throttle counts.
        api.stage_throttle = Some((0.0, 1));
        assert_eq!(limits.admit(&api, None, later, 11), Ok(()));
        assert_eq!(
            limits.admit(&api, None, later, 11),
            Err(GatewayError::Throttled)
        );
    }

    #[test]
    fn gateway_errors_use_the_api_gateway_responses() {
        let api = api();
        let r = GatewayError::InvalidApiKey.render(&api, &mut ctx());
        assert_eq!(r.status, 403);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["message"], "Forbidden");
        assert!(
            r.headers
                .contains(&("Access-Control-Allow-Origin".into(), "*".into()))
        );
        // Not configured: the family default, with the type's own status.
        let r = GatewayError::IntegrationTimeout.render(&api, &mut ctx());
        assert_eq!(r.status, 504);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
        // No family default either: API Gateway's own shape.
        let r = GatewayError::Throttled.render(&api, &mut ctx());
        assert_eq!(r.status, 429);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"message": "Too Many Requests"}));
    }

    #[test]
    fn proxy_responses_map_status_headers_and_bodies() {
        let bin = vec!["application/pdf".to_string()];
        let r = proxy_response(
            &json!({"statusCode": 201, "headers": {"A": "1", "Content-Type": "text/plain"},
                    "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "body": "hi"}),
            None,
            &bin,
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"hi");
        assert!(r.headers.contains(&("Set-Cookie".into(), "b=2".into())));
        assert!(r.headers.contains(&("A".into(), "1".into())));
        let pdf = json!({"statusCode": 200, "body": "JVBERg==", "isBase64Encoded": true});
        assert_eq!(
            proxy_response(&pdf, Some("application/pdf"), &bin)
                .unwrap()
                .body,
            b"%PDF"
        );
        assert_eq!(
            proxy_response(&pdf, Some("text/html"), &bin).unwrap().body,
            b"JVBERg=="
        );
        for bad in [
            json!("just a string"),
            json!({"statusCode": "abc"}),
            json!({"statusCode": 200, "body": {"a": 1}}),
            json!({"statusCode": 200, "extra": 1}),
            json!({"statusCode": 200, "headers": {"a": ["x"]}}),
        ] {
            assert!(proxy_response(&bad, None, &bin).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_log_lines_stay_valid_json() {
        let mut c = ctx();
        c.error_message = "say \"hi\"".into();
        c.status = 403;
        let line = render_access_log(
            r#"{"requestId":"$context.requestId","status":"$context.status","err":"$context.error.message","t":"$context.requestTimeEpoch"}"#,
            &c,
            &api(),
            Duration::from_millis(3),
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], "403");
        assert_eq!(v["err"], "say \"hi\"");
        assert_eq!(v["t"], "0");
    }

    #[test]
    fn binary_media_types_match_wildcards() {
        let t = vec!["image/*".to_string(), "application/pdf".to_string()];
        assert!(is_binary(Some("image/png"), &t));
        assert!(is_binary(Some("application/pdf; charset=binary"), &t));
        assert!(!is_binary(Some("application/json"), &t));
        assert!(!is_binary(None, &t));
    }
}
