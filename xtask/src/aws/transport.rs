//! HTTP-level decorators of the SDK's client: the API Gateway pacer and the benchmark's
//! added latency.
//!
//! Both sit below the interceptors, around each attempt, because that is where time can be
//! spent without blocking a thread (interceptor hooks are synchronous) and where AWS sees the
//! request.
//!
//! The pacer exists because API Gateway limits control-plane calls per account, not per
//! connection: the engine's parallelism would otherwise turn into 429s that the SDK retries
//! with a backoff far longer than a little pacing. The limits are AWS's documented defaults
//! (API Gateway quotas, "creating, deploying and managing an API"); the pacer applies to every
//! target, the emulator included, so the benchmark measures what AWS would cost. It is the one
//! place API Gateway calls are spaced: every caller of the client goes through it, and every
//! attempt (an SDK retry, or a provider's bounded retry of TooManyRequests) waits its turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::time::Instant;

/// One documented limit: at most one call every `interval`, with `burst` calls in hand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub interval: Duration,
    pub burst: u32,
}

/// API Gateway's account-level limits: all control-plane calls share 10 per second with a
/// burst of 40; a few operations have their own, much slower limit on top.
pub const API_GATEWAY_TOTAL: Limit = Limit {
    interval: Duration::from_millis(100),
    burst: 40,
};

/// CreateRestApi of an EDGE API (the default endpoint type): a pseudo-operation with its own,
/// slower limit, counted in the same cell as every other CreateRestApi.
pub const CREATE_EDGE_REST_API: &str = "CreateRestApi/EDGE";

/// The per-operation limits of API Gateway, by SDK operation name (and
/// [`CREATE_EDGE_REST_API`]).
pub fn api_gateway_limit(operation: &str) -> Option<Limit> {
    let every = |secs| Limit {
        interval: Duration::from_secs(secs),
        burst: 1,
    };
    match operation {
        "CreateRestApi" => Some(every(3)),
        CREATE_EDGE_REST_API => Some(every(30)),
        "CreateDeployment" => Some(every(5)),
        "DeleteRestApi" => Some(every(30)),
        "UpdateAccount" => Some(every(20)),
        _ => None,
    }
}

/// The cell an operation's own limit counts in: both kinds of CreateRestApi are one operation
/// to AWS, so after an EDGE create the next create of any type waits the EDGE interval.
fn cell_of(operation: &str) -> &str {
    match operation {
        CREATE_EDGE_REST_API => "CreateRestApi",
        op => op,
    }
}

/// The SDK operation of an API Gateway request, for the operations with their own limit.
/// API Gateway is a REST protocol: the method and path name the operation; a CreateRestApi's
/// body says whether it is an EDGE API (as it is when it names no endpoint type).
fn api_gateway_operation(method: &str, path: &str, body: Option<&[u8]>) -> Option<&'static str> {
    let parts: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_matches('/')
        .split('/')
        .collect();
    match (method, parts.as_slice()) {
        ("POST", ["restapis"]) if is_edge(body) => Some(CREATE_EDGE_REST_API),
        ("POST", ["restapis"]) => Some("CreateRestApi"),
        ("DELETE", ["restapis", _]) => Some("DeleteRestApi"),
        ("POST", ["restapis", _, "deployments"]) => Some("CreateDeployment"),
        ("PATCH", ["account"]) => Some("UpdateAccount"),
        _ => None,
    }
}

/// Whether a CreateRestApi body asks for an EDGE API. A body that cannot be read (streamed)
/// counts as EDGE: the stricter limit is the safe guess.
fn is_edge(body: Option<&[u8]>) -> bool {
    let Some(json) = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) else {
        return true;
    };
    match json
        .pointer("/endpointConfiguration/types")
        .and_then(|t| t.as_array())
    {
        None => true,
        Some(types) => types.iter().any(|t| t.as_str() == Some("EDGE")),
    }
}

/// A generic cell rate (the "theoretical arrival time" form of a token bucket): reserving a
/// slot returns how long to wait for it, and the slot is taken at once, so concurrent callers
/// queue in order instead of racing.
#[derive(Debug, Default)]
struct Cell {
    tat: Option<Instant>,
}

impl Cell {
    fn reserve(&mut self, limit: Limit, now: Instant) -> Instant {
        let tolerance = limit.interval * limit.burst.saturating_sub(1);
        let tat = self.tat.unwrap_or(now).max(now);
        let start = tat.checked_sub(tolerance).unwrap_or(now).max(now);
        self.tat = Some(tat.max(start) + limit.interval);
        start
    }
}

/// Paces one account's API Gateway calls to its documented limits.
#[derive(Debug, Default)]
pub struct Pacer {
    cells: Mutex<HashMap<&'static str, Cell>>,
}

impl Pacer {
    pub fn new() -> Arc<Pacer> {
        Arc::new(Pacer::default())
    }

    /// Forgets every call paced so far: the state of a new process, whose whole burst is in
    /// hand (the benchmark runs each phase as a command run would).
    pub fn refill(&self) {
        self.cells.lock().expect("pacer poisoned").clear();
    }

    /// When a call of `operation` (None: one without its own limit) may be sent.
    fn reserve(&self, operation: Option<&'static str>) -> Instant {
        let now = Instant::now();
        let mut cells = self.cells.lock().expect("pacer poisoned");
        let own = operation
            .and_then(|op| Some((cell_of(op), api_gateway_limit(op)?)))
            .map(|(cell, limit)| cells.entry(cell).or_default().reserve(limit, now))
            .unwrap_or(now);
        // The total's slot is taken now even for a call that waits for its own: a slot taken
        // in the future would hold up every call behind it.
        let total = cells
            .entry("*")
            .or_default()
            .reserve(API_GATEWAY_TOTAL, now);
        own.max(total)
    }
}

/// The API Gateway client's HTTP client: each attempt waits for its slot.
pub fn paced(inner: SharedHttpClient, pacer: Arc<Pacer>) -> SharedHttpClient {
    SharedHttpClient::new(Decorated {
        inner,
        layer: Layer::Pace(pacer),
    })
}

/// Every attempt takes `latency` longer, as if AWS were that far away (the engine benchmark).
pub fn delayed(inner: SharedHttpClient, latency: Duration) -> SharedHttpClient {
    SharedHttpClient::new(Decorated {
        inner,
        layer: Layer::Latency(latency),
    })
}

#[derive(Debug, Clone)]
enum Layer {
    Pace(Arc<Pacer>),
    Latency(Duration),
}

#[derive(Debug)]
struct Decorated {
    inner: SharedHttpClient,
    layer: Layer,
}

impl HttpClient for Decorated {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(DecoratedConnector {
            inner: self.inner.http_connector(settings, components),
            layer: self.layer.clone(),
        })
    }
}

#[derive(Debug)]
struct DecoratedConnector {
    inner: SharedHttpConnector,
    layer: Layer,
}

impl HttpConnector for DecoratedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        match &self.layer {
            Layer::Pace(pacer) => {
                let path = request
                    .uri()
                    .split_once("://")
                    .map(|(_, rest)| rest.find('/').map(|i| &rest[i..]).unwrap_or("/"))
                    .unwrap_or(request.uri());
                let operation =
                    api_gateway_operation(request.method(), path, request.body().bytes());
                let at = pacer.reserve(operation);
                HttpConnectorFuture::new(async move {
                    if at > Instant::now() {
                        tracing::info!(operation, wait = ?(at - Instant::now()), "pacing an API Gateway call to the account's quota");
                        tokio::time::sleep_until(at).await;
                    }
                    inner.call(request).await
                })
            }
            Layer::Latency(latency) => {
                let latency = *latency;
                HttpConnectorFuture::new(async move {
                    tokio::time::sleep(latency).await;
                    inner.call(request).await
                })
            }
        }
    }
}

/// How many of `attempts` (operation, when AWS saw it) AWS would have throttled under the
/// API Gateway limits above. `slack` absorbs timer jitter between the pacer and the clock that
/// recorded the attempts.
pub fn api_gateway_throttled(attempts: &[(String, Instant)], slack: Duration) -> usize {
    let mut sorted: Vec<&(String, Instant)> = attempts.iter().collect();
    sorted.sort_by_key(|(_, t)| *t);
    let mut cells: HashMap<&str, Cell> = HashMap::new();
    let mut throttled = 0;
    for (op, t) in sorted {
        // A throttled attempt uses no capacity, so a cell only moves when AWS would accept.
        let mut limits = vec![("*", API_GATEWAY_TOTAL)];
        if let Some(limit) = api_gateway_limit(op) {
            limits.push((cell_of(op), limit));
        }
        let mut next: Vec<(&str, Cell)> = Vec::new();
        let mut refused = false;
        for (key, limit) in limits {
            let mut cell = Cell {
                tat: cells.get(key).and_then(|c| c.tat),
            };
            refused |= cell.reserve(limit, *t) > *t + slack;
            next.push((key, cell));
        }
        if refused {
            throttled += 1;
        } else {
            cells.extend(next);
        }
    }
    throttled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_with_their_own_limit_are_recognised_by_method_and_path() {
        let regional = br#"{"name":"a","endpointConfiguration":{"types":["REGIONAL"]}}"#;
        assert_eq!(
            api_gateway_operation("POST", "/restapis", Some(regional)),
            Some("CreateRestApi")
        );
        assert_eq!(
            api_gateway_operation("POST", "/restapis/abc/deployments", None),
            Some("CreateDeployment")
        );
        assert_eq!(
            api_gateway_operation("DELETE", "/restapis/abc", None),
            Some("DeleteRestApi")
        );
        assert_eq!(
            api_gateway_operation("PATCH", "/account", Some(b"{}")),
            Some("UpdateAccount")
        );
        assert_eq!(api_gateway_operation("GET", "/account", None), None);
        assert_eq!(api_gateway_operation("GET", "/restapis", None), None);
        assert_eq!(
            api_gateway_operation("DELETE", "/restapis/abc/stages/v1", None),
            None
        );
        assert_eq!(
            api_gateway_operation("GET", "/restapis?limit=500", None),
            None
        );
    }

    #[test]
    fn an_edge_create_is_told_apart_by_its_body() {
        let edge = br#"{"name":"a","endpointConfiguration":{"types":["EDGE"]}}"#;
        assert_eq!(
            api_gateway_operation("POST", "/restapis", Some(edge)),
            Some(CREATE_EDGE_REST_API)
        );
        // No endpoint type: AWS makes an EDGE API.
        assert_eq!(
            api_gateway_operation("POST", "/restapis", Some(br#"{"name":"a"}"#)),
            Some(CREATE_EDGE_REST_API)
        );
        // A body the pacer cannot see is given the stricter limit.
        assert_eq!(
            api_gateway_operation("POST", "/restapis", None),
            Some(CREATE_EDGE_REST_API)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn both_kinds_of_create_rest_api_share_one_cell() {
        let pacer = Pacer::new();
        let t0 = Instant::now();
        assert_eq!(pacer.reserve(Some(CREATE_EDGE_REST_API)), t0);
        // The EDGE create's 30 s hold up the next REGIONAL create too.
        assert_eq!(
            pacer.reserve(Some("CreateRestApi")),
            t0 + Duration::from_secs(30)
        );
        assert_eq!(
            pacer.reserve(Some("CreateRestApi")),
            t0 + Duration::from_secs(33)
        );
        assert_eq!(
            pacer.reserve(Some("UpdateAccount")),
            t0,
            "other operations have their own cell"
        );
        assert_eq!(
            pacer.reserve(Some("UpdateAccount")),
            t0 + Duration::from_secs(20)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_limited_operations_and_lets_a_burst_through() {
        let pacer = Pacer::new();
        let t0 = Instant::now();
        let first = pacer.reserve(Some("CreateDeployment"));
        let second = pacer.reserve(Some("CreateDeployment"));
        assert_eq!(first, t0);
        assert_eq!(second, t0 + Duration::from_secs(5));
        // Other calls are not held up by the deployment limit, only by the total's burst.
        let others: Vec<Instant> = (0..45).map(|_| pacer.reserve(None)).collect();
        // Two slots of the burst went to the deployments.
        assert!(others[..38].iter().all(|&t| t == t0));
        assert_eq!(others[38], t0 + Duration::from_millis(100));
        assert_eq!(others[44], t0 + Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn paced_attempts_are_never_throttled_and_unpaced_ones_are() {
        let pacer = Pacer::new();
        let paced: Vec<(String, Instant)> = ["CreateRestApi", "CreateRestApi", "DeleteRestApi"]
            .iter()
            .map(|op| (op.to_string(), pacer.reserve(Some(op))))
            .collect();
        assert_eq!(api_gateway_throttled(&paced, Duration::ZERO), 0);
        let t0 = Instant::now();
        let burst: Vec<(String, Instant)> = (0..3)
            .map(|i| ("CreateRestApi".to_string(), t0 + Duration::from_secs(i)))
            .collect();
        // At t0 allowed, at t0+1 s and t0+2 s too early.
        assert_eq!(api_gateway_throttled(&burst, Duration::ZERO), 2);
    }
}
