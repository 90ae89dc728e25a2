//! Creates are idempotent: with the first answer of each kind of create dropped after the
//! emulator executed it (a proxy between xtask and moto closes the connection instead of
//! answering), one apply still succeeds and leaves exactly one of each resource.
//!
//! Named creates are retried by the SDK and fail with "already exists"; the engine then reads
//! the resource, finds our tags and finishes it. Unnamed creates (no name, no client token) are
//! never sent twice blindly: the engine looks for what the first attempt made first. A
//! deployment (no name, no client token, never resent by the SDK) is looked for by the content
//! hash its description records.

mod common;

use common::faults::{DropFirstAnswer, Request, Rule};
use common::run_xtask;
use xtask::emulator::TestEmulator;

const ENV: &str = "test";

fn rest(method: &'static str, path: &'static str) -> impl Fn(&Request) -> bool {
    move |r| {
        let p = r.path.split('?').next().unwrap_or_default();
        r.method == method && (path_matches(p, path))
    }
}

/// `pattern` with `*` standing for one path segment.
fn path_matches(path: &str, pattern: &str) -> bool {
    let a: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let b: Vec<&str> = pattern.split('/').collect();
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| *y == "*" || x == y)
}

fn rules() -> Vec<Rule> {
    vec![
        Rule::new("CreateTable", |r| r.is_operation("CreateTable")),
        Rule::new("CreateRole", |r| r.is_operation("CreateRole")),
        Rule::new("CreateLogGroup", |r| r.is_operation("CreateLogGroup")),
        Rule::new("CreateFunction", rest("POST", "/2015-03-31/functions")),
        Rule::new(
            "CreateEventSourceMapping",
            rest("POST", "/2015-03-31/event-source-mappings"),
        ),
        Rule::new("CreateRestApi", rest("POST", "/restapis")),
        Rule::new("CreateApiKey", rest("POST", "/apikeys")),
        Rule::new("CreateUsagePlan", rest("POST", "/usageplans")),
        Rule::new("CreateDeployment", rest("POST", "/restapis/*/deployments")),
    ]
}

fn stand_in_zips(dir: &std::path::Path) {
    for f in stacks::invoice_app::FUNCTIONS {
        let zip = xtask::build::zip_bootstrap(
            std::path::Path::new("bootstrap"),
            format!("#!/bin/sh\n# {f}\n").as_bytes(),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{f}.zip")), zip).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_create_answer_leaves_exactly_one_of_each_resource() {
    let emu = TestEmulator::start().await;
    let aws = common::emulator_clients(&emu).await;
    let zips = tempfile::tempdir().unwrap();
    stand_in_zips(zips.path());
    let dir = zips.path().display().to_string();
    let proxy = DropFirstAnswer::start(emu.port(), rules());

    let run = run_xtask(
        ENV,
        "api.toml",
        proxy.port(),
        &["apply", "--yes", "--artifacts-dir", &dir],
    );
    let stderr = run.stderr.clone();
    let doc = run.applied();
    assert!(
        doc["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "done"),
        "{doc}"
    );
    for (rule, n) in proxy.dropped() {
        assert_eq!(n, 1, "{rule}: no answer was dropped\n{stderr}");
    }

    // Exactly one of each unnamed resource.
    // The stack has one mapping (the invoices stream to generate-pdf's alias).
    let mappings = aws
        .lambda
        .list_event_source_mappings()
        .send()
        .await
        .unwrap();
    assert_eq!(mappings.event_source_mappings().len(), 1, "mappings");
    let apis = aws.apigateway.get_rest_apis().send().await.unwrap();
    assert_eq!(apis.items().len(), 1, "REST APIs");
    let api_id = apis.items()[0].id().unwrap();
    let deployments = aws
        .apigateway
        .get_deployments()
        .rest_api_id(api_id)
        .send()
        .await
        .unwrap();
    assert_eq!(deployments.items().len(), 1, "deployments");
    let keys = aws.apigateway.get_api_keys().send().await.unwrap();
    assert_eq!(keys.items().len(), 1, "API keys");
    let plans = aws.apigateway.get_usage_plans().send().await.unwrap();
    assert_eq!(plans.items().len(), 1, "usage plans");
    for f in stacks::invoice_app::FUNCTIONS {
        let versions = aws
            .lambda
            .list_versions_by_function()
            .function_name(format!("{f}-{ENV}"))
            .send()
            .await
            .unwrap();
        // $LATEST and one published version.
        assert_eq!(versions.versions().len(), 2, "versions of {f}");
    }

    // And the stack is complete: a plan through the same proxy has nothing left to do.
    let (code, plan) = run_xtask(
        ENV,
        "api.toml",
        proxy.port(),
        &["plan", "--detailed-exitcode", "--artifacts-dir", &dir],
    )
    .planned();
    assert_eq!(code, 0, "{plan}");
}
