//! Every environment in `config/`, checked as AWS would check it.
//!
//! - parliament (PyPI; `cargo xtask test` installs it and exports `XTASK_PYTHON`) reads every
//!   IAM document each config produces: the functions' inline policies and trust policies, the
//!   buckets' policies and the API Gateway CloudWatch role's trust policy. It must find nothing.
//! - Rehearsals: `dev.toml` and `prod.toml`, as written, applied to a private moto server
//!   through the SDK's standard `AWS_ENDPOINT_URL` (stand-in zips via `--artifacts-dir`, so no
//!   Lambda build): the apply succeeds, a plan then has no changes, a second apply writes
//!   nothing, and destroy leaves nothing. dev seeds (`[mock_data]`): its insert-mock-data is
//!   the real function built for this machine, run by the local runtime as the rehearsal
//!   says; prod does not seed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use stacks::{Config, Spec};
use xtask::emulator::TestEmulator;
use xtask::providers::{api_account, s3_bucket};

/// The interpreter `cargo xtask test` installed the checkers into, else the one on PATH.
fn python() -> String {
    std::env::var("XTASK_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `config/<env>.toml` of every environment, by name.
fn environments() -> Vec<(String, Config)> {
    let dir = xtask::session::project_root().join("config");
    let mut out: Vec<(String, Config)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let env = p.file_stem().unwrap().to_string_lossy().into_owned();
            let config = stacks::config::load(&p, &env, &[])
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (env, config)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Runs parliament over every `*.json` in `dir`: its findings, one JSON object per line.
fn parliament(dir: &Path) -> Vec<Value> {
    let out = Command::new(python())
        .args([
            "-m",
            "parliament.cli",
            "--json",
            "--include_policy_extension",
            "json",
        ])
        .arg("--directory")
        .arg(dir)
        // parliament refuses --directory when stdin is not a terminal unless stdin is empty.
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} -m parliament.cli: {e}", python()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "parliament is not installed for {} (pip install parliament): {stderr}",
        python()
    );
    let findings: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("parliament said {l:?}: {e}")))
        .collect();
    // It exits non-zero exactly when it found something; anything else is a crash.
    assert_eq!(
        out.status.success(),
        findings.is_empty(),
        "parliament exited {:?} with findings {findings:?}; stderr: {stderr}",
        out.status
    );
    findings
}

/// A trust policy is the role's own resource policy with the Resource left implicit;
/// parliament reads identity and resource policies only, so it gets the role's ARN spelled out.
fn as_resource_policy(trust: &Value, role_arn: &str) -> Value {
    let mut doc = trust.clone();
    for s in doc["Statement"].as_array_mut().expect("statements") {
        s["Resource"] = json!(role_arn);
    }
    doc
}

/// Every IAM document the stack of one environment produces, by file name.
fn documents(env: &str, config: &Config) -> BTreeMap<String, Value> {
    let account = config
        .allowed_account_ids
        .first()
        .map(String::as_str)
        .unwrap_or("123456789012");
    let region = if config.region.is_empty() {
        "us-east-1"
    } else {
        &config.region
    };
    let stack = stacks::invoice_app(
        config,
        &stacks::Target {
            env,
            account_id: account,
            region,
        },
        &BTreeMap::new(),
    );
    let mut docs = BTreeMap::new();
    for r in &stack.resources {
        match &r.spec {
            Spec::Role(role) => {
                let arn = format!("arn:aws:iam::{account}:role/{}", role.name);
                docs.insert(format!("{}.inline.json", r.id), role.inline_policy.clone());
                docs.insert(
                    format!("{}.trust.json", r.id),
                    as_resource_policy(&role.trust_policy(), &arn),
                );
            }
            Spec::Bucket(b) => {
                if let Some(p) = s3_bucket::desired_policy(b, region) {
                    docs.insert(format!("{}.bucket-policy.json", r.id), p);
                }
            }
            Spec::ApiAccount(a) => {
                let arn = format!("arn:aws:iam::{account}:role/{}", a.role_name);
                docs.insert(
                    format!("{}.trust.json", r.id),
                    as_resource_policy(&api_account::trust_policy(), &arn),
                );
            }
            _ => {}
        }
    }
    docs
}

fn write_all(dir: &Path, docs: &BTreeMap<String, Value>) -> Vec<PathBuf> {
    docs.iter()
        .map(|(name, doc)| {
            let path = dir.join(name);
            std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
            path
        })
        .collect()
}

#[test]
fn parliament_finds_nothing_in_any_environments_policies() {
    let envs = environments();
    let names: Vec<&str> = envs.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["dev", "local", "prod"]);
    for (env, config) in &envs {
        let docs = documents(env, config);
        // Five functions' inline and trust policies, the CloudWatch role's trust policy, and
        // a policy per bucket where TLS is enforced.
        let buckets = if config.buckets.tls_only { 2 } else { 0 };
        assert_eq!(docs.len(), 5 * 2 + 1 + buckets, "{env}: {:?}", docs.keys());
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), &docs);
        let findings = parliament(dir.path());
        assert!(findings.is_empty(), "{env}: parliament found {findings:#?}");
    }
}

#[test]
fn parliament_reports_list_streams_scoped_to_a_stream() {
    // The checker itself: the grant generate-pdf used to have is flagged.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::fixture("iam/list_streams_on_stream.json"),
        dir.path().join("policy.json"),
    )
    .unwrap();
    let findings = parliament(dir.path());
    let issues: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["issue"].as_str().unwrap(),
                f["detail"][0]["action"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(issues, [("RESOURCE_MISMATCH", "dynamodb:ListStreams")]);
}

/// `xtask --env <env> --json <args>` with every AWS client pointed at `endpoint` the standard
/// way, dummy credentials, and nothing else from this shell's AWS settings.
fn xtask_at(endpoint: &str, env: &str, args: &[&str]) -> common::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["--env", env, "--json"]).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("XTASK") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .expect("running xtask");
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Apply, no-op plan, no-op apply, destroy, nothing left: one environment's rehearsal.
async fn rehearse(emu: &TestEmulator, env: &str, destroy_flags: &[&str]) {
    let zips = tempfile::tempdir().unwrap();
    common::fixture_zips(zips.path());
    let seeds = environments()
        .into_iter()
        .any(|(e, c)| e == env && c.mock_data.enabled);
    if seeds {
        // The seed runs insert-mock-data's deployed code on this machine: the real function
        // (a host build), the other four stand-ins.
        let real = tokio::task::spawn_blocking(common::real_zips)
            .await
            .unwrap();
        std::fs::copy(
            real.join("insert-mock-data.zip"),
            zips.path().join("insert-mock-data.zip"),
        )
        .unwrap();
    }
    let zips = zips.path().to_str().unwrap();
    let endpoint = emu.endpoint();

    let first = xtask_at(&endpoint, env, &["apply", "--yes", "--artifacts-dir", zips]);
    // What is not as on AWS, and said so: the TLS-only bucket policies (plain HTTP here), and
    // where the seed's function runs (moto stores functions but runs none).
    for bucket in ["s3_bucket.artifacts", "s3_bucket.pdfs"] {
        assert!(
            first.stderr.contains(&format!("note: {bucket} (")),
            "{env}: no note about {bucket}:\n{}",
            first.stderr
        );
    }
    let seed_note = format!(
        "note: seed.mock_invoices runs insert-mock-data-{env}:live on this machine's local Lambda runtime"
    );
    let seeded = format!(
        "seeded invoices-table-{env} through insert-mock-data-{env}:live: 100 inserted, 0 unchanged, 0 conflicts, 0 failed"
    );
    for line in [&seed_note, &seeded] {
        assert_eq!(
            first.stderr.contains(line.as_str()),
            seeds,
            "{env}: `{line}` {}expected:\n{}",
            if seeds { "" } else { "not " },
            first.stderr
        );
    }
    let stderr = first.stderr.clone();
    let doc = first.applied();
    let seed_steps: Vec<&Value> = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "seed")
        .collect();
    assert_eq!(seed_steps.len(), usize::from(seeds), "{env}");
    // The seed's counts are in the JSON document too, as its outcome's report.
    let seed_reports: Vec<&Value> = doc["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["id"] == "seed.mock_invoices")
        .map(|o| &o["report"])
        .collect();
    let expected =
        serde_json::json!({"inserted": 100, "unchanged": 0, "conflicts": [], "failed": []});
    assert_eq!(
        seed_reports,
        if seeds { vec![&expected] } else { vec![] },
        "{env}"
    );
    let planned = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "create")
        .count();
    assert!(planned > 40, "{env}: {planned} creates");
    assert!(
        stderr.contains(&format!(
            "Apply complete: {planned} created, 0 updated, 0 replaced, 0 deleted"
        )),
        "{env}: summary does not count {planned} creates:\n{stderr}"
    );

    let (code, _) = xtask_at(
        &endpoint,
        env,
        &["plan", "--detailed-exitcode", "--artifacts-dir", zips],
    )
    .planned();
    assert_eq!(code, 0, "{env}: changes pending right after apply");
    let again = xtask_at(&endpoint, env, &["apply", "--yes", "--artifacts-dir", zips]);
    assert!(!again.stderr.contains("seeded"), "{env}: seeded again");
    let again = again.applied();
    assert_eq!(again["api_calls"]["writes"], 0, "{env}: {again}");

    let mut destroy = vec!["destroy", "--yes"];
    destroy.extend_from_slice(destroy_flags);
    let gone = xtask_at(&endpoint, env, &destroy);
    assert_eq!(gone.code, 0, "{env}: destroy failed:\n{}", gone.stderr);
    let (code, _) = xtask_at(
        &endpoint,
        env,
        &["plan", "--destroy", "--detailed-exitcode"],
    )
    .planned();
    assert_eq!(code, 0, "{env}: something is left to destroy");
    // And from the emulator's side: no table, bucket, function, API or role of the stack.
    let aws = clients(emu, region_of(env)).await;
    let tables = aws.dynamodb.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names(), [] as [String; 0], "{env}");
    let buckets = aws.s3.list_buckets().send().await.unwrap();
    assert_eq!(buckets.buckets().len(), 0, "{env}");
    let functions = aws.lambda.list_functions().send().await.unwrap();
    assert_eq!(functions.functions().len(), 0, "{env}");
    let apis = aws.apigateway.get_rest_apis().send().await.unwrap();
    assert_eq!(apis.items().len(), 0, "{env}");
    let roles = aws.iam.list_roles().send().await.unwrap();
    let ours: Vec<&str> = roles
        .roles()
        .iter()
        .map(|r| r.role_name())
        .filter(|n| n.starts_with("invoice-app-"))
        .collect();
    assert_eq!(ours, [] as [&str; 0], "{env}");
}

fn region_of(env: &str) -> String {
    environments()
        .into_iter()
        .find(|(e, _)| e == env)
        .map(|(_, c)| c.region)
        .unwrap()
}

async fn clients(emu: &TestEmulator, region: String) -> xtask::aws::Clients {
    xtask::aws::Clients::new(
        &xtask::aws::Target::Emulator {
            endpoint: emu.endpoint(),
            region,
        },
        xtask::aws::CallLog::new(false),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_as_written_rehearses_against_the_emulator() {
    let emu = TestEmulator::start().await;
    rehearse(&emu, "dev", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prod_as_written_rehearses_against_the_emulator() {
    // prod is pinned to account 111111111111: the emulator acts as that account.
    let emu = TestEmulator::start_as_account("111111111111").await;
    // prod leaves the account's API Gateway CloudWatch role to the account's owners (apply
    // stops without it): set one up as they would.
    let aws = clients(&emu, region_of("prod")).await;
    let role = aws
        .iam
        .create_role()
        .role_name("apigateway-cloudwatch-logs")
        .assume_role_policy_document(api_account::trust_policy().to_string())
        .send()
        .await
        .unwrap();
    aws.apigateway
        .update_account()
        .patch_operations(
            aws_sdk_apigateway::types::PatchOperation::builder()
                .op(aws_sdk_apigateway::types::Op::Replace)
                .path("/cloudwatchRoleArn")
                .value(role.role().unwrap().arn())
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Its tables have deletion protection, which destroy turns off only when told to.
    rehearse(&emu, "prod", &["--override-deletion-protection"]).await;
}
