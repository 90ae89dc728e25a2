//! The invoice app's desired state built from a config.

use std::collections::BTreeSet;

use stacks::config::{BillingMode, Config};
use stacks::invoice_app::{
    ARTIFACTS_BUCKET, INVOICES_GSI, INVOICES_TABLE, PDF_BUCKET, PROCESSED_TABLE,
};
use stacks::{Billing, Capacity, Ensure, Resource, Spec, Stack, invoice_app};

const ACCOUNT: &str = "123456789012";

fn target(env: &str) -> stacks::Target<'_> {
    stacks::Target {
        env,
        account_id: ACCOUNT,
        region: "eu-west-1",
    }
}

fn build(c: &Config) -> Stack {
    invoice_app(c, &target("dev"), &Default::default())
}

fn count(stack: &Stack, pred: impl Fn(&Resource) -> bool) -> usize {
    stack.resources.iter().filter(|r| pred(r)).count()
}

fn is_target(r: &Resource) -> bool {
    matches!(r.spec, Spec::ScalableTarget(_))
}

fn is_policy(r: &Resource) -> bool {
    matches!(r.spec, Spec::ScalingPolicy(_))
}

fn table<'a>(stack: &'a Stack, id: &str) -> &'a stacks::TableSpec {
    match &stack.get(id).unwrap().spec {
        Spec::Table(t) => t,
        other => panic!("{id} is not a table: {other:?}"),
    }
}

fn bucket<'a>(stack: &'a Stack, id: &str) -> &'a stacks::BucketSpec {
    match &stack.get(id).unwrap().spec {
        Spec::Bucket(b) => b,
        other => panic!("{id} is not a bucket: {other:?}"),
    }
}

fn scaling_ids(label: &str) -> [String; 4] {
    [
        format!("scalable_target.{label}_read"),
        format!("scalable_target.{label}_write"),
        format!("scaling_policy.{label}_read"),
        format!("scaling_policy.{label}_write"),
    ]
}

#[test]
fn default_config_builds_two_buckets_two_tables_and_invoices_autoscaling() {
    let s = build(&Config::default());
    assert_eq!(s.env, "dev");
    assert_eq!(s.app, "invoice-app");
    assert_eq!(count(&s, |r| matches!(r.spec, Spec::Bucket(_))), 2);
    assert_eq!(count(&s, |r| matches!(r.spec, Spec::Table(_))), 2);

    for label in ["invoices", "invoices_gsi"] {
        for id in scaling_ids(label) {
            let r = s.get(&id).unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!(r.ensure, Ensure::Present, "{id}");
        }
    }
    assert_eq!(
        count(&s, |r| is_target(r) && r.ensure == Ensure::Present),
        4
    );
    assert_eq!(
        count(&s, |r| is_policy(r) && r.ensure == Ensure::Present),
        4
    );

    // The processed table is PAY_PER_REQUEST: its scaling is listed (so turning it off later
    // deletes it) but absent.
    for id in scaling_ids("processed") {
        let r = s.get(&id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(r.ensure, Ensure::Absent, "{id}");
    }
    for id in [
        ARTIFACTS_BUCKET,
        PDF_BUCKET,
        INVOICES_TABLE,
        PROCESSED_TABLE,
    ] {
        assert_eq!(s.get(id).unwrap().ensure, Ensure::Present, "{id}");
    }
    // Storage, scaling, functions, and the API's 9 (account, API, log group, stage, key, plan,
    // 3 permissions).
    assert_eq!(s.resources.len(), 4 + 12 + 21 + 9);
}

#[test]
fn ids_are_unique() {
    let s = build(&Config::default());
    let ids: BTreeSet<&str> = s.resources.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), s.resources.len());
}

#[test]
fn names_derive_from_app_env_and_account_or_suffix() {
    let s = build(&Config::default());
    assert_eq!(table(&s, INVOICES_TABLE).name, "invoices-table-dev");
    assert_eq!(
        table(&s, PROCESSED_TABLE).name,
        "processed-invoices-table-dev"
    );
    assert_eq!(
        bucket(&s, ARTIFACTS_BUCKET).name,
        "invoice-app-artifacts-dev-123456789012"
    );
    assert_eq!(
        bucket(&s, PDF_BUCKET).name,
        "invoice-app-pdfs-dev-123456789012"
    );

    let mut c = Config::default();
    c.buckets.name_suffix = "acme".into();
    c.name_prefix = "pr7-".into();
    let s = build(&c);
    assert_eq!(
        bucket(&s, ARTIFACTS_BUCKET).name,
        "pr7-invoice-app-artifacts-dev-acme"
    );
    assert_eq!(bucket(&s, PDF_BUCKET).name, "pr7-invoice-app-pdfs-dev-acme");
    assert_eq!(table(&s, INVOICES_TABLE).name, "pr7-invoices-table-dev");
    assert!(
        s.resources.iter().all(|r| !r.spec.name().contains(ACCOUNT)),
        "the configured suffix replaces the account id"
    );
}

#[test]
fn invoices_table_shape() {
    let s = build(&Config::default());
    let t = table(&s, INVOICES_TABLE);
    assert_eq!(t.hash_key.name, "InvoiceID");
    assert_eq!(t.range_key.as_ref().unwrap().name, "CustomerID");
    assert_eq!(t.gsis.len(), 1);
    let gsi = &t.gsis[0];
    assert_eq!(gsi.name, INVOICES_GSI);
    assert_eq!(gsi.hash_key.name, "CustomerID");
    assert!(gsi.projection_all);
    assert_eq!(
        gsi.capacity,
        Some(Capacity {
            read: 5,
            write: 5,
            read_range: Some((5, 20)),
            write_range: Some((5, 20)),
        })
    );
    assert_eq!(
        t.billing,
        Billing::Provisioned(Capacity {
            read: 5,
            write: 5,
            read_range: Some((5, 20)),
            write_range: Some((5, 20)),
        })
    );
    assert!(t.point_in_time_recovery && t.sse_kms);
    assert_eq!(t.stream, Some(stacks::config::StreamViewType::NewImage));

    let p = table(&s, PROCESSED_TABLE);
    assert_eq!(p.hash_key.name, "InvoiceID");
    assert!(p.range_key.is_none() && p.gsis.is_empty());
    assert_eq!(p.billing, Billing::PayPerRequest);
}

#[test]
fn scaling_specs_address_the_table_and_the_index() {
    let s = build(&Config::default());
    let expect = [
        (
            "invoices_read",
            "table/invoices-table-dev",
            "dynamodb:table:ReadCapacityUnits",
        ),
        (
            "invoices_write",
            "table/invoices-table-dev",
            "dynamodb:table:WriteCapacityUnits",
        ),
        (
            "invoices_gsi_read",
            "table/invoices-table-dev/index/CustomerID-Index",
            "dynamodb:index:ReadCapacityUnits",
        ),
        (
            "invoices_gsi_write",
            "table/invoices-table-dev/index/CustomerID-Index",
            "dynamodb:index:WriteCapacityUnits",
        ),
    ];
    let mut policy_names = BTreeSet::new();
    for (label, resource_id, dimension) in expect {
        let Spec::ScalableTarget(t) = &s.get(&format!("scalable_target.{label}")).unwrap().spec
        else {
            panic!("not a target")
        };
        assert_eq!(
            (t.resource_id.as_str(), t.dimension.as_str()),
            (resource_id, dimension)
        );
        assert_eq!((t.min, t.max), (5, 20));
        let Spec::ScalingPolicy(p) = &s.get(&format!("scaling_policy.{label}")).unwrap().spec
        else {
            panic!("not a policy")
        };
        assert_eq!(
            (p.resource_id.as_str(), p.dimension.as_str()),
            (resource_id, dimension)
        );
        assert_eq!(p.target_value, 70.0);
        let metric = if label.ends_with("read") {
            "DynamoDBReadCapacityUtilization"
        } else {
            "DynamoDBWriteCapacityUtilization"
        };
        assert_eq!(p.metric, metric);
        assert!(
            policy_names.insert(p.name.clone()),
            "duplicate policy name {}",
            p.name
        );
    }
}

#[test]
fn configured_scaling_values_reach_the_specs() {
    let mut c = Config::default();
    c.invoices_table.read_capacity = 10;
    c.invoices_table.autoscaling.read.min = 10;
    c.invoices_table.autoscaling.read.max = 200;
    c.invoices_table.autoscaling.read.target_utilization = 55.0;
    c.invoices_table.gsi.autoscaling.write.max = 100;
    let s = build(&c);
    let Spec::ScalableTarget(t) = &s.get("scalable_target.invoices_read").unwrap().spec else {
        panic!()
    };
    assert_eq!((t.min, t.max), (10, 200));
    let Spec::ScalingPolicy(p) = &s.get("scaling_policy.invoices_read").unwrap().spec else {
        panic!()
    };
    assert_eq!(p.target_value, 55.0);
    let Spec::ScalableTarget(t) = &s.get("scalable_target.invoices_gsi_write").unwrap().spec else {
        panic!()
    };
    assert_eq!((t.min, t.max), (5, 100));
    let Billing::Provisioned(cap) = table(&s, INVOICES_TABLE).billing else {
        panic!()
    };
    assert_eq!(cap.read, 10);
    assert_eq!(cap.read_range, Some((10, 200)));
}

fn taggable(r: &Resource) -> Option<&std::collections::BTreeMap<String, String>> {
    match &r.spec {
        Spec::Bucket(b) => Some(&b.tags),
        Spec::Table(t) => Some(&t.tags),
        Spec::Role(r) => Some(&r.tags),
        Spec::LogGroup(l) => Some(&l.tags),
        Spec::Function(f) => Some(&f.tags),
        Spec::RestApi(a) => Some(&a.tags),
        Spec::ApiStage(a) => Some(&a.tags),
        Spec::ApiKey(k) => Some(&k.tags),
        Spec::UsagePlan(u) => Some(&u.tags),
        // Artifacts belong to their bucket, the trigger and permissions to their function, the
        // seed's items to their table.
        Spec::ScalableTarget(_)
        | Spec::ScalingPolicy(_)
        | Spec::Object(_)
        | Spec::EventSourceMapping(_)
        | Spec::ApiAccount(_)
        | Spec::LambdaPermission(_)
        | Spec::Seed(_) => None,
    }
}

#[test]
fn every_taggable_resource_carries_the_ownership_tags() {
    let s = build(&Config::default());
    assert_eq!(s.ownership_tags["app"], "invoice-app");
    assert_eq!(s.ownership_tags["env"], "dev");
    assert_eq!(s.ownership_tags["managed-by"], "xtask");
    let mut tagged = 0;
    for r in &s.resources {
        if let Some(tags) = taggable(r) {
            tagged += 1;
            for (k, v) in &s.ownership_tags {
                assert_eq!(tags.get(k), Some(v), "{} lacks {k}={v}", r.id);
            }
        }
    }
    assert_eq!(tagged, 4 + 3 * 5 + 5);
}

#[test]
fn config_tags_are_merged_but_ownership_tags_win() {
    let mut c = Config::default();
    c.tags.insert("cost-center".into(), "invoices".into());
    // Validation rejects this, but the builder must not let it through either.
    c.tags.insert("app".into(), "someone-else".into());
    c.tags.insert("managed-by".into(), "terraform".into());
    let s = build(&c);
    for r in &s.resources {
        if let Some(tags) = taggable(r) {
            assert_eq!(tags["cost-center"], "invoices", "{}", r.id);
            assert_eq!(tags["app"], "invoice-app", "{}", r.id);
            assert_eq!(tags["env"], "dev", "{}", r.id);
            assert_eq!(tags["managed-by"], "xtask", "{}", r.id);
            assert_eq!(tags.len(), 4);
        }
    }
    assert_eq!(s.ownership_tags.len(), 3);
}

#[test]
fn pay_per_request_lists_scaling_as_absent() {
    let mut c = Config::default();
    c.invoices_table.billing_mode = BillingMode::PayPerRequest;
    let s = build(&c);
    let t = table(&s, INVOICES_TABLE);
    assert_eq!(t.billing, Billing::PayPerRequest);
    assert_eq!(t.gsis[0].capacity, None);
    for label in ["invoices", "invoices_gsi", "processed"] {
        for id in scaling_ids(label) {
            let r = s.get(&id).unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!(r.ensure, Ensure::Absent, "{id}");
        }
    }
    assert_eq!(count(&s, |r| is_target(r) || is_policy(r)), 12);
    assert_eq!(count(&s, |r| r.ensure == Ensure::Present), 4 + 21 + 9);
}

#[test]
fn autoscaling_disabled_keeps_fixed_capacity_and_lists_scaling_as_absent() {
    let mut c = Config::default();
    c.invoices_table.autoscaling.enabled = Some(false);
    let s = build(&c);
    let Billing::Provisioned(cap) = table(&s, INVOICES_TABLE).billing else {
        panic!()
    };
    assert_eq!((cap.read_range, cap.write_range), (None, None));
    for id in scaling_ids("invoices") {
        assert_eq!(s.get(&id).unwrap().ensure, Ensure::Absent, "{id}");
    }
    // The index scales on its own.
    for id in scaling_ids("invoices_gsi") {
        assert_eq!(s.get(&id).unwrap().ensure, Ensure::Present, "{id}");
    }
    let gsi_cap = table(&s, INVOICES_TABLE).gsis[0].capacity.unwrap();
    assert_eq!(gsi_cap.read_range, Some((5, 20)));
}

#[test]
fn provisioned_processed_table_gets_its_scaling() {
    let mut c = Config::default();
    c.processed_table.billing_mode = BillingMode::Provisioned;
    let s = build(&c);
    for id in scaling_ids("processed") {
        assert_eq!(s.get(&id).unwrap().ensure, Ensure::Present, "{id}");
    }
    let Spec::ScalableTarget(t) = &s.get("scalable_target.processed_read").unwrap().spec else {
        panic!()
    };
    assert_eq!(t.resource_id, "table/processed-invoices-table-dev");
}

#[test]
fn into_absent_marks_everything_absent() {
    let s = build(&Config::default());
    // The account-wide CloudWatch role setting is shared and never undone by a destroy.
    let n = s.resources.len() - 1;
    let ids: Vec<String> = s
        .resources
        .iter()
        .filter(|r| !matches!(r.spec, Spec::ApiAccount(_)))
        .map(|r| r.id.clone())
        .collect();
    let absent = s.into_absent();
    assert_eq!(absent.resources.len(), n);
    assert!(absent.resources.iter().all(|r| r.ensure == Ensure::Absent));
    let after: Vec<String> = absent.resources.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, after, "ids and order are kept");
    assert_eq!(absent.ownership_tags.len(), 3);
}

#[test]
fn dependencies_point_at_existing_resources_policy_target_table() {
    for billing in [BillingMode::Provisioned, BillingMode::PayPerRequest] {
        let mut c = Config::default();
        c.invoices_table.billing_mode = billing;
        c.processed_table.billing_mode = billing;
        let s = build(&c);
        for r in &s.resources {
            for d in &r.depends_on {
                assert!(s.get(d).is_some(), "{} depends on missing {d}", r.id);
                assert_ne!(d, &r.id);
            }
            match &r.spec {
                Spec::ScalingPolicy(p) => {
                    assert_eq!(r.depends_on.len(), 1, "{}", r.id);
                    let target = s.get(&r.depends_on[0]).unwrap();
                    let Spec::ScalableTarget(t) = &target.spec else {
                        panic!("{} depends on a non-target", r.id)
                    };
                    assert_eq!(
                        (&t.resource_id, &t.dimension),
                        (&p.resource_id, &p.dimension)
                    );
                    assert_eq!(target.ensure, r.ensure);
                }
                Spec::ScalableTarget(t) => {
                    assert_eq!(r.depends_on.len(), 1, "{}", r.id);
                    let Spec::Table(table) = &s.get(&r.depends_on[0]).unwrap().spec else {
                        panic!("{} depends on a non-table", r.id)
                    };
                    assert!(
                        t.resource_id == format!("table/{}", table.name)
                            || t.resource_id
                                .starts_with(&format!("table/{}/index/", table.name)),
                        "{} scales {} but depends on {}",
                        r.id,
                        t.resource_id,
                        table.name
                    );
                }
                Spec::Bucket(_) | Spec::Table(_) | Spec::Role(_) | Spec::LogGroup(_) => {
                    assert!(r.depends_on.is_empty())
                }
                // Checked in detail by the function tests below.
                Spec::Object(_) | Spec::Function(_) | Spec::EventSourceMapping(_) => {
                    assert!(!r.depends_on.is_empty())
                }
                // The API's own graph is checked in `api_resources_depend_on_what_they_reference`.
                _ => {}
            }
        }
        // Every resource appears after what it depends on.
        for (i, r) in s.resources.iter().enumerate() {
            for d in &r.depends_on {
                let j = s.resources.iter().position(|x| &x.id == d).unwrap();
                assert!(j < i, "{} listed before its dependency {d}", r.id);
            }
        }
    }
}

#[test]
fn repo_configs_build_valid_stacks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for env in ["local", "dev", "prod"] {
        let path = root.join("config").join(format!("{env}.toml"));
        let c = stacks::config::load(&path, env, &[]).unwrap();
        let s = invoice_app(&c, &target(env), &Default::default());
        for r in &s.resources {
            if let Spec::Bucket(b) = &r.spec {
                stacks::names::check_bucket_name(&b.name)
                    .unwrap_or_else(|e| panic!("{env}: {}: {e}", b.name));
            }
        }
        assert_eq!(
            table(&s, INVOICES_TABLE).name,
            format!("invoices-table-{env}")
        );
    }
}

fn function_spec<'a>(stack: &'a Stack, function: &str) -> &'a stacks::FunctionSpec {
    match &stack
        .get(&stacks::invoice_app::function_id(function))
        .unwrap()
        .spec
    {
        Spec::Function(f) => f,
        other => panic!("not a function: {other:?}"),
    }
}

#[test]
fn functions_get_names_runtime_env_code_and_their_dependencies() {
    let mut code = std::collections::BTreeMap::new();
    code.insert(
        "insert-invoice".to_string(),
        stacks::Code {
            zip_path: "/tmp/insert-invoice.zip".into(),
            size_bytes: 9_000_000,
            sha256_hex: "ab".repeat(32),
            sha256_b64: "q6s=".into(),
        },
    );
    let mut c = Config {
        name_prefix: "pr7-".into(),
        ..Config::default()
    };
    c.functions.overrides.insert(
        "generate-pdf".into(),
        stacks::config::FunctionOverride {
            memory_mb: Some(512),
            ..Default::default()
        },
    );
    let s = invoice_app(&c, &target("dev"), &code);
    let f = function_spec(&s, "insert-invoice");
    assert_eq!(f.name, "pr7-insert-invoice-dev");
    assert_eq!(f.runtime, "provided.al2023");
    assert_eq!(f.handler, "bootstrap");
    assert_eq!((f.memory_mb, f.timeout_secs), (256, 10));
    assert_eq!(f.alias, "live");
    assert_eq!(f.keep_versions, 3);
    assert_eq!(
        f.role_arn,
        "arn:aws:iam::123456789012:role/pr7-invoice-app-insert-invoice-dev"
    );
    assert_eq!(
        f.code_key,
        format!("functions/insert-invoice/{}.zip", "ab".repeat(32))
    );
    assert_eq!(f.code_bucket, "pr7-invoice-app-artifacts-dev-123456789012");
    assert_eq!(
        f.environment.keys().collect::<Vec<_>>(),
        ["INVOICES_TABLE", "LOG_LEVEL"]
    );
    assert_eq!(f.environment["INVOICES_TABLE"], "pr7-invoices-table-dev");
    let g = function_spec(&s, "generate-pdf");
    assert_eq!(g.memory_mb, 512, "per-function override");
    assert_eq!(
        g.environment.keys().collect::<Vec<_>>(),
        ["LOG_LEVEL", "PDF_BUCKET", "PROCESSED_TABLE"]
    );
    // A zip within Lambda's direct-upload quota goes with the call: the function does not
    // wait for the artifact's upload to S3. A larger one is read from S3, after the upload.
    assert_eq!(f.code_zip, Some("/tmp/insert-invoice.zip".into()));
    let r = s.get("lambda_function.insert_invoice").unwrap();
    assert_eq!(
        r.depends_on,
        ["iam_role.insert_invoice", "log_group.insert_invoice"]
    );
    assert!(
        s.get("s3_object.insert_invoice_code").is_some(),
        "still uploaded"
    );
    code.get_mut("insert-invoice").unwrap().size_bytes = stacks::DIRECT_UPLOAD_LIMIT + 1;
    let big = invoice_app(&c, &target("dev"), &code);
    assert_eq!(function_spec(&big, "insert-invoice").code_zip, None);
    assert_eq!(
        big.get("lambda_function.insert_invoice")
            .unwrap()
            .depends_on,
        [
            "iam_role.insert_invoice",
            "log_group.insert_invoice",
            "s3_object.insert_invoice_code"
        ]
    );
    let Spec::LogGroup(l) = &s.get("log_group.insert_invoice").unwrap().spec else {
        panic!()
    };
    assert_eq!(l.name, "/aws/lambda/pr7-insert-invoice-dev");
    assert_eq!(l.retention_days, 14);
    let m = s
        .get(stacks::invoice_app::STREAM_MAPPING)
        .expect("stream mapping");
    assert_eq!(
        m.depends_on,
        [INVOICES_TABLE, "lambda_function.generate_pdf"]
    );
    let Spec::EventSourceMapping(m) = &m.spec else {
        panic!()
    };
    assert_eq!(m.function_name, "pr7-generate-pdf-dev");
    assert_eq!(m.table_name, "pr7-invoices-table-dev");
    assert_eq!(
        (
            m.batch_size,
            m.max_retries,
            m.bisect_on_error,
            m.report_batch_item_failures
        ),
        (10, 3, true, true)
    );
}

#[test]
fn disabled_functions_are_listed_as_absent() {
    let mut c = Config::default();
    c.functions.enabled = false;
    let s = build(&c);
    let lambda_kinds = |r: &&Resource| {
        matches!(
            r.spec,
            Spec::Role(_)
                | Spec::LogGroup(_)
                | Spec::Object(_)
                | Spec::Function(_)
                | Spec::EventSourceMapping(_)
        )
    };
    // The API's access log group is the API's, not the functions'.
    let all: Vec<&Resource> = s
        .resources
        .iter()
        .filter(lambda_kinds)
        .filter(|r| r.id != stacks::api::ACCESS_LOG_GROUP)
        .collect();
    assert_eq!(all.len(), 21);
    assert!(all.iter().all(|r| r.ensure == Ensure::Absent));
}

#[test]
fn api_resources_depend_on_what_they_reference() {
    let s = build(&Config::default());
    let deps = |id: &str| s.get(id).unwrap().depends_on.clone();
    assert_eq!(
        deps(stacks::api::STAGE),
        [
            stacks::api::REST_API,
            stacks::api::ACCESS_LOG_GROUP,
            stacks::api::ACCOUNT
        ]
    );
    assert_eq!(
        deps(stacks::api::USAGE_PLAN),
        [stacks::api::STAGE, stacks::api::API_KEY]
    );
    let perms: Vec<&Resource> = s
        .resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::LambdaPermission(_)))
        .collect();
    assert_eq!(perms.len(), 3);
    for p in perms {
        assert!(p.depends_on.contains(&stacks::api::REST_API.to_string()));
        assert!(
            p.depends_on
                .iter()
                .any(|d| d.starts_with("lambda_function.")),
            "{} waits for its function and alias",
            p.id
        );
        let Spec::LambdaPermission(l) = &p.spec else {
            unreachable!()
        };
        assert_eq!(l.qualifier, "live");
        assert!(l.source_arn_suffix.starts_with("v1/"), "{l:?}");
    }
}

#[test]
fn api_disabled_lists_its_resources_as_absent() {
    let mut c = Config::default();
    c.api.enabled = false;
    let s = build(&c);
    // The account-wide role setting is not listed at all: it is never removed.
    assert!(s.get(stacks::api::ACCOUNT).is_none());
    assert_eq!(
        count(&s, |r| r.ensure == Ensure::Absent && r.id.contains("api")),
        4
    );
    assert_eq!(
        count(&s, |r| matches!(r.spec, Spec::LambdaPermission(_))
            && r.ensure == Ensure::Absent),
        3
    );
}

// ---------------------------------------------------------------------------------------------
// Seeding.

fn seeds(s: &Stack) -> Vec<&Resource> {
    s.resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::Seed(_)))
        .collect()
}

#[test]
fn the_seed_step_is_there_iff_mock_data_is_on_and_not_left_out() {
    assert!(seeds(&build(&Config::default())).is_empty());
    let mut c = Config::default();
    c.mock_data.enabled = true;
    let s = build(&c);
    let found = seeds(&s);
    assert_eq!(found.len(), 1);
    let seed = found[0];
    assert_eq!(seed.id, stacks::invoice_app::SEED);
    assert_eq!(seed.ensure, Ensure::Present);
    let Spec::Seed(spec) = &seed.spec else {
        unreachable!()
    };
    assert_eq!(spec.function_name, "insert-mock-data-dev");
    assert_eq!(spec.alias, "live");
    assert_eq!(spec.table_name, "invoices-table-dev");
    assert_eq!(
        spec.artifacts_bucket,
        "invoice-app-artifacts-dev-123456789012"
    );
    assert_eq!(spec.invoke, stacks::SeedInvoke::Lambda);
    assert_eq!(
        seed.spec.name(),
        "insert-mock-data-dev:live -> invoices-table-dev"
    );

    // `--no-seed`: gone, and everything else as it was.
    let without = s.clone().without_seed();
    assert!(seeds(&without).is_empty());
    let mut others = s.resources.clone();
    others.retain(|r| r.id != stacks::invoice_app::SEED);
    assert_eq!(without.resources, others);
    // Nothing to destroy either: a destroy plans no seed step.
    assert!(seeds(&s.into_absent()).is_empty());
}

#[test]
fn the_seed_waits_for_the_table_the_alias_its_permissions_and_the_trigger() {
    let mut c = Config::default();
    c.mock_data.enabled = true;
    let s = build(&c);
    let seed = s.get(stacks::invoice_app::SEED).unwrap();
    assert_eq!(
        seed.depends_on,
        [
            INVOICES_TABLE,
            "iam_role.insert_mock_data",
            "lambda_function.insert_mock_data",
            // Run from the artifacts bucket where functions cannot run (the emulator).
            "s3_object.insert_mock_data_code",
            stacks::invoice_app::STREAM_MAPPING,
        ]
    );
    // Nothing waits for the seed: leaving it out cannot break the graph.
    assert!(s.resources.iter().all(|r| !r.depends_on.contains(&seed.id)));
    // The function (with its `live` alias) is the one the seed invokes.
    let Spec::Function(f) = &s.get("lambda_function.insert_mock_data").unwrap().spec else {
        panic!("not a function")
    };
    let Spec::Seed(spec) = &seed.spec else {
        unreachable!()
    };
    assert_eq!((&f.name, &f.alias), (&spec.function_name, &spec.alias));
}

#[test]
fn the_seed_keys_are_insert_mock_data_s_sample_keys() {
    let mut c = Config::default();
    c.mock_data.enabled = true;
    let s = build(&c);
    let Spec::Seed(spec) = &s.get(stacks::invoice_app::SEED).unwrap().spec else {
        unreachable!()
    };
    let keys = spec.keys();
    assert_eq!(keys.len(), 100);
    let key = |i: usize| (keys[i].0.as_str(), keys[i].1.as_str());
    assert_eq!(key(0), ("INV1", "CUST1"));
    assert_eq!(key(9), ("INV10", "CUST10"));
    assert_eq!(key(10), ("INV11", "CUST1"));
    assert_eq!(key(99), ("INV100", "CUST10"));
    let distinct: BTreeSet<&String> = keys.iter().map(|(i, _)| i).collect();
    assert_eq!(distinct.len(), 100);
}
