//! The strict config loader: every kind of bad input is rejected with where it came from (file,
//! line and column; environment variable; `--set` flag) and what is allowed.

use std::path::{Path, PathBuf};

use stacks::config::{self, BillingMode, Encryption, Origin, StreamViewType};
use stacks::{Config, ConfigError, Override};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn load(name: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    config::load(&fixture(name), "dev", overrides)
}

fn load_err(name: &str) -> ConfigError {
    match load(name, &[]) {
        Ok(c) => panic!("{name} should be rejected, got {c:#?}"),
        Err(e) => e,
    }
}

/// Asserts that the error has exactly one problem, at `line:column` of the fixture, whose
/// message contains every needle, and that the error's Display starts with that origin.
fn assert_single(
    err: &ConfigError,
    name: &str,
    key: &str,
    line: usize,
    column: usize,
    needles: &[&str],
) {
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "expected one problem: {err}");
    assert_at(err, name, key, line, column, needles);
    let display = err.to_string();
    let origin = format!("{}:{line}:{column}", fixture(name).display());
    assert!(
        display.starts_with(&origin),
        "Display should start with `{origin}`:\n{display}"
    );
}

/// Asserts that one of the problems is at `line:column` of the fixture, with `key`, and says
/// every needle.
fn assert_at(
    err: &ConfigError,
    name: &str,
    key: &str,
    line: usize,
    column: usize,
    needles: &[&str],
) {
    let expected = Origin::File {
        path: fixture(name),
        line,
        column,
    };
    let found = err.problems().iter().find(|p| {
        p.origin == expected && p.key == key && needles.iter().all(|n| p.message.contains(n))
    });
    assert!(
        found.is_some(),
        "no problem with key `{key}` at {line}:{column} saying {needles:?} in:\n{err}\n{:#?}",
        err.problems()
    );
    let display = err.to_string();
    assert!(display.contains(&format!("{expected}")), "{display}");
    for n in needles {
        assert!(display.contains(n), "Display lacks `{n}`:\n{display}");
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax, unknown keys and types: reported by the deserialiser, pointed into the file.

#[test]
fn syntax_error_points_at_the_offending_character() {
    let err = load_err("syntax_error.toml");
    // `read_capacity = = 5`: the second `=` (line 4, column 17) is where a value was expected.
    assert_single(&err, "syntax_error.toml", "", 4, 17, &[]);
    assert!(!err.problems()[0].message.is_empty());
}

#[test]
fn unknown_top_level_key_is_rejected_with_the_allowed_keys() {
    let err = load_err("unknown_top_level_key.toml");
    assert_single(
        &err,
        "unknown_top_level_key.toml",
        "",
        3,
        1,
        &["unknown field `regoin`", "`region`", "`invoices_table`"],
    );
}

#[test]
fn unknown_nested_key_is_rejected_with_the_allowed_keys() {
    let err = load_err("unknown_nested_key.toml");
    assert_single(
        &err,
        "unknown_nested_key.toml",
        "",
        3,
        1,
        &[
            "unknown field `read_capacty`",
            "`read_capacity`",
            "`write_capacity`",
        ],
    );
}

#[test]
fn wrong_type_points_at_the_value_and_names_the_expected_type() {
    let err = load_err("wrong_type.toml");
    assert_single(
        &err,
        "wrong_type.toml",
        "",
        2,
        17,
        &["invalid type", "\"five\"", "u32"],
    );
}

#[test]
fn unknown_enum_variant_lists_the_allowed_ones() {
    let err = load_err("unknown_variant.toml");
    assert_single(
        &err,
        "unknown_variant.toml",
        "",
        2,
        16,
        &["ON_DEMAND", "PROVISIONED", "PAY_PER_REQUEST"],
    );
}

// ---------------------------------------------------------------------------------------------
// Values that parse but are impossible: reported by validation, located by key.

#[test]
fn capacity_zero_is_rejected() {
    let err = load_err("capacity_zero.toml");
    assert_single(
        &err,
        "capacity_zero.toml",
        "invoices_table.read_capacity",
        2,
        17,
        &["0 is out of range", "allowed 1 to 40000"],
    );
}

#[test]
fn capacity_above_the_quota_is_rejected() {
    let err = load_err("capacity_too_high.toml");
    assert_single(
        &err,
        "capacity_too_high.toml",
        "invoices_table.write_capacity",
        2,
        18,
        &["40001 is out of range", "allowed 1 to 40000"],
    );
}

#[test]
fn autoscaling_min_above_max_is_rejected() {
    let err = load_err("autoscaling_min_gt_max.toml");
    assert_single(
        &err,
        "autoscaling_min_gt_max.toml",
        "invoices_table.autoscaling.read.min",
        2,
        7,
        &["min (30)", "max (10)"],
    );
}

#[test]
fn target_utilization_above_90_is_rejected() {
    let err = load_err("target_too_high.toml");
    assert_single(
        &err,
        "target_too_high.toml",
        "invoices_table.gsi.autoscaling.write.target_utilization",
        4,
        22,
        &["95", "20..=90"],
    );
}

#[test]
fn target_utilization_below_20_is_rejected_even_as_an_integer() {
    let err = load_err("target_too_low.toml");
    assert_single(
        &err,
        "target_too_low.toml",
        "invoices_table.autoscaling.read.target_utilization",
        2,
        22,
        &["10", "20..=90"],
    );
}

#[test]
fn target_utilization_bounds_are_inclusive() {
    for (t, ok) in [(19.9, false), (20.0, true), (90.0, true), (90.1, false)] {
        let set = Override::from_flag(&format!(
            "invoices_table.autoscaling.write.target_utilization={t}"
        ))
        .unwrap();
        let r = load("empty.toml", &[set]);
        assert_eq!(r.is_ok(), ok, "target {t}: {r:?}");
    }
}

#[test]
fn capacity_outside_the_autoscaling_range_is_rejected() {
    let err = load_err("capacity_outside_range.toml");
    assert_single(
        &err,
        "capacity_outside_range.toml",
        "invoices_table.read_capacity",
        2,
        17,
        &["50 is outside the autoscaling range 5..=20"],
    );
}

#[test]
fn autoscaling_enabled_with_pay_per_request_is_rejected() {
    let err = load_err("autoscaling_pay_per_request.toml");
    assert_single(
        &err,
        "autoscaling_pay_per_request.toml",
        "invoices_table.autoscaling.enabled",
        5,
        11,
        &["PROVISIONED billing only"],
    );
}

#[test]
fn bucket_suffix_with_uppercase_is_rejected() {
    let err = load_err("bucket_suffix_uppercase.toml");
    assert_single(
        &err,
        "bucket_suffix_uppercase.toml",
        "buckets.name_suffix",
        2,
        15,
        &["MyCompany", "a-z, 0-9 and `-`"],
    );
}

#[test]
fn bucket_name_longer_than_63_is_rejected() {
    let err = load_err("bucket_name_too_long.toml");
    assert_single(
        &err,
        "bucket_name_too_long.toml",
        "buckets.name_suffix",
        2,
        15,
        &[
            "invoice-app-artifacts-dev-abcdefghij-abcdefghij-abcdefghij-abcdef",
            "65 characters",
            "allowed 3 to 63",
        ],
    );
    // The PDF bucket's name is shorter and fits.
    assert!(!err.to_string().contains("-pdfs-"));
}

#[test]
fn bad_region_is_rejected() {
    let err = load_err("bad_region.toml");
    assert_single(
        &err,
        "bad_region.toml",
        "region",
        1,
        10,
        &["`europe` is not an AWS region", "eu-west-1"],
    );
}

#[test]
fn bad_allowed_account_id_points_at_the_entry() {
    let err = load_err("bad_account_id.toml");
    // allowed_account_ids = ["111111111111", "12345"]: the second entry starts at column 40.
    assert_single(
        &err,
        "bad_account_id.toml",
        "allowed_account_ids.1",
        1,
        40,
        &["`12345`", "12 digits"],
    );
}

#[test]
fn reserved_tag_key_is_rejected() {
    let err = load_err("reserved_tag.toml");
    assert_single(
        &err,
        "reserved_tag.toml",
        "tags.app",
        3,
        7,
        &["`app`", "reserved: app, env, managed-by"],
    );
}

#[test]
fn keys_only_stream_is_rejected_on_the_invoices_table() {
    let err = load_err("stream_keys_only.toml");
    assert_single(
        &err,
        "stream_keys_only.toml",
        "invoices_table.stream_view_type",
        2,
        20,
        &["NEW_IMAGE or NEW_AND_OLD_IMAGES"],
    );
}

#[test]
fn several_problems_are_reported_together() {
    let name = "several_problems.toml";
    let err = load_err(name);
    assert_at(&err, name, "region", 1, 10, &["`nowhere`"]);
    assert_at(
        &err,
        name,
        "invoices_table.read_capacity",
        4,
        17,
        &["allowed 1 to 40000"],
    );
    assert_at(
        &err,
        name,
        "invoices_table.read_capacity",
        4,
        17,
        &["outside the autoscaling range 5..=20"],
    );
    assert_at(
        &err,
        name,
        "invoices_table.autoscaling.write.target_utilization",
        7,
        22,
        &["20..=90"],
    );
    assert_at(&err, name, "tags.managed-by", 10, 14, &["reserved"]);
    assert_eq!(err.problems().len(), 5, "{err}");
    let display = err.to_string();
    assert_eq!(
        display.lines().filter(|l| l.contains(name)).count(),
        5,
        "{display}"
    );
    // Problems come first, each on its own line, the first one starting with its origin.
    assert!(
        display.starts_with(&fixture(name).display().to_string()),
        "{display}"
    );
}

#[test]
fn bad_environment_name_is_rejected() {
    let err = config::load(&fixture("empty.toml"), "Dev", &[]).unwrap_err();
    assert!(err.to_string().contains("environment name `Dev`"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = load("does-not-exist.toml", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("does-not-exist.toml"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Overrides: environment variables and `--set` flags.

fn env(vars: &[(&str, &str)]) -> Vec<Override> {
    Override::from_env(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn env_override_of_the_wrong_type_names_the_variable() {
    let overrides = env(&[("XTASK__INVOICES_TABLE__READ_CAPACITY", "abc")]);
    let err = load("empty.toml", &overrides).unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(
        p.origin,
        Origin::EnvVar("XTASK__INVOICES_TABLE__READ_CAPACITY".into())
    );
    let display = err.to_string();
    assert!(
        display.starts_with("environment variable XTASK__INVOICES_TABLE__READ_CAPACITY"),
        "{display}"
    );
    assert!(
        display.contains("invalid type") && display.contains("u32"),
        "{display}"
    );
}

#[test]
fn flag_override_failing_validation_names_the_flag() {
    let flag = Override::from_flag("invoices_table.read_capacity=0").unwrap();
    let err = load("empty.toml", &[flag]).unwrap_err();
    assert!(!err.problems().is_empty());
    for p in err.problems() {
        assert_eq!(
            p.origin,
            Origin::Flag("invoices_table.read_capacity=0".into())
        );
        assert_eq!(p.key, "invoices_table.read_capacity");
    }
    let display = err.to_string();
    assert!(
        display.starts_with("flag --set invoices_table.read_capacity=0"),
        "{display}"
    );
    assert!(display.contains("allowed 1 to 40000"), "{display}");
}

#[test]
fn flag_override_of_an_unknown_key_names_the_flag() {
    let flag = Override::from_flag("invoices_table.read_capacty=5").unwrap();
    let err = load("empty.toml", &[flag]).unwrap_err();
    let display = err.to_string();
    assert!(
        display.starts_with("flag --set invoices_table.read_capacty=5"),
        "{display}"
    );
    assert!(display.contains("`read_capacity`"), "{display}");
}

#[test]
fn flag_without_equals_is_rejected() {
    let err = Override::from_flag("invoices_table.read_capacity").unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(
        p.origin,
        Origin::Flag("invoices_table.read_capacity".into())
    );
    let display = err.to_string();
    assert!(
        display.starts_with("flag --set invoices_table.read_capacity"),
        "{display}"
    );
    assert!(display.contains("KEY=VALUE"), "{display}");
}

#[test]
fn flag_with_an_empty_key_segment_is_rejected() {
    let flag = Override::from_flag("invoices_table..read_capacity=5").unwrap();
    let err = load("empty.toml", &[flag]).unwrap_err();
    assert!(err.to_string().contains("empty key segment"), "{err}");
}

#[test]
fn flag_into_a_scalar_is_rejected() {
    let flag = Override::from_flag("invoices_table.read_capacity.min=1").unwrap();
    let err = load("read_capacity_7.toml", &[flag]).unwrap_err();
    let display = err.to_string();
    assert!(
        display.starts_with("flag --set invoices_table.read_capacity.min=1"),
        "{display}"
    );
    assert!(
        display.contains("`read_capacity` is not a table"),
        "{display}"
    );
}

#[test]
fn precedence_is_file_then_env_then_flag() {
    let name = "read_capacity_7.toml";
    assert_eq!(load(name, &[]).unwrap().invoices_table.read_capacity, 7);

    let mut overrides = env(&[("XTASK__INVOICES_TABLE__READ_CAPACITY", "8")]);
    assert_eq!(
        load(name, &overrides).unwrap().invoices_table.read_capacity,
        8
    );

    overrides.push(Override::from_flag("invoices_table.read_capacity=9").unwrap());
    let c = load(name, &overrides).unwrap();
    assert_eq!(c.invoices_table.read_capacity, 9);

    // Later flags win over earlier ones.
    overrides.push(Override::from_flag("invoices_table.read_capacity=10").unwrap());
    assert_eq!(
        load(name, &overrides).unwrap().invoices_table.read_capacity,
        10
    );
}

#[test]
fn later_override_is_blamed_for_a_bad_value() {
    let mut overrides = env(&[("XTASK__INVOICES_TABLE__READ_CAPACITY", "8")]);
    overrides.push(Override::from_flag("invoices_table.read_capacity=99").unwrap());
    let err = load("read_capacity_7.toml", &overrides).unwrap_err();
    assert_eq!(err.problems().len(), 1, "{err}");
    assert_eq!(
        err.problems()[0].origin,
        Origin::Flag("invoices_table.read_capacity=99".into())
    );
}

#[test]
fn file_problem_still_points_into_the_file_when_overrides_are_present() {
    let overrides = env(&[("XTASK__REGION", "eu-west-1")]);
    let err = load("capacity_zero.toml", &overrides).unwrap_err();
    assert_single(
        &err,
        "capacity_zero.toml",
        "invoices_table.read_capacity",
        2,
        17,
        &["allowed 1 to 40000"],
    );
}

#[test]
fn string_overrides_need_no_quotes_even_when_they_look_like_numbers() {
    let overrides = vec![
        Override::from_flag("region=eu-west-1").unwrap(),
        Override::from_flag("buckets.name_suffix=123456789012").unwrap(),
        Override::from_flag("tags.cost-center=4711").unwrap(),
    ];
    let c = load("empty.toml", &overrides).unwrap();
    assert_eq!(c.region, "eu-west-1");
    assert_eq!(c.buckets.name_suffix, "123456789012");
    assert_eq!(c.tags["cost-center"], "4711");
}

#[test]
fn env_overrides_ignore_other_variables_and_lowercase_keys() {
    let o = env(&[
        ("XTASK__BUCKETS__TLS_ONLY", "false"),
        ("PATH", "/bin"),
        ("XTASKX", "1"),
    ]);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].key, "buckets.tls_only");
    let c = load("empty.toml", &o).unwrap();
    assert!(!c.buckets.tls_only);
}

// ---------------------------------------------------------------------------------------------
// Real configs and defaults.

#[test]
fn the_repos_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for env in ["local", "dev", "prod"] {
        let path = root.join("config").join(format!("{env}.toml"));
        let c = config::load(&path, env, &[]).unwrap_or_else(|e| panic!("{env}: {e}"));
        assert_eq!(c.app, "invoice-app");
        assert_eq!(c.invoices_table.stream_view_type, StreamViewType::NewImage);
    }
    let local = config::load(&root.join("config/local.toml"), "local", &[]).unwrap();
    assert!(local.emulator.is_some());
    assert_eq!(local.buckets.name_suffix, "local");
    let prod = config::load(&root.join("config/prod.toml"), "prod", &[]).unwrap();
    assert_eq!(prod.allowed_account_ids, ["111111111111"]);
    assert_eq!(prod.buckets.encryption, Encryption::AwsKms);
    assert!(prod.invoices_table.deletion_protection);
}

#[test]
fn empty_file_loads_with_the_defaults() {
    let c = load("empty.toml", &[]).unwrap();
    assert_eq!(c, Config::default());
    let t = &c.invoices_table;
    assert_eq!(t.billing_mode, BillingMode::Provisioned);
    assert_eq!((t.read_capacity, t.write_capacity), (5, 5));
    assert_eq!((t.gsi.read_capacity, t.gsi.write_capacity), (5, 5));
    for s in [
        &t.autoscaling.read,
        &t.autoscaling.write,
        &t.gsi.autoscaling.read,
        &t.gsi.autoscaling.write,
    ] {
        assert_eq!((s.min, s.max, s.target_utilization), (5, 20, 70.0));
    }
    assert!(t.autoscaling.active(t.billing_mode).is_some());
    assert!(t.point_in_time_recovery);
    assert_eq!(t.stream_view_type, StreamViewType::NewImage);
    assert_eq!(c.processed_table.billing_mode, BillingMode::PayPerRequest);
    assert!(c.processed_table.point_in_time_recovery);
    assert!(c.buckets.tls_only);
    assert_eq!(c.buckets.noncurrent_version_expiry_days, 30);
    assert!(c.emulator.is_none());
}

// ---------------------------------------------------------------------------------------------
// Functions and the stream trigger.

#[test]
fn function_settings_have_defaults() {
    let c = stacks::config::parse(Path::new("x.toml"), "", "dev", &[]).unwrap();
    let f = &c.functions;
    assert!(f.enabled);
    assert_eq!((f.memory_mb, f.timeout_secs, f.keep_versions), (256, 10, 3));
    assert_eq!(f.architecture.as_str(), "x86_64");
    assert_eq!((f.log_retention_days, f.log_level.as_str()), (14, "info"));
    let s = &c.stream_trigger;
    assert_eq!(s.starting_position.as_str(), "LATEST");
    assert_eq!(
        (s.batch_size, s.batching_window_secs, s.max_retries),
        (10, 0, 3)
    );
    assert!(s.bisect_on_error && s.report_batch_item_failures);
}

#[test]
fn bad_function_settings_are_located_by_key() {
    let err = load_err("bad-functions.toml");
    assert_eq!(err.problems().len(), 5, "{err}");
    let name = "bad-functions.toml";
    assert_at(&err, name, "functions.memory_mb", 2, 13, &["128 to 10240"]);
    assert_at(
        &err,
        name,
        "functions.log_retention_days",
        3,
        22,
        &["retention"],
    );
    assert_at(
        &err,
        name,
        "functions.overrides.generate-pdf.timeout_secs",
        6,
        16,
        &["1 to 900"],
    );
    assert_at(
        &err,
        name,
        "functions.overrides.no-such-function",
        8,
        1,
        &["unknown function", "generate-pdf"],
    );
    assert_at(
        &err,
        name,
        "stream_trigger.batch_size",
        12,
        14,
        &["1 to 10000"],
    );
}

#[test]
fn function_memory_can_be_set_per_flag() {
    let o = Override::from_flag("functions.overrides.insert-invoice.memory_mb=512").unwrap();
    let c = stacks::config::parse(Path::new("x.toml"), "", "dev", &[o]).unwrap();
    assert_eq!(c.functions.overrides["insert-invoice"].memory_mb, Some(512));
}

// ---------------------------------------------------------------------------------------------
// Seeding.

#[test]
fn mock_data_is_off_unless_an_environment_asks_for_it() {
    assert!(!load("empty.toml", &[]).unwrap().mock_data.enabled);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (env, on) in [("local", true), ("dev", true), ("prod", false)] {
        let path = root.join("config").join(format!("{env}.toml"));
        let c = config::load(&path, env, &[]).unwrap();
        assert_eq!(c.mock_data.enabled, on, "{env}");
    }
    let flag = Override::from_flag("mock_data.enabled=true").unwrap();
    assert!(load("empty.toml", &[flag]).unwrap().mock_data.enabled);
}

#[test]
fn mock_data_of_the_wrong_type_points_at_the_value() {
    let err = load_err("mock_data_wrong_type.toml");
    assert_single(
        &err,
        "mock_data_wrong_type.toml",
        "",
        2,
        11,
        &["invalid type", "\"yes\"", "bool"],
    );
}

#[test]
fn unknown_mock_data_key_is_rejected_with_the_allowed_keys() {
    let err = load_err("mock_data_unknown_key.toml");
    assert_single(
        &err,
        "mock_data_unknown_key.toml",
        "",
        3,
        1,
        &["unknown field `enable`", "`enabled`"],
    );
}

#[test]
fn mock_data_without_the_functions_is_rejected_at_its_key() {
    let err = load_err("mock_data_without_functions.toml");
    assert_single(
        &err,
        "mock_data_without_functions.toml",
        "mock_data.enabled",
        5,
        11,
        &["insert-mock-data", "functions.enabled"],
    );
    // Functions turned off by a flag: the seeding key in the file is what is pointed at.
    let flag = Override::from_flag("functions.enabled=false").unwrap();
    let err = stacks::config::parse(
        Path::new("x.toml"),
        "[mock_data]\nenabled = true\n",
        "dev",
        &[flag],
    )
    .unwrap_err();
    assert_eq!(
        err.problems()[0].origin,
        Origin::File {
            path: "x.toml".into(),
            line: 2,
            column: 11
        },
        "{err}"
    );
}
