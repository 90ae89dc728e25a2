//! The CloudFormation engine: the template of every config in `config/` passes cfn-lint and
//! carries every field of every resource the direct engine deploys; the change-set flow
//! (`apply`, `plan`, `destroy --engine cloudformation`, `synth --upload`, and the engines'
//! mutual refusal) runs against a private moto on a stack of the kinds moto's CloudFormation
//! creates.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::run_xtask;
use serde_json::Value;
use stacks::names::{MANAGED_BY_CLOUDFORMATION, TAG_MANAGED_BY};
use stacks::{Code, Config, Ensure, Stack};
use xtask::cfn::template::{Conv, Place, Template};
use xtask::emulator::TestEmulator;

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every environment in `config/`, loaded as the commands load it.
fn configs() -> Vec<(String, Config)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(project_root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let env = path.file_stem().unwrap().to_str().unwrap().to_string();
        let config = stacks::config::load(&path, &env, &[]).unwrap();
        out.push((env, config));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 3, "config/ holds local, dev and prod");
    out
}

/// The functions' code references (`fixtures/cfn/code.json`).
fn code() -> BTreeMap<String, Code> {
    let doc: Value = serde_json::from_str(&common::fixture_text("cfn/code.json")).unwrap();
    doc.as_object()
        .unwrap()
        .iter()
        .map(|(f, c)| {
            (
                f.clone(),
                Code {
                    zip_path: PathBuf::from(format!("{f}.zip")),
                    size_bytes: 9_000_000,
                    sha256_hex: c["sha256_hex"].as_str().unwrap().into(),
                    sha256_b64: c["sha256_b64"].as_str().unwrap().into(),
                },
            )
        })
        .collect()
}

/// `{"Fn::Sub": s}` as `s`, everywhere: the spec holds the substituted strings themselves.
fn unsub(v: &Value) -> Value {
    match v {
        Value::Object(o) if o.len() == 1 && o.get("Fn::Sub").is_some_and(Value::is_string) => {
            o["Fn::Sub"].clone()
        }
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), unsub(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(unsub).collect()),
        other => other.clone(),
    }
}

/// What is wrong between the stack model and its template: fields without a binding (or
/// bindings without a field), values that differ from the spec's own serialisation, template
/// resources no stack resource asked for.
fn problems(stack: &Stack, t: &Template) -> Vec<String> {
    let mut out = Vec::new();
    let resources = t.body["Resources"].as_object().unwrap();
    for r in &stack.resources {
        let mut spec = serde_json::to_value(&r.spec).unwrap();
        spec.as_object_mut().unwrap().remove("kind");
        let bindings: Vec<_> = t.bindings.iter().filter(|b| b.resource == r.id).collect();
        if r.ensure == Ensure::Absent {
            if !bindings.is_empty() {
                out.push(format!("{}: absent, yet mapped", r.id));
            }
            continue;
        }
        let fields: BTreeSet<&str> = spec
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let bound: BTreeSet<&str> = bindings.iter().map(|b| b.field).collect();
        if fields != bound {
            out.push(format!(
                "{}: spec fields {fields:?} but template bindings for {bound:?}",
                r.id
            ));
        }
        for b in bindings {
            let Place::At {
                logical_id,
                pointer,
                conv,
            } = &b.place
            else {
                continue;
            };
            let actual = resources
                .get(logical_id)
                .and_then(|x| x.pointer(pointer))
                .map(unsub)
                .unwrap_or(Value::Null);
            let field = &spec[b.field];
            let want = match conv {
                Conv::Same => field.clone(),
                Conv::Enabled => Value::from(if field.as_bool().unwrap() {
                    "Enabled"
                } else {
                    "Suspended"
                }),
                Conv::Tags => {
                    let mut tags: BTreeMap<String, String> =
                        serde_json::from_value(field.clone()).unwrap();
                    tags.insert(TAG_MANAGED_BY.into(), MANAGED_BY_CLOUDFORMATION.into());
                    tags.iter()
                        .map(|(k, v)| serde_json::json!({"Key": k, "Value": v}))
                        .collect()
                }
                Conv::Expect(v) => unsub(v),
            };
            if actual != want {
                out.push(format!(
                    "{}.{} at {logical_id}{pointer}: template has {actual}, spec says {want}",
                    r.id, b.field
                ));
            }
        }
    }
    for (logical, r) in resources {
        let id = r
            .pointer("/Metadata/Xtask/ResourceId")
            .and_then(Value::as_str);
        if !id.is_some_and(|id| stack.get(id).is_some_and(|s| s.ensure == Ensure::Present)) {
            out.push(format!("{logical}: no present stack resource {id:?}"));
        }
    }
    out
}

#[test]
fn every_field_of_every_resource_is_in_the_template_of_every_config() {
    let code = code();
    for (env, config) in configs() {
        let stack = xtask::cfn::portable_stack(&config, &env, &code);
        let t = xtask::cfn::synth(&config, &env, &code);
        let p = problems(&stack, &t);
        assert!(p.is_empty(), "{env}:\n{}", p.join("\n"));
        eprintln!("{env}: {:?}", t.count_by_type());
    }
}

#[test]
fn the_property_check_sees_a_wrong_value_and_an_unmapped_field() {
    let (env, config) = configs().remove(0);
    let code = code();
    let stack = xtask::cfn::portable_stack(&config, &env, &code);
    let mut t = xtask::cfn::synth(&config, &env, &code);
    t.body["Resources"]["DynamodbTableInvoices"]["Properties"]["TableName"] = "other".into();
    t.bindings
        .retain(|b| !(b.resource == "s3_bucket.pdfs" && b.field == "tls_only"));
    let p = problems(&stack, &t).join("\n");
    assert!(p.contains("dynamodb_table.invoices.name"), "{p}");
    assert!(p.contains("s3_bucket.pdfs: spec fields"), "{p}");
}

#[test]
fn turned_off_features_are_not_in_the_template() {
    let (env, mut config) = configs().remove(0);
    config.functions.enabled = false;
    config.api.enabled = false;
    let code = code();
    let stack = xtask::cfn::portable_stack(&config, &env, &code);
    let t = xtask::cfn::synth(&config, &env, &code);
    assert!(problems(&stack, &t).is_empty());
    let kinds = t.count_by_type();
    assert!(
        !kinds.keys().any(|k| k.starts_with("AWS::Lambda::")),
        "{kinds:?}"
    );
    assert!(
        !kinds.keys().any(|k| k.starts_with("AWS::ApiGateway::")),
        "{kinds:?}"
    );
    assert_eq!(kinds["AWS::DynamoDB::Table"], 2);
}

/// cfn-lint (PyPI `cfn-lint`, in `TEST_TOOLS`) over the template of every config at once:
/// no error, no warning, not even an informational finding.
#[test]
fn templates_of_every_config_pass_cfn_lint() {
    let dir = tempfile::tempdir().unwrap();
    let code = code();
    let mut files = Vec::new();
    for (env, config) in configs() {
        let path = dir.path().join(format!("{env}.template.json"));
        std::fs::write(&path, xtask::cfn::synth(&config, &env, &code).to_json()).unwrap();
        files.push(path);
    }
    let python = std::env::var("XTASK_PYTHON").unwrap_or_else(|_| "python3".into());
    // cfnlint has no `__main__`: run its console-script entry point.
    let out = Command::new(&python)
        .args([
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
        ])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty(),
        "cfn-lint ({python}) exit {:?}:\n{stdout}\n{stderr}",
        out.status.code()
    );
}

const ENV: &str = "cfntest";
const CONFIG: &str = "cfn/moto.toml";
const STACK: &str = "invoice-app-cfntest";
const ARTIFACTS: &str = "invoice-app-artifacts-cfntest-cfn";

/// The change-set flow as far as moto's CloudFormation goes: buckets and tables only.
#[tokio::test(flavor = "multi_thread")]
async fn change_set_flow_against_the_emulator() {
    let emu = TestEmulator::start().await;
    let aws = common::emulator_clients(&emu).await;
    let port = emu.port();
    let xtask = |args: &[&str]| run_xtask(ENV, CONFIG, port, args);

    // Nothing yet: the plan is a change set creating the whole stack; it is discarded.
    let (code, plan) =
        xtask(&["plan", "--engine", "cloudformation", "--detailed-exitcode"]).planned();
    assert_eq!(code, 2, "{plan}");
    assert_eq!(plan["summary"]["create"], 4, "{plan}");
    let stacks = aws.cloudformation.list_stacks().send().await.unwrap();
    assert!(
        stacks
            .stack_summaries()
            .iter()
            .all(|s| s.stack_status().map(|s| s.as_str()) == Some("DELETE_COMPLETE")),
        "a plan leaves no stack behind"
    );

    // A run of either engine holding the environment's lock refuses this one before any write.
    let lock = format!("/invoice-app/{ENV}/xtask-lock");
    let holder = r#"{"who":"alice@laptop","command":"apply","pid":4242,"since_unix":1}"#;
    aws.ssm
        .put_parameter()
        .name(&lock)
        .value(holder)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let refused = xtask(&["apply", "--engine", "cloudformation", "--yes"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("locked by alice@laptop"),
        "{}",
        refused.stderr
    );
    let buckets = aws.s3.list_buckets().send().await.unwrap();
    assert!(
        buckets.buckets().is_empty(),
        "nothing was made: {buckets:?}"
    );
    aws.ssm.delete_parameter().name(&lock).send().await.unwrap();

    // Apply: bootstrap (the artifacts bucket), upload, then the change set of the rest.
    let run = xtask(&["apply", "--engine", "cloudformation", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("UPDATE_COMPLETE"), "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["stack"], STACK);
    let held = aws.ssm.get_parameter().name(&lock).send().await;
    assert!(
        held.map_err(|e| e.into_service_error())
            .is_err_and(|e| e.is_parameter_not_found()),
        "the lock is released after apply"
    );
    let tables = aws.dynamodb.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names().len(), 2, "{tables:?}");
    let stack = xtask::cfn::deploy::read(&common::ctx_with(aws.clone()), STACK)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stack.tags[TAG_MANAGED_BY], MANAGED_BY_CLOUDFORMATION);

    // Again: the stack runs this very template, so no change set and no write at all.
    let again = xtask(&["apply", "--engine", "cloudformation", "--yes"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.json()["api_calls"]["writes"], 0, "{}", again.stdout);
    let (code, _) = xtask(&["plan", "--engine", "cloudformation", "--detailed-exitcode"]).planned();
    assert_eq!(code, 0);

    // A changed property is an update in the change set, rendered as the direct plan is.
    let (code, plan) = xtask(&[
        "plan",
        "--engine",
        "cloudformation",
        "--detailed-exitcode",
        "--set",
        "processed_table.point_in_time_recovery=false",
    ])
    .planned();
    assert_eq!(code, 2, "{plan}");
    assert_eq!(plan["summary"]["update"], 1, "{plan}");

    // --upload puts the zips the template names into the bucket the stack made.
    let zips = tempfile::tempdir().unwrap();
    common::fixture_zips(zips.path());
    let dir = zips.path().to_str().unwrap();
    let up = xtask(&[
        "synth",
        "--upload",
        "--artifacts-dir",
        dir,
        "--set",
        "functions.enabled=true",
    ]);
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert!(up.stderr.contains("artifacts: 5 uploaded"), "{}", up.stderr);
    let objects = aws
        .s3
        .list_objects_v2()
        .bucket(ARTIFACTS)
        .send()
        .await
        .unwrap();
    assert_eq!(objects.contents().len(), 5);
    let template: Value = serde_json::from_str(&up.stdout).unwrap();
    for o in objects.contents() {
        let key = o.key().unwrap();
        assert!(up.stdout.contains(key), "{key} is not in the template");
    }
    assert!(template["Resources"].as_object().unwrap().len() > 4);

    // The direct engine refuses what CloudFormation owns.
    let direct = xtask(&["plan"]);
    assert_eq!(direct.code, 1);
    assert!(
        direct
            .stderr
            .contains("deployed by the CloudFormation engine"),
        "{}",
        direct.stderr
    );

    // Destroy: purge the bucket's versions, delete the stack; destroying again succeeds.
    let gone = xtask(&["destroy", "--engine", "cloudformation", "--yes"]);
    assert_eq!(gone.code, 0, "{}", gone.stderr);
    assert!(
        xtask::cfn::deploy::read(&common::ctx_with(aws.clone()), STACK)
            .await
            .unwrap()
            .is_none()
    );
    let head = aws.s3.head_bucket().bucket(ARTIFACTS).send().await;
    assert!(
        head.map_err(|e| e.into_service_error())
            .is_err_and(|e| e.is_not_found()),
        "the artifacts bucket is gone"
    );
    assert_eq!(
        xtask(&["destroy", "--engine", "cloudformation", "--yes"]).code,
        0
    );

    // And CloudFormation refuses what the direct engine owns.
    let direct = xtask(&["apply", "--yes"]);
    assert_eq!(direct.code, 0, "{}", direct.stderr);
    let cfn = xtask(&["plan", "--engine", "cloudformation"]);
    assert_eq!(cfn.code, 1);
    assert!(
        cfn.stderr.contains("deployed by the direct engine"),
        "{}",
        cfn.stderr
    );
}
