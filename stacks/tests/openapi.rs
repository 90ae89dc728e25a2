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
                .flat_map(query_parameters)
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

/// The query parameters one documented parameter stands for, with whether each is required.
/// An object parameter in the default `form` style with `explode` sends each property as its
/// own parameter (`?InvoiceID=...`); a property is required only when the object is and its
/// schema lists it (alternatives under `anyOf` leave each one optional to API Gateway).
fn query_parameters(p: &Value) -> Vec<(String, bool)> {
    let required = p["required"].as_bool().unwrap_or(false);
    let schema = &p["schema"];
    if schema["type"] != "object" {
        return vec![(p["name"].as_str().unwrap().to_string(), required)];
    }
    assert_eq!(p["style"].as_str().unwrap_or("form"), "form", "{p}");
    assert!(p["explode"].as_bool().unwrap_or(true), "{p}: exploded");
    let listed: BTreeSet<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    schema["properties"]
        .as_object()
        .expect("an object parameter lists its properties")
        .keys()
        .map(|name| (name.clone(), required && listed.contains(name.as_str())))
        .collect()
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
    // Every operation documents the errors API Gateway answers on any route: its own (key,
    // throttling, body size) and a failed (502) or slow (504) function, in DEFAULT_5XX's shape.
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            for status in ["400", "403", "413", "429", "500", "502", "504"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{}: {status}",
                    op["operationId"]
                );
            }
        }
    }
}

/// The codes the document promises in `error.code`.
fn documented_error_codes(doc: &Value) -> BTreeSet<String> {
    doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .expect("error.code is an enum")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_gateway_response_is_documented_with_its_status_and_code() {
    let doc = document();
    let codes = documented_error_codes(&doc);
    let operations: Vec<&Value> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .collect();
    for g in api().gateway_responses {
        let filled = g
            .template
            .replace("$context.error.messageString", "\"m\"")
            .replace("$context.error.validationErrorString", "m");
        let v: Value = serde_json::from_str(&filled).unwrap();
        let code = v["error"]["code"].as_str().unwrap();
        assert!(
            codes.contains(code),
            "{}: code {code} not in the document",
            g.response_type
        );
        // 404 is for paths and methods the document does not have; the DEFAULT_* families
        // keep the status of the error they render.
        if g.status_code.is_empty() || g.status_code == "404" {
            continue;
        }
        for op in &operations {
            assert!(
                op["responses"].get(&g.status_code).is_some(),
                "{}: {} ({}) is not documented",
                op["operationId"],
                g.status_code,
                g.response_type
            );
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
