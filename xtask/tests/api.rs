//! End-to-end tests of the REST API part of the stack: the real `xtask` binary against a
//! private moto server per test.
//!
//! The functions the API invokes belong to the Lambda part of the stack; these tests create
//! minimal stand-ins (a function with a `live` alias) through the SDK, which is all API
//! Gateway and Lambda permissions need on the control plane.

mod common;

use common::{Run, run_xtask, writes_of};

use serde_json::Value;
use xtask::aws::Clients;
use xtask::emulator::TestEmulator;

const ENV: &str = "test";
const API: &str = "invoice-api-gateway-test";
const FUNCTIONS: [&str; 3] = [
    "insert-invoice-test",
    "list-invoices-test",
    "download-pdf-test",
];
const ACCOUNT: &str = "123456789012";

struct Harness {
    emu: TestEmulator,
    aws: Clients,
    zips: tempfile::TempDir,
}

/// The stack's five functions; the API fronts three of them, all are deployed.
const ALL_FUNCTIONS: [&str; 5] = [
    "insert-invoice",
    "list-invoices",
    "generate-pdf",
    "download-pdf",
    "insert-mock-data",
];

/// Writes `<dir>/<function>.zip` for every function, with a stand-in `bootstrap`: moto stores
/// code and never runs it here, and tests/lambda.rs covers the code paths of real builds.
fn write_zips(dir: &std::path::Path) {
    for f in ALL_FUNCTIONS {
        let bin = format!("#!/bin/sh\n# {f}\n");
        let zip =
            xtask::build::zip_bootstrap(std::path::Path::new("bootstrap"), bin.as_bytes()).unwrap();
        std::fs::write(dir.join(format!("{f}.zip")), zip).unwrap();
    }
}

impl Harness {
    async fn new() -> Harness {
        let emu = TestEmulator::start().await;
        let aws = common::emulator_clients(&emu).await;
        let zips = tempfile::tempdir().unwrap();
        write_zips(zips.path());
        Harness { emu, aws, zips }
    }

    fn xtask(&self, args: &[&str]) -> Run {
        run_xtask(ENV, "api.toml", self.emu.port(), args)
    }

    fn apply(&self, extra: &[&str]) -> Value {
        let dir = self.zips.path().display().to_string();
        let mut args = vec!["apply", "--yes", "--artifacts-dir", &dir];
        args.extend_from_slice(extra);
        self.xtask(&args).applied()
    }

    fn plan(&self, extra: &[&str]) -> (i32, Value) {
        let dir = self.zips.path().display().to_string();
        let mut args = vec!["plan", "--detailed-exitcode", "--artifacts-dir", &dir];
        args.extend_from_slice(extra);
        self.xtask(&args).planned()
    }

    async fn api_id(&self) -> Option<String> {
        self.aws
            .apigateway
            .get_rest_apis()
            .send()
            .await
            .unwrap()
            .items()
            .iter()
            .find(|a| a.name() == Some(API))
            .and_then(|a| a.id().map(str::to_string))
    }
}

fn actions(doc: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = doc["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["action"] != "no-op")
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_deployed_as_configured_redeployed_only_on_change_and_destroyed() {
    let h = Harness::new().await;
    let started = std::time::Instant::now();
    let doc = h.apply(&[]);
    // Figures for the report (visible with --nocapture).
    eprintln!(
        "figure: apply from empty {:.1}s, {} writes",
        started.elapsed().as_secs_f64(),
        doc["api_calls"]["writes"]
    );
    assert!(
        doc["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "done"),
        "{doc}"
    );
    assert_eq!(writes_of(&doc, "CreateDeployment"), 1);
    let api = h.api_id().await.expect("the API exists");
    let gw = &h.aws.apigateway;

    // Every method requires a key, proxies to the function's live alias, declares its params.
    let resources = gw
        .get_resources()
        .rest_api_id(&api)
        .embed("methods")
        .send()
        .await
        .unwrap();
    let mut methods = 0;
    for r in resources.items() {
        for (verb, m) in r.resource_methods().into_iter().flatten() {
            methods += 1;
            let path = r.path().unwrap();
            assert_eq!(m.api_key_required(), Some(true), "{verb} {path}");
            let i = m.method_integration().unwrap();
            assert_eq!(i.r#type().unwrap().as_str(), "AWS_PROXY");
            let function = match path {
                "/insert-invoice" => "insert-invoice-test",
                "/list-invoices" => "list-invoices-test",
                "/download-invoice" => "download-pdf-test",
                other => panic!("unexpected path {other}"),
            };
            assert_eq!(
                i.uri().unwrap(),
                format!(
                    "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function}:live/invocations"
                )
            );
            if path == "/list-invoices" {
                let p = m.request_parameters().unwrap();
                assert!(p["method.request.querystring.customerId"]);
                assert!(!p["method.request.querystring.limit"]);
            }
        }
    }
    assert_eq!(methods, 3);

    // Gateway responses speak the app's error shape.
    let r = gw
        .get_gateway_response()
        .rest_api_id(&api)
        .response_type(aws_sdk_apigateway::types::GatewayResponseType::InvalidApiKey)
        .send()
        .await
        .unwrap();
    let template = &r.response_templates().unwrap()["application/json"];
    assert!(
        template.contains(r#""error":{"code":"forbidden""#),
        "{template}"
    );

    // Permissions: one per function, on the alias, scoped to this API, stage, method, path.
    for (f, route) in [
        ("insert-invoice-test", "POST/insert-invoice"),
        ("list-invoices-test", "GET/list-invoices"),
        ("download-pdf-test", "GET/download-invoice"),
    ] {
        let policy = h
            .aws
            .lambda
            .get_policy()
            .function_name(f)
            .qualifier("live")
            .send()
            .await
            .unwrap();
        let doc: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let statements = doc["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1, "{doc}");
        assert_eq!(
            statements[0]["Condition"]["ArnLike"]["AWS:SourceArn"],
            format!("arn:aws:execute-api:us-east-1:{ACCOUNT}:{api}/v1/{route}")
        );
    }

    // Stage: access logs to the log group, throttling; log group retention; usage plan.
    let stage = gw
        .get_stage()
        .rest_api_id(&api)
        .stage_name("v1")
        .send()
        .await
        .unwrap();
    let logs = stage.access_log_settings().unwrap();
    assert_eq!(
        logs.destination_arn().unwrap(),
        format!("arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/apigateway/{API}")
    );
    let format: Value = serde_json::from_str(logs.format().unwrap()).expect("JSON access logs");
    assert_eq!(format["requestId"], "$context.requestId");
    let s = &stage.method_settings().unwrap()["*/*"];
    assert_eq!(
        (s.throttling_rate_limit(), s.throttling_burst_limit()),
        (50.0, 100)
    );
    let groups = h
        .aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/apigateway/{API}"))
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(14));
    let plans = gw.get_usage_plans().send().await.unwrap();
    let plan = &plans.items()[0];
    assert_eq!(plan.api_stages()[0].api_id(), Some(api.as_str()));
    assert_eq!(plan.api_stages()[0].stage(), Some("v1"));
    let t = plan.throttle().unwrap();
    assert_eq!((t.rate_limit(), t.burst_limit()), (20.0, 40));
    let q = plan.quota().unwrap();
    assert_eq!((q.limit(), q.period().unwrap().as_str()), (5000, "WEEK"));
    let keys = gw
        .get_usage_plan_keys()
        .usage_plan_id(plan.id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(keys.items()[0].name(), Some("invoice-app-api-key-test"));

    // Outputs: URL, endpoints, key id; the key's value only when asked for.
    let out = h.xtask(&["outputs"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = out.json();
    let url = out["invoke_url"].as_str().unwrap();
    assert!(
        url.ends_with(&format!("/restapis/{api}/v1/_user_request_")),
        "{url}"
    );
    assert_eq!(out["endpoints"].as_array().unwrap().len(), 3);
    assert!(out["api_key"]["id"].is_string());
    assert!(out["api_key"].get("value").is_none(), "{out}");
    assert_eq!(
        out["function_aliases"][0],
        format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:insert-invoice-test:live")
    );
    let secret = h.xtask(&["outputs", "--show-secrets"]).json();
    assert!(
        secret["api_key"]["value"]
            .as_str()
            .is_some_and(|v| v.len() >= 20)
    );

    // Nothing changed: no deployment, no write at all.
    let (code, plan_doc) = h.plan(&[]);
    assert_eq!(code, 0, "{plan_doc}");
    eprintln!(
        "figure: no-op plan of {} resources: {} API calls",
        plan_doc["resources"].as_array().unwrap().len(),
        plan_doc["api_calls"]["reads"]
    );
    let again = h.apply(&[]);
    assert_eq!(again["api_calls"]["writes"], 0, "{again}");
    assert_eq!(writes_of(&again, "CreateDeployment"), 0);

    // An integration pointed elsewhere (by hand) is put back: exactly one new deployment.
    let list = resources
        .items()
        .iter()
        .find(|r| r.path() == Some("/list-invoices"))
        .unwrap();
    gw.put_integration()
        .rest_api_id(&api)
        .resource_id(list.id().unwrap())
        .http_method("GET")
        .r#type(aws_sdk_apigateway::types::IntegrationType::AwsProxy)
        .integration_http_method("POST")
        .uri(format!(
            "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:{ACCOUNT}:function:list-invoices-test/invocations"
        ))
        .send()
        .await
        .unwrap();
    let (code, drift) = h.plan(&[]);
    assert_eq!(code, 2);
    assert_eq!(
        actions(&drift),
        [("rest_api.invoice".to_string(), "update".to_string())],
        "the live API differs but the stage still serves the deployed definition"
    );
    let fixed = h.apply(&[]);
    assert_eq!(
        writes_of(&fixed, "CreateDeployment"),
        0,
        "the deployed definition is the wanted one"
    );
    assert_eq!(h.plan(&[]).0, 0);

    // Adding methods (CORS preflights) and changing gateway responses: one new deployment.
    let cors = [
        "--set",
        "api.cors_allowed_origins=[\"https://app.example.com\"]",
    ];
    let (code, changed) = h.plan(&cors);
    assert_eq!(code, 2);
    assert_eq!(
        actions(&changed),
        [
            ("api_stage.main".to_string(), "update".to_string()),
            ("rest_api.invoice".into(), "update".into()),
        ]
    );
    let before = stage.deployment_id().unwrap().to_string();
    let doc = h.apply(&cors);
    assert_eq!(writes_of(&doc, "CreateDeployment"), 1, "{doc}");
    let stage = gw
        .get_stage()
        .rest_api_id(&api)
        .stage_name("v1")
        .send()
        .await
        .unwrap();
    assert_ne!(stage.deployment_id().unwrap(), before, "the stage moved");
    let deployments = gw.get_deployments().rest_api_id(&api).send().await.unwrap();
    assert_eq!(
        deployments.items().len(),
        1,
        "the old deployment was pruned"
    );
    let (code, _) = h.plan(&cors);
    assert_eq!(code, 0);
    let no_op = h.apply(&cors);
    assert_eq!(writes_of(&no_op, "CreateDeployment"), 0);

    // Usage plan limits change in place, without a deployment.
    let limits = [
        cors[0],
        cors[1],
        "--set",
        "api.usage_plan.quota.limit=7000",
        "--set",
        "api.usage_plan.throttle.rate_limit=12.5",
    ];
    let (_, plan_doc) = h.plan(&limits);
    assert_eq!(
        actions(&plan_doc),
        [("usage_plan.default".to_string(), "update".to_string())]
    );
    let doc = h.apply(&limits);
    assert_eq!(writes_of(&doc, "CreateDeployment"), 0);
    let plan = &gw.get_usage_plans().send().await.unwrap().items()[0].clone();
    assert_eq!(plan.quota().unwrap().limit(), 7000);
    assert_eq!(plan.throttle().unwrap().rate_limit(), 12.5);
    assert_eq!(h.plan(&limits).0, 0);

    // Destroy: API (with stage and deployments), key, usage plan, log group, permissions.
    let run = h.xtask(&["destroy", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(h.api_id().await.is_none());
    assert!(
        gw.get_usage_plans()
            .send()
            .await
            .unwrap()
            .items()
            .is_empty()
    );
    assert!(gw.get_api_keys().send().await.unwrap().items().is_empty());
    let groups = h
        .aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/aws/apigateway/")
        .send()
        .await
        .unwrap();
    assert!(groups.log_groups().is_empty());
    // The permission is gone when Lambda says the alias has no policy (or an empty one); any
    // other error (a refused or failed call) proves nothing and fails the test.
    use aws_sdk_lambda::operation::get_policy::GetPolicyError;
    for f in FUNCTIONS {
        let p = h
            .aws
            .lambda
            .get_policy()
            .function_name(f)
            .qualifier("live")
            .send()
            .await;
        let empty = match p.map_err(|e| e.into_service_error()) {
            Err(GetPolicyError::ResourceNotFoundException(_)) => true,
            Err(other) => panic!("{f}: reading the policy failed: {other:?}"),
            Ok(p) => {
                serde_json::from_str::<Value>(p.policy().unwrap_or("{}")).unwrap()["Statement"]
                    .as_array()
                    .is_none_or(|s| s.is_empty())
            }
        };
        assert!(empty, "{f} still allows API Gateway");
    }
    // Again: nothing to delete; `destroy --yes` reads under the lock, whose two calls are
    // its only writes.
    let again = h.xtask(&["destroy", "--yes"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        again.json()["api_calls"]["writes_by_operation"],
        serde_json::json!({"SSM.DeleteParameter": 1, "SSM.PutParameter": 1})
    );
}
