//! The OpenAPI document in `openapi/invoice-api.json` against the stack's API definition:
//! the same paths and methods, the same required query parameters, and the API key required
//! wherever the stack requires it. Either one changing alone fails here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use stacks::config::Config;
use stacks::{RestApiSpec, Spec, invoice_app};

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/invoice-api.json");
    let text = std::fs::read_to_string(path).expect("openapi/invoice-api.json exists");
    serde_json::from_str(&text).expect("the OpenAPI document is JSON")
}

fn api() -> RestApiSpec {
    let stack = invoice_app(
        &Config::default(),
        &stacks::Target {
            env: "dev",
            account_id: "123456789012",
            region: "eu-west-1",
        },
        &Default::default(),
    );
    match &stack.get(stacks::api::REST_API).unwrap().spec {
        Spec::RestApi(a) => a.clone(),
        _ => unreachable!(),
    }
}

/// `"METHOD /path"` -> (query parameter -> required, API key required), from the document.
fn documented(doc: &Value) -> BTreeMap<String, (BTreeMap<String, bool>, bool)> {
    let global_key = doc["security"]
        .as_array()
        .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_string(),
                        p["required"].as_bool().unwrap_or(false),
                    )
                })
                .collect();
            let key = match op.get("security") {
                Some(s) => s
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r.get("api_key").is_some()),
                None => global_key,
            };
            out.insert(format!("{} {path}", method.to_uppercase()), (params, key));
        }
    }
    out
}

#[test]
fn the_document_matches_the_stack_api() {
    let doc = document();
    let from_doc = documented(&doc);
    let from_stack: BTreeMap<String, (BTreeMap<String, bool>, bool)> = api()
        .routes
        .iter()
        .map(|r| {
            (
                format!("{} {}", r.method, r.path),
                (r.query_params.clone(), r.api_key_required),
            )
        })
        .collect();
    assert_eq!(
        from_doc.keys().collect::<BTreeSet<_>>(),
        from_stack.keys().collect::<BTreeSet<_>>(),
        "paths and methods"
    );
    for (route, (params, key)) in &from_stack {
        let (doc_params, doc_key) = &from_doc[route];
        assert_eq!(
            doc_params, params,
            "{route}: query parameters and which are required"
        );
        assert_eq!(doc_key, key, "{route}: API key required");
    }
}

#[test]
fn the_document_declares_the_key_header_and_the_error_shape() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let scheme = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "x-api-key");
    let error = &doc["components"]["schemas"]["Error"]["properties"]["error"];
    let required: BTreeSet<&str> = error["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, BTreeSet::from(["code", "message", "fields"]));
    // Every operation documents the errors API Gateway itself answers.
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            for status in ["400", "403", "429", "500"] {
                assert!(op["responses"].get(status).is_some(), "{op}: {status}");
            }
        }
    }
}

#[test]
fn gateway_error_templates_produce_the_documented_shape() {
    for g in api().gateway_responses {
        // Fill the placeholders as API Gateway would, then parse.
        let filled = g
            .template
            .replace("$context.error.messageString", "\"Forbidden\"")
            .replace("$context.error.validationErrorString", "missing customerId");
        let v: Value = serde_json::from_str(&filled)
            .unwrap_or_else(|e| panic!("{}: {e}: {filled}", g.response_type));
        assert!(v["error"]["code"].is_string(), "{}", g.response_type);
        assert!(v["error"]["message"].is_string(), "{}", g.response_type);
        assert!(v["error"]["fields"].is_array(), "{}", g.response_type);
    }
}
