//! End-to-end tests of the functions' deployment: roles, log groups, artifacts, functions with
//! versions and alias, and the stream trigger. The real `xtask` binary against a private moto
//! server per test.
//!
//! The code deployed is small zips made here with the build's own reproducible zipper
//! (`--artifacts-dir`), so the tests exercise the deployer without compiling the functions:
//! changing "one function's source" is writing a different `bootstrap` for it. Building is
//! covered by tests/build.rs.

mod common;

use common::{Run, run_xtask, writes_of};
use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use xtask::aws::Clients;
use xtask::emulator::TestEmulator;

const ENV: &str = "test";
const FUNCTIONS: [&str; 5] = [
    "insert-invoice",
    "list-invoices",
    "generate-pdf",
    "download-pdf",
    "insert-mock-data",
];
const ARTIFACTS: &str = "invoice-app-artifacts-test-test";
const ACCOUNT: &str = "123456789012";
const INVOICES_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/invoices-table-test";
const PROCESSED_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/processed-invoices-table-test";
const PDF_OBJECTS: &str = "arn:aws:s3:::invoice-app-pdfs-test-test/*";

struct Harness {
    emu: TestEmulator,
    aws: Clients,
    zips: tempfile::TempDir,
}

/// Writes `<dir>/<function>.zip` holding a fake `bootstrap` with `content`.
fn write_zip(dir: &Path, function: &str, content: &str) -> String {
    let bin = format!("#!/bin/sh\n# {function}: {content}\n");
    let zip = xtask::build::zip_bootstrap(Path::new("bootstrap"), bin.as_bytes()).unwrap();
    std::fs::write(dir.join(format!("{function}.zip")), &zip).unwrap();
    xtask::build::sha256_hex_and_b64(&zip).0
}

impl Harness {
    async fn function_tag(&self, f: &str, key: &str) -> Option<String> {
        let arn = format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:{f}-{ENV}");
        let tags = self
            .aws
            .lambda
            .list_tags()
            .resource(arn)
            .send()
            .await
            .unwrap();
        tags.tags().and_then(|t| t.get(key)).cloned()
    }

    async fn role_tag(&self, f: &str, key: &str) -> Option<String> {
        let tags = self
            .aws
            .iam
            .list_role_tags()
            .role_name(format!("invoice-app-{f}-{ENV}"))
            .send()
            .await
            .unwrap();
        tags.tags()
            .iter()
            .find(|t| t.key() == key)
            .map(|t| t.value().to_string())
    }

    async fn log_group_tag(&self, f: &str, key: &str) -> Option<String> {
        let arn = format!("arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/{f}-{ENV}");
        let tags = self
            .aws
            .logs
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .unwrap();
        tags.tags().and_then(|t| t.get(key)).cloned()
    }

    async fn new() -> Harness {
        let emu = TestEmulator::start().await;
        let aws = common::emulator_clients(&emu).await;
        let zips = tempfile::tempdir().unwrap();
        for f in FUNCTIONS {
            write_zip(zips.path(), f, "v1");
        }
        Harness { emu, aws, zips }
    }

    fn xtask(&self, args: &[&str]) -> Run {
        run_xtask(ENV, "lambda.toml", self.emu.port(), args)
    }

    fn code_args(&self) -> Vec<String> {
        vec![
            "--artifacts-dir".into(),
            self.zips.path().display().to_string(),
        ]
    }

    fn apply(&self, extra: &[&str]) -> Value {
        let mut args: Vec<String> = vec!["apply".into(), "--yes".into()];
        args.extend(self.code_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let doc = self.xtask(&args).applied();
        assert!(
            doc["outcomes"]
                .as_array()
                .is_none_or(|o| o.iter().all(|o| o["status"] == "done")),
            "{doc}"
        );
        doc
    }

    fn plan(&self, extra: &[&str]) -> (i32, Value) {
        let mut args: Vec<String> = vec!["plan".into(), "--detailed-exitcode".into()];
        args.extend(self.code_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.xtask(&args).planned()
    }

    async fn alias_target(&self, function: &str) -> String {
        self.aws
            .lambda
            .get_alias()
            .function_name(format!("{function}-{ENV}"))
            .name("live")
            .send()
            .await
            .unwrap()
            .function_version()
            .unwrap()
            .to_string()
    }

    async fn versions(&self, function: &str) -> Vec<String> {
        let out = self
            .aws
            .lambda
            .list_versions_by_function()
            .function_name(format!("{function}-{ENV}"))
            .send()
            .await
            .unwrap();
        out.versions()
            .iter()
            .filter_map(|v| v.version())
            .filter(|v| *v != "$LATEST")
            .map(str::to_string)
            .collect()
    }

    /// `(action, resource)` pairs the role's inline policy grants.
    async fn grants(&self, function: &str) -> BTreeSet<(String, String)> {
        let doc = self
            .aws
            .iam
            .get_role_policy()
            .role_name(format!("invoice-app-{function}-{ENV}"))
            .policy_name("least-privilege")
            .send()
            .await
            .unwrap();
        let policy = xtask::providers::iam_role::parse_policy(doc.policy_document()).unwrap();
        let list = |v: &Value| -> Vec<String> {
            match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                other => panic!("unexpected {other}"),
            }
        };
        let mut out = BTreeSet::new();
        for s in policy["Statement"].as_array().unwrap() {
            assert_eq!(s["Effect"], "Allow");
            for a in list(&s["Action"]) {
                for r in list(&s["Resource"]) {
                    out.insert((a.clone(), r));
                }
            }
        }
        out
    }
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(a, r)| (a.to_string(), r.to_string()))
        .collect()
}

/// `(id, action)` of every resource that changes.
fn actions(doc: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = doc["resources"]
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
    v.sort();
    v
}

fn changed_fields(doc: &Value, id: &str) -> Vec<String> {
    doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| {
            r["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn pair(id: &str, action: &str) -> (String, String) {
    (id.to_string(), action.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_deploy_update_exactly_what_changed_purge_versions_and_destroy_cleanly() {
    let h = Harness::new().await;

    // From empty: storage (12) plus 4 resources per function and the trigger.
    let doc = h.apply(&[]);
    assert_eq!(doc["summary"]["create"], 12 + 4 * 5 + 1, "{doc}");

    for f in FUNCTIONS {
        let name = format!("{f}-{ENV}");
        let got = h
            .aws
            .lambda
            .get_function()
            .function_name(&name)
            .send()
            .await
            .unwrap();
        let c = got.configuration().unwrap();
        assert_eq!(c.runtime().unwrap().as_str(), "provided.al2023", "{f}");
        assert_eq!(c.handler(), Some("bootstrap"));
        assert_eq!(c.memory_size(), Some(256));
        assert_eq!(c.timeout(), Some(10));
        assert_eq!(
            c.role(),
            Some(format!("arn:aws:iam::{ACCOUNT}:role/invoice-app-{f}-{ENV}").as_str())
        );
        let env = c.environment().unwrap().variables().unwrap();
        assert_eq!(env["LOG_LEVEL"], "info");
        assert_eq!(h.alias_target(f).await, "1", "{f}");
        let groups = h
            .aws
            .logs
            .describe_log_groups()
            .log_group_name_prefix(format!("/aws/lambda/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(groups.log_groups().len(), 1, "{f}");
        assert_eq!(groups.log_groups()[0].retention_in_days(), Some(7));
        let attached = h
            .aws
            .iam
            .list_attached_role_policies()
            .role_name(format!("invoice-app-{f}-{ENV}"))
            .send()
            .await
            .unwrap();
        // Logging is granted inline on the function's own log group, not by a managed policy.
        assert_eq!(attached.attached_policies(), [], "{f}");
    }
    let env = |f: &str| {
        let h = &h;
        let f = f.to_string();
        async move {
            let c = h
                .aws
                .lambda
                .get_function_configuration()
                .function_name(format!("{f}-{ENV}"))
                .send()
                .await
                .unwrap();
            let mut keys: Vec<String> = c
                .environment()
                .unwrap()
                .variables()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        }
    };
    assert_eq!(env("insert-invoice").await, ["INVOICES_TABLE", "LOG_LEVEL"]);
    assert_eq!(
        env("generate-pdf").await,
        ["LOG_LEVEL", "PDF_BUCKET", "PROCESSED_TABLE"]
    );

    // Least privilege, exactly: each function's own actions, plus writing its own log group.
    let logs =
        |f: &str| format!("arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/{f}-{ENV}:*");
    let with_logs = |f: &str, grants: &[(&str, &str)]| {
        let logs = logs(f);
        let mut all: Vec<(&str, &str)> = grants.to_vec();
        all.push(("logs:CreateLogStream", &logs));
        all.push(("logs:PutLogEvents", &logs));
        set(&all)
    };
    assert_eq!(
        h.grants("insert-invoice").await,
        with_logs(
            "insert-invoice",
            &[
                ("dynamodb:PutItem", INVOICES_ARN),
                ("dynamodb:Query", INVOICES_ARN)
            ]
        )
    );
    let gsi = format!("{INVOICES_ARN}/index/CustomerID-Index");
    assert_eq!(
        h.grants("list-invoices").await,
        with_logs("list-invoices", &[("dynamodb:Query", &gsi)])
    );
    let streams = format!("{INVOICES_ARN}/stream/*");
    assert_eq!(
        h.grants("generate-pdf").await,
        with_logs(
            "generate-pdf",
            &[
                ("dynamodb:DescribeStream", &streams),
                ("dynamodb:GetRecords", &streams),
                ("dynamodb:GetShardIterator", &streams),
                ("dynamodb:ListStreams", "*"),
                ("s3:PutObject", PDF_OBJECTS),
                ("dynamodb:PutItem", PROCESSED_ARN),
            ]
        )
    );
    assert_eq!(
        h.grants("download-pdf").await,
        with_logs(
            "download-pdf",
            &[
                ("dynamodb:GetItem", PROCESSED_ARN),
                ("dynamodb:Query", INVOICES_ARN),
                ("s3:GetObject", PDF_OBJECTS),
            ]
        )
    );
    assert_eq!(
        h.grants("insert-mock-data").await,
        with_logs(
            "insert-mock-data",
            &[
                ("dynamodb:PutItem", INVOICES_ARN),
                ("dynamodb:Query", INVOICES_ARN)
            ]
        )
    );

    // The trigger: on the table's current stream, to generate-pdf's alias.
    let stream = h
        .aws
        .dynamodb
        .describe_table()
        .table_name("invoices-table-test")
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .latest_stream_arn()
        .unwrap()
        .to_string();
    let mappings = h
        .aws
        .lambda
        .list_event_source_mappings()
        .event_source_arn(&stream)
        .send()
        .await
        .unwrap();
    let m = &mappings.event_source_mappings()[0];
    assert_eq!(mappings.event_source_mappings().len(), 1);
    assert!(
        m.function_arn()
            .unwrap()
            .ends_with(":function:generate-pdf-test:live"),
        "{:?}",
        m.function_arn()
    );
    assert_eq!(m.batch_size(), Some(10));
    assert_eq!(m.maximum_retry_attempts(), Some(3));
    assert_eq!(m.bisect_batch_on_function_error(), Some(true));
    assert_eq!(m.starting_position().unwrap().as_str(), "LATEST");
    assert_eq!(
        m.function_response_types()[0].as_str(),
        "ReportBatchItemFailures"
    );

    // Same code again: nothing to do, not a single write.
    let (code, plan) = h.plan(&[]);
    assert_eq!(code, 0, "{plan}");
    assert_eq!(plan["api_calls"]["writes"], 0);
    let doc = h.apply(&[]);
    assert_eq!(doc["api_calls"]["writes"], 0, "{doc}");

    // One function's code changes: only its artifact is uploaded and only it is updated,
    // published and its alias moved.
    let sha = write_zip(h.zips.path(), "list-invoices", "v2");
    let (code, plan) = h.plan(&[]);
    assert_eq!(code, 2);
    assert_eq!(
        actions(&plan),
        [
            pair("lambda_function.list_invoices", "update"),
            pair("s3_object.list_invoices_code", "create"),
        ]
    );
    assert_eq!(
        changed_fields(&plan, "lambda_function.list_invoices"),
        ["code", "version", "alias"]
    );
    let code_change = &plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "lambda_function.list_invoices")
        .unwrap()["changes"][0];
    assert_eq!(
        code_change["new"],
        sha.as_str(),
        "plan shows the hex SHA-256"
    );
    h.apply(&[]);
    assert_eq!(h.alias_target("list-invoices").await, "2");
    assert_eq!(h.alias_target("insert-invoice").await, "1");
    let key = format!("functions/list-invoices/{sha}.zip");
    h.aws
        .s3
        .head_object()
        .bucket(ARTIFACTS)
        .key(&key)
        .send()
        .await
        .unwrap();

    // Memory in config: a configuration update and a publish, no code.
    let memory = ["--set", "functions.overrides.list-invoices.memory_mb=512"];
    let (_, plan) = h.plan(&memory);
    assert_eq!(
        actions(&plan),
        [pair("lambda_function.list_invoices", "update")]
    );
    assert_eq!(
        changed_fields(&plan, "lambda_function.list_invoices"),
        // keep_versions = 2: the third version makes the first one go.
        ["memory_mb", "version", "alias", "purge_versions"]
    );
    h.apply(&memory);
    assert_eq!(h.alias_target("list-invoices").await, "3");
    // keep_versions = 2: version 1 went when version 3 was published.
    assert_eq!(h.versions("list-invoices").await, ["2", "3"]);
    let doc = h.apply(&memory);
    assert_eq!(doc["api_calls"]["writes"], 0, "{doc}");

    // An extra tag reaches every function, role and log group in place; a second apply writes
    // nothing; dropping the tag untags it again.
    let tagged = [memory[0], memory[1], "--set", "tags.team=billing"];
    let doc = h.apply(&tagged);
    assert!(
        writes_of(&doc, "TagResource") > 0 && writes_of(&doc, "TagRole") > 0,
        "{doc}"
    );
    let team = |tags: Option<String>| tags.as_deref() == Some("billing");
    assert!(team(h.function_tag("list-invoices", "team").await));
    assert!(team(h.role_tag("list-invoices", "team").await));
    assert!(team(h.log_group_tag("list-invoices", "team").await));
    let doc = h.apply(&tagged);
    assert_eq!(doc["api_calls"]["writes"], 0, "{doc}");
    let doc = h.apply(&memory);
    assert!(writes_of(&doc, "UntagResource") > 0, "{doc}");
    assert_eq!(h.function_tag("list-invoices", "team").await, None);
    assert_eq!(h.role_tag("list-invoices", "team").await, None);
    assert_eq!(h.log_group_tag("list-invoices", "team").await, None);
    assert!(
        h.function_tag("list-invoices", "managed-by")
            .await
            .is_some()
    );

    // Destroy: nothing of the functions is left.
    let run = h.xtask(&["destroy", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Gone means AWS says "no such function / role": any other error (a refused or failed
    // call) proves nothing and fails the test.
    use aws_sdk_iam::operation::get_role::GetRoleError;
    use aws_sdk_lambda::operation::get_function::GetFunctionError;
    use aws_sdk_lambda::operation::list_versions_by_function::ListVersionsByFunctionError;
    for f in FUNCTIONS {
        let function = h
            .aws
            .lambda
            .get_function()
            .function_name(format!("{f}-{ENV}"))
            .send()
            .await
            .map(|_| "still exists")
            .map_err(|e| e.into_service_error());
        assert!(
            matches!(
                function,
                Err(GetFunctionError::ResourceNotFoundException(_))
            ),
            "{f}: {function:?}"
        );
        let versions = h
            .aws
            .lambda
            .list_versions_by_function()
            .function_name(format!("{f}-{ENV}"))
            .send()
            .await
            .map(|v| v.versions().len())
            .map_err(|e| e.into_service_error());
        // AWS answers ResourceNotFound for a deleted function; moto lists no versions.
        assert!(
            matches!(
                versions,
                Err(ListVersionsByFunctionError::ResourceNotFoundException(_)) | Ok(0)
            ),
            "{f} has versions left: {versions:?}"
        );
        let role = h
            .aws
            .iam
            .get_role()
            .role_name(format!("invoice-app-{f}-{ENV}"))
            .send()
            .await
            .map(|_| "still exists")
            .map_err(|e| e.into_service_error());
        assert!(
            matches!(role, Err(GetRoleError::NoSuchEntityException(_))),
            "role of {f}: {role:?}"
        );
    }
    let groups = h
        .aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/aws/lambda/")
        .send()
        .await
        .unwrap();
    assert!(groups.log_groups().is_empty(), "{groups:?}");
    let mappings = h
        .aws
        .lambda
        .list_event_source_mappings()
        .send()
        .await
        .unwrap();
    assert!(mappings.event_source_mappings().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_widened_role_policy_is_drift_and_is_restored() {
    let h = Harness::new().await;
    h.apply(&[]);
    let role = format!("invoice-app-list-invoices-{ENV}");
    // Someone grants more by hand, in a different but equivalent-looking shape.
    h.aws
        .iam
        .put_role_policy()
        .role_name(&role)
        .policy_name("least-privilege")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["dynamodb:Query","dynamodb:Scan"],"Resource":"*"}}"#,
        )
        .send()
        .await
        .unwrap();
    let (code, plan) = h.plan(&[]);
    assert_eq!(code, 2);
    assert_eq!(actions(&plan), [pair("iam_role.list_invoices", "update")]);
    assert_eq!(
        changed_fields(&plan, "iam_role.list_invoices"),
        ["inline_policies"]
    );
    h.apply(&[]);
    let gsi = format!("{INVOICES_ARN}/index/CustomerID-Index");
    let logs =
        format!("arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/list-invoices-{ENV}:*");
    assert_eq!(
        h.grants("list-invoices").await,
        set(&[
            ("dynamodb:Query", &gsi),
            ("logs:CreateLogStream", &logs),
            ("logs:PutLogEvents", &logs),
        ])
    );
    let (code, _) = h.plan(&[]);
    assert_eq!(code, 0);
}

/// `apply --yes` with one function's new code: the lock goes while the alias's move (the last
/// write, guarded by the alias's RevisionId) is still in flight. A proxy holds that UpdateAlias
/// unanswered, so the run cannot end; the lock parameter must disappear all the same.
#[tokio::test(flavor = "multi_thread")]
async fn apply_releases_the_lock_beside_the_guarded_alias_move() {
    use common::faults::{DropFirstAnswer, Rule};
    use std::time::{Duration, Instant};

    let h = Harness::new().await;
    h.apply(&[]);
    write_zip(h.zips.path(), "list-invoices", "v2");
    let proxy = DropFirstAnswer::start(
        h.emu.port(),
        vec![Rule::hold("UpdateAlias", |r| {
            r.method == "PUT" && r.path.contains("/aliases/")
        })],
    );
    let mut args: Vec<String> = vec!["apply".into(), "--yes".into()];
    args.extend(h.code_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = common::xtask_command(ENV, "lambda.toml", proxy.port(), &args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting xtask");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The alias's move is only sent under the lock: once it hangs, a missing lock
        // parameter is a released one.
        let moving = proxy.dropped() == [("UpdateAlias", 1)];
        let released = common::test_lock(&h.aws).await.is_none();
        if moving && released {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "xtask exited while UpdateAlias hung"
        );
        assert!(
            Instant::now() < deadline,
            "the lock was still held while the guarded UpdateAlias hung"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the release did not wait for the alias's answer"
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("releasing the lock: the writes still in flight are guarded"),
        "{stderr}"
    );
}
