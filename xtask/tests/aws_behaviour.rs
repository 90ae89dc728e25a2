//! The providers against AWS behaviours the emulator cannot produce (propagation delays,
//! asynchronous deletes, quotas, eventual consistency), with simulated answers: the SDK's
//! `aws-smithy-mocks` returns modelled outputs and errors in sequence, the real clients (with
//! xtask's call-counting interceptor) send them, and each test asserts the calls made, in
//! order, and the outcome. The clock is tokio's paused one, so backoffs take no real time and
//! the waits measured are exactly the ones the code chose.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use aws_smithy_types::error::ErrorMetadata;
use stacks::config::Config;
use stacks::{Resource, Spec, Target};
use tokio::time::Instant;
use xtask::aws::{CallLog, Clients};
use xtask::engine::{Ctx, Options, Provider};

const REGION: &str = "eu-west-1";
const ACCOUNT: &str = "123456789012";
const WAIT: Duration = Duration::from_secs(600);

/// The invoice app's resources for a `dev` environment with the default configuration.
fn resources() -> Vec<Resource> {
    let target = Target {
        env: "dev",
        account_id: ACCOUNT,
        region: REGION,
    };
    stacks::invoice_app(&Config::default(), &target, &BTreeMap::new()).resources
}

fn resource(id: &str) -> Spec {
    resources()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no resource {id} in the stack"))
        .spec
}

/// An engine context whose clients answer from `rules` only (an unmatched call panics), and
/// the log of every call they made.
fn simulated(rules: &[&Rule]) -> (Ctx, Arc<CallLog>) {
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "simulated",
            "simulated",
            None,
            None,
            "tests",
        )))
        .http_client(create_mock_http_client())
        .retry_config(RetryConfig::standard().with_max_attempts(8))
        .build();
    let log = CallLog::new(false);
    let mut aws = Clients::from_sdk(sdk, log.clone(), false);
    let mock = || {
        rules.iter().fold(
            MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
            |m, r| m.with_rule(r),
        )
    };
    macro_rules! simulate {
        ($($field:ident: $krate:ident),*) => {$(
            aws.$field = $krate::Client::from_conf(
                aws.$field.config().to_builder().interceptor(mock()).build(),
            );
        )*};
    }
    simulate!(
        s3: aws_sdk_s3,
        dynamodb: aws_sdk_dynamodb,
        dynamodbstreams: aws_sdk_dynamodbstreams,
        autoscaling: aws_sdk_applicationautoscaling,
        iam: aws_sdk_iam,
        lambda: aws_sdk_lambda,
        apigateway: aws_sdk_apigateway,
        ssm: aws_sdk_ssm
    );
    let ctx = Ctx {
        aws,
        account_id: ACCOUNT.into(),
        region: REGION.into(),
        wait_timeout: WAIT,
        options: Options::default(),
    };
    (ctx, log)
}

/// `Service.Operation` of every call, in order.
fn calls(log: &CallLog) -> Vec<String> {
    log.calls()
        .iter()
        .map(|c| format!("{}.{}", c.service, c.operation))
        .collect()
}

fn code_only<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
    make: fn(ErrorMetadata) -> E,
    code: &str,
) -> E {
    make(ErrorMetadata::builder().code(code).build())
}

/// Records the (paused) clock each time a matching request is sent.
#[derive(Clone, Default)]
struct Times(Arc<Mutex<Vec<Instant>>>);

impl Times {
    fn stamp(&self) -> bool {
        self.0.lock().unwrap().push(Instant::now());
        true
    }
    fn gaps(&self) -> Vec<Duration> {
        let t = self.0.lock().unwrap();
        t.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

mod dynamodb {
    use super::*;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
    use aws_sdk_dynamodb::operation::update_table::{UpdateTableInput, UpdateTableOutput};
    use aws_sdk_dynamodb::types::{
        GlobalSecondaryIndexDescription, IndexStatus, TableDescription, TableStatus,
    };
    use stacks::{AttrType, KeyAttr};
    use xtask::providers::dynamodb_table::{DynamoDbTable, ObservedGsi, ObservedTable, TableField};

    fn spec() -> stacks::TableSpec {
        match resource(stacks::invoice_app::INVOICES_TABLE) {
            Spec::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    /// Live state as autoscaling leaves it: capacities inside the configured ranges, except
    /// what a test moves out of them.
    fn observed(spec: &stacks::TableSpec, table: (u32, u32), gsi: (u32, u32)) -> ObservedTable {
        let key = |n: &str| {
            Some(KeyAttr {
                name: n.into(),
                attr_type: AttrType::S,
            })
        };
        ObservedTable {
            name: spec.name.clone(),
            arn: format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", spec.name),
            hash_key: key("InvoiceID"),
            range_key: key("CustomerID"),
            pay_per_request: false,
            read: table.0,
            write: table.1,
            gsis: vec![ObservedGsi {
                name: stacks::invoice_app::INVOICES_GSI.into(),
                hash_key: key("CustomerID"),
                range_key: None,
                projection_all: true,
                read: gsi.0,
                write: gsi.1,
            }],
            stream: Some("arn:stream".into()),
            sse_kms: true,
            point_in_time_recovery: true,
            deletion_protection: false,
            tags: spec.tags.clone(),
        }
    }

    fn active() -> Rule {
        mock!(Client::describe_table).then_output(|| {
            DescribeTableOutput::builder()
                .table(
                    TableDescription::builder()
                        .table_status(TableStatus::Active)
                        .global_secondary_indexes(
                            GlobalSecondaryIndexDescription::builder()
                                .index_name(stacks::invoice_app::INVOICES_GSI)
                                .index_status(IndexStatus::Active)
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
    }

    fn recording_update(sent: &Arc<Mutex<Vec<UpdateTableInput>>>) -> Rule {
        let sent = sent.clone();
        mock!(Client::update_table).then_compute_output(move |req| {
            sent.lock().unwrap().push(req.clone());
            UpdateTableOutput::builder().build()
        })
    }

    /// Finding 1: autoscaling keeps the index inside its range, so the wanted index
    /// throughput equals the live one; AWS rejects such an update ("will not change"). Only
    /// the table's out-of-range capacity is sent.
    #[tokio::test(start_paused = true)]
    async fn an_unchanged_index_throughput_is_not_sent() {
        let spec = spec();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (describe, update) = (active(), recording_update(&sent));
        let (ctx, log) = simulated(&[&describe, &update]);
        // Table read 25 is above the autoscaling maximum; the index is inside its range.
        let o = observed(&spec, (25, 5), (7, 5));
        DynamoDbTable
            .update(&ctx, &spec, &o, &[TableField::ReadCapacity])
            .await
            .expect("update");
        assert_eq!(
            calls(&log),
            [
                "DynamoDB.DescribeTable",
                "DynamoDB.UpdateTable",
                "DynamoDB.DescribeTable"
            ]
        );
        let sent = sent.lock().unwrap();
        let tp = sent[0].provisioned_throughput().expect("table throughput");
        assert_eq!(
            tp.read_capacity_units(),
            20,
            "clamped to the range's maximum"
        );
        assert!(
            sent[0].global_secondary_index_updates().is_empty(),
            "index updates: {:?}",
            sent[0].global_secondary_index_updates()
        );
    }

    /// An index outside its range is brought back; nothing at all is sent when both are
    /// already inside (a capacity change that autoscaling has absorbed).
    #[tokio::test(start_paused = true)]
    async fn only_an_index_whose_throughput_changes_is_updated() {
        let spec = spec();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (describe, update) = (active(), recording_update(&sent));
        let (ctx, log) = simulated(&[&describe, &update]);
        let o = observed(&spec, (5, 5), (30, 5));
        DynamoDbTable
            .update(
                &ctx,
                &spec,
                &o,
                &[TableField::GsiReadCapacity("CustomerID-Index".into())],
            )
            .await
            .expect("update");
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].provisioned_throughput().is_none(),
            "table unchanged"
        );
        let updates = sent[0].global_secondary_index_updates();
        assert_eq!(updates.len(), 1);
        let u = updates[0].update().expect("an update action");
        assert_eq!(u.index_name(), stacks::invoice_app::INVOICES_GSI);
        assert_eq!(
            u.provisioned_throughput()
                .map(|t| (t.read_capacity_units(), t.write_capacity_units())),
            Some((20, 5))
        );

        let (ctx, log2) = simulated(&[&describe, &update]);
        let o = observed(&spec, (7, 5), (7, 5));
        DynamoDbTable
            .update(&ctx, &spec, &o, &[TableField::ReadCapacity])
            .await
            .expect("update");
        assert_eq!(calls(&log2), ["DynamoDB.DescribeTable"], "no UpdateTable");
        assert_eq!(
            calls(&log),
            [
                "DynamoDB.DescribeTable",
                "DynamoDB.UpdateTable",
                "DynamoDB.DescribeTable"
            ]
        );
    }
}

/// The first resource of the stack whose spec `pick` accepts.
fn first<T>(pick: impl Fn(Spec) -> Option<T>) -> T {
    resources()
        .into_iter()
        .find_map(|r| pick(r.spec))
        .expect("a resource of that kind")
}

mod lambda {
    use super::*;
    use aws_sdk_iam::operation::get_role::GetRoleOutput;
    use aws_sdk_iam::types::Role;
    use aws_sdk_lambda::Client;
    use aws_sdk_lambda::operation::create_alias::CreateAliasOutput;
    use aws_sdk_lambda::operation::create_function::{CreateFunctionError, CreateFunctionOutput};
    use aws_sdk_lambda::operation::delete_function::DeleteFunctionOutput;
    use aws_sdk_lambda::operation::get_function::GetFunctionOutput;
    use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput;
    use aws_sdk_lambda::operation::publish_version::PublishVersionOutput;
    use aws_sdk_lambda::operation::update_alias::UpdateAliasOutput;
    use aws_sdk_lambda::operation::update_function_code::UpdateFunctionCodeError;
    use aws_sdk_lambda::operation::update_function_code::UpdateFunctionCodeOutput;
    use aws_sdk_lambda::operation::update_function_configuration::UpdateFunctionConfigurationOutput;
    use aws_sdk_lambda::types::FunctionConfiguration;
    use aws_sdk_lambda::types::error::{
        InvalidParameterValueException, PreconditionFailedException,
    };
    use aws_sdk_lambda::types::{LastUpdateStatus, State};
    use xtask::providers::lambda_function::{
        self, FunctionField, LambdaFunction, ObservedFunction, Readiness,
    };

    fn spec() -> stacks::FunctionSpec {
        let mut s = first(|s| match s {
            Spec::Function(f) => Some(f),
            _ => None,
        });
        s.code_sha256_b64 = "AAEC".into();
        s.code_sha256_hex = "000102".into();
        s
    }

    /// The function as a plan read it; `readiness` is where the read found it (anything but
    /// Ready makes the first write wait for it again).
    fn observed(s: &stacks::FunctionSpec, readiness: Readiness) -> ObservedFunction {
        ObservedFunction {
            arn: format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}", s.name),
            code_sha256_b64: "BBBB".into(),
            config: lambda_function::desired(s),
            tags: s.tags.clone(),
            versions: vec![],
            alias_target: Some("4".into()),
            alias_revision_id: Some("alias-rev".into()),
            readiness,
            revision_id: Some("rev-read".into()),
        }
    }

    fn update_failed() -> Readiness {
        Readiness::UpdateFailed("LastUpdateStatus=Failed: simulated".into())
    }

    fn status(state: State, last: LastUpdateStatus) -> GetFunctionConfigurationOutput {
        GetFunctionConfigurationOutput::builder()
            .state(state)
            .last_update_status(last)
            .build()
    }

    /// UpdateFunctionCode's answer with Publish: the version it published, and the code's hash.
    fn published(version: &str, sha: &str) -> UpdateFunctionCodeOutput {
        UpdateFunctionCodeOutput::builder()
            .version(version)
            .code_sha256(sha)
            .build()
    }

    /// Every UpdateFunctionCode answered with [`published`].
    fn code_published(version: &'static str, sha: &'static str) -> Rule {
        mock!(Client::update_function_code).then_output(move || published(version, sha))
    }

    /// A code change, as a plan finds it: new code, so a new version for the alias.
    async fn new_code(
        ctx: &Ctx,
        s: &stacks::FunctionSpec,
        o: &ObservedFunction,
    ) -> anyhow::Result<()> {
        let changes = [
            FunctionField::Code,
            FunctionField::Version,
            FunctionField::Alias,
        ];
        LambdaFunction.update(ctx, s, o, &changes).await
    }

    /// UpdateFunctionCode answered with [`published`] only when it carries `revision`.
    fn code_published_with(revision: Option<&'static str>) -> Rule {
        mock!(Client::update_function_code)
            .match_requests(move |r| r.revision_id() == revision)
            .then_output(|| published("5", "AAEC"))
    }

    /// `$LATEST` as GetFunction answers it: the spec's configuration, code `code`, in
    /// `LastUpdateStatus` `last`, at revision `revision`.
    fn latest(
        s: &stacks::FunctionSpec,
        code: &str,
        last: LastUpdateStatus,
        revision: &str,
    ) -> GetFunctionOutput {
        let c = lambda_function::desired(s);
        GetFunctionOutput::builder()
            .configuration(
                FunctionConfiguration::builder()
                    .code_sha256(code)
                    .runtime(c.runtime.as_str().into())
                    .handler(c.handler)
                    .architectures(c.architecture.as_str().into())
                    .memory_size(c.memory_mb as i32)
                    .timeout(c.timeout_secs as i32)
                    .environment(
                        aws_sdk_lambda::types::EnvironmentResponse::builder()
                            .set_variables(Some(c.environment.into_iter().collect()))
                            .build(),
                    )
                    .role(c.role)
                    .state(State::Active)
                    .last_update_status(last)
                    .revision_id(revision)
                    .build(),
            )
            .build()
    }

    /// A guarded write refused because the revision moved while nothing the plan compared
    /// did (here: someone's update of another field, still in progress): the provider waits
    /// for that update to settle, whose completion moves the revision again, and sends the
    /// code with the settled revision.
    #[tokio::test(start_paused = true)]
    async fn a_refused_revision_waits_for_the_function_to_settle_and_is_sent_again() {
        let s = spec();
        let refused = code_refused_with("rev-read");
        let resent = code_published_with(Some("rev-settled"));
        let look = mock!(Client::get_function)
            .sequence()
            .output(|| latest(&spec(), "BBBB", LastUpdateStatus::InProgress, "rev-busy"))
            .output(|| latest(&spec(), "BBBB", LastUpdateStatus::Successful, "rev-settled"))
            .build();
        let status = settled();
        let (publish, alias) = publish_and_alias();
        let (ctx, log) = simulated(&[&refused, &resent, &look, &status, &publish, &alias]);
        new_code(&ctx, &s, &observed(&s, Readiness::Ready))
            .await
            .expect("sent again with the settled revision");
        assert_eq!(
            calls(&log),
            [
                "Lambda.UpdateFunctionCode",
                "Lambda.GetFunction",
                "Lambda.GetFunction",
                "Lambda.UpdateFunctionCode",
                "Lambda.GetFunctionConfiguration",
                "Lambda.UpdateAlias",
            ]
        );
    }

    /// UpdateFunctionCode refused (stale RevisionId) when it carries `revision`.
    fn code_refused_with(revision: &'static str) -> Rule {
        mock!(Client::update_function_code)
            .match_requests(move |r| r.revision_id() == Some(revision))
            .then_error(|| {
                UpdateFunctionCodeError::PreconditionFailedException(
                    PreconditionFailedException::builder()
                        .message("simulated")
                        .build(),
                )
            })
    }

    /// The revision moves again between each look and the write sent after it: the write is
    /// judged and sent again up to a bound, then the refusal is the apply's error.
    #[tokio::test(start_paused = true)]
    async fn a_revision_that_keeps_moving_is_chased_a_bounded_number_of_times() {
        let s = spec();
        let revisions = ["rev-read", "rev-1", "rev-2", "rev-3"];
        // Each look finds the function settled, as read, at the next revision.
        let looks = || {
            mock!(Client::get_function)
                .sequence()
                .output(|| latest(&spec(), "BBBB", LastUpdateStatus::Successful, "rev-1"))
                .output(|| latest(&spec(), "BBBB", LastUpdateStatus::Successful, "rev-2"))
                .output(|| latest(&spec(), "BBBB", LastUpdateStatus::Successful, "rev-3"))
                .build()
        };
        let refused: Vec<Rule> = revisions[..3]
            .iter()
            .map(|r| code_refused_with(r))
            .collect();
        let accepted = code_published_with(Some("rev-3"));
        let look = looks();
        let status = settled();
        let (publish, alias) = publish_and_alias();
        let mut rules: Vec<&Rule> = refused.iter().collect();
        rules.extend([&look, &accepted, &status, &publish, &alias]);
        let (ctx, log) = simulated(&rules);
        new_code(&ctx, &s, &observed(&s, Readiness::Ready))
            .await
            .expect("sent with the third revision looked up");
        let updates = calls(&log)
            .iter()
            .filter(|c| *c == "Lambda.UpdateFunctionCode")
            .count();
        assert_eq!(updates, 4);

        // One more move than the bound: the refusal surfaces, and nothing is published.
        let refused: Vec<Rule> = revisions.iter().map(|r| code_refused_with(r)).collect();
        let look = looks();
        let (publish, alias) = publish_and_alias();
        let mut rules: Vec<&Rule> = refused.iter().collect();
        rules.extend([&look, &publish, &alias]);
        let (ctx, _) = simulated(&rules);
        let err = new_code(&ctx, &s, &observed(&s, Readiness::Ready))
            .await
            .expect_err("refused four times");
        assert!(format!("{err:#}").contains("UpdateFunctionCode"), "{err:#}");
        assert_eq!(alias.num_calls(), 0);
    }

    /// A version published by an update that failed, left behind: deleted before the code
    /// update publishes, or Lambda would answer the publish with it (nothing changed since the
    /// newest version) and the alias would serve a failed version.
    #[tokio::test(start_paused = true)]
    async fn a_failed_version_is_deleted_before_the_next_publish() {
        let s = spec();
        let delete = mock!(Client::delete_function)
            .match_requests(|r| r.qualifier() == Some("3"))
            .then_output(|| DeleteFunctionOutput::builder().build());
        let code = code_published("4", "AAEC");
        let status = settled();
        let (publish, alias) = publish_and_alias();
        let (ctx, log) = simulated(&[&delete, &code, &status, &publish, &alias]);
        let mut o = observed(&s, Readiness::Ready);
        let version = |n, code: &str, failed| lambda_function::Version {
            number: n,
            code_sha256_b64: code.into(),
            config: lambda_function::desired(&s),
            failed,
        };
        // Version 3 holds the new code (AAEC) but failed; `$LATEST` went back to the old code.
        o.versions = vec![version(2, "BBBB", false), version(3, "AAEC", true)];
        o.alias_target = Some("2".into());
        let changes = LambdaFunction::diff(&s, &o).fields();
        LambdaFunction
            .update(&ctx, &s, &o, &changes)
            .await
            .expect("updated");
        assert_eq!(
            calls(&log),
            [
                "Lambda.DeleteFunction",
                "Lambda.UpdateFunctionCode",
                "Lambda.GetFunctionConfiguration",
                "Lambda.UpdateAlias",
            ]
        );
    }

    /// A settled function's first write carries the RevisionId its plan read (AWS refuses it
    /// if the function changed since); one read mid-update does not, as its revision changes
    /// again when that update completes. Only the first write carries it.
    #[tokio::test(start_paused = true)]
    async fn only_a_settled_functions_first_write_carries_the_revision_read() {
        let s = spec();
        let changes = [
            FunctionField::Code,
            FunctionField::Version,
            FunctionField::Alias,
        ];
        for (readiness, revision) in [
            (Readiness::Ready, Some("rev-read")),
            (Readiness::Busy, None),
        ] {
            let code = code_published_with(revision);
            let status = settled();
            let (publish, alias) = publish_and_alias();
            let (ctx, _) = simulated(&[&code, &status, &publish, &alias]);
            LambdaFunction
                .update(&ctx, &s, &observed(&s, readiness.clone()), &changes)
                .await
                .unwrap_or_else(|e| panic!("{readiness:?}: {e:#}"));
        }
        // A memory change and new code: the configuration goes first, with the revision.
        let config = mock!(Client::update_function_configuration)
            .match_requests(|r| r.revision_id() == Some("rev-read"))
            .then_output(|| UpdateFunctionConfigurationOutput::builder().build());
        let code = code_published_with(None);
        let status = settled();
        let (publish, alias) = publish_and_alias();
        let (ctx, _) = simulated(&[&config, &code, &status, &publish, &alias]);
        let mut more = changes.to_vec();
        more.push(FunctionField::MemoryMb);
        LambdaFunction
            .update(&ctx, &s, &observed(&s, Readiness::Ready), &more)
            .await
            .expect("configuration, then code");
    }

    /// Every GetFunctionConfiguration answered "settled": Active, last update Successful.
    fn settled() -> Rule {
        mock!(Client::get_function_configuration)
            .then_output(|| status(State::Active, LastUpdateStatus::Successful))
    }

    fn publish_and_alias() -> (Rule, Rule) {
        (
            mock!(Client::publish_version)
                .then_output(|| PublishVersionOutput::builder().version("5").build()),
            mock!(Client::update_alias).then_output(|| UpdateAliasOutput::builder().build()),
        )
    }

    /// Finding 2: a function whose last update failed keeps serving its old code and takes
    /// the next update, which is what repairs it: the code update goes out at once, publishing
    /// version 5, and the wait after it (our own update) runs through InProgress to Successful
    /// before the alias moves to it.
    #[tokio::test(start_paused = true)]
    async fn a_failed_last_update_is_repaired_by_the_next_one() {
        let s = spec();
        let config = mock!(Client::get_function_configuration)
            .sequence()
            .output(|| status(State::Active, LastUpdateStatus::Failed))
            .output(|| status(State::Active, LastUpdateStatus::InProgress))
            .output(|| status(State::Active, LastUpdateStatus::Successful))
            .build();
        let code = code_published("5", "AAEC");
        let (publish, alias) = publish_and_alias();
        let (ctx, log) = simulated(&[&config, &code, &publish, &alias]);
        new_code(&ctx, &s, &observed(&s, update_failed()))
            .await
            .expect("the update repairs the function");
        // Versions 4 (the alias's old target) and 5 are within keep_versions: nothing to
        // purge, and the versions are not listed again after the update.
        assert_eq!(
            calls(&log),
            [
                "Lambda.GetFunctionConfiguration",
                "Lambda.UpdateFunctionCode",
                "Lambda.GetFunctionConfiguration",
                "Lambda.GetFunctionConfiguration",
                "Lambda.UpdateAlias",
            ]
        );
        assert_eq!(code.num_calls(), 1);
    }

    /// A function the plan read as settled takes its code at once: the critical path of a code
    /// change is UpdateFunctionCode publishing the version in the same call, the wait for
    /// Successful, the purge of versions beyond keep_versions (the oldest, never the alias's
    /// old or new target, all deleted together), then UpdateAlias: an alias found on the
    /// spec's version means the purge is done.
    #[tokio::test(start_paused = true)]
    async fn a_settled_function_is_updated_published_and_purged_without_rereading() {
        let s = spec();
        let config = mock!(Client::get_function_configuration)
            .sequence()
            .output(|| status(State::Active, LastUpdateStatus::InProgress))
            .output(|| status(State::Active, LastUpdateStatus::Successful))
            .build();
        let code = code_published("5", "AAEC");
        let (publish, alias) = publish_and_alias();
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let d = deleted.clone();
        let delete = mock!(Client::delete_function)
            .match_requests(move |r| {
                d.lock()
                    .unwrap()
                    .push(r.qualifier().unwrap_or_default().to_string());
                true
            })
            .then_output(|| DeleteFunctionOutput::builder().build());
        let (ctx, log) = simulated(&[&config, &code, &publish, &alias, &delete]);
        let mut o = observed(&s, Readiness::Ready);
        // keep_versions is 3: with 5 published, 1 and 2 go; 4 is the old alias target.
        let version = |n| lambda_function::Version {
            number: n,
            code_sha256_b64: "BBBB".into(),
            config: lambda_function::desired(&s),
            failed: false,
        };
        o.versions = vec![version(1), version(2), version(3), version(4)];
        assert_eq!(s.keep_versions, 3);
        new_code(&ctx, &s, &o).await.expect("updated");
        assert_eq!(
            calls(&log),
            [
                "Lambda.UpdateFunctionCode",
                "Lambda.GetFunctionConfiguration",
                "Lambda.GetFunctionConfiguration",
                "Lambda.DeleteFunction",
                "Lambda.DeleteFunction",
                "Lambda.UpdateAlias",
            ]
        );
        let mut deleted = deleted.lock().unwrap().clone();
        deleted.sort();
        assert_eq!(deleted, ["1", "2"]);
    }

    /// Our own update failed: that is final, the version it published does not take the
    /// alias, and it is deleted so that no later run serves it.
    #[tokio::test(start_paused = true)]
    async fn a_failure_of_our_own_update_is_fatal() {
        let s = spec();
        let config = mock!(Client::get_function_configuration)
            .sequence()
            .output(|| status(State::Active, LastUpdateStatus::Successful))
            .output(|| status(State::Active, LastUpdateStatus::Failed))
            .build();
        let code = code_published("5", "AAEC");
        let (publish, alias) = publish_and_alias();
        let delete = mock!(Client::delete_function)
            .match_requests(|r| r.qualifier() == Some("5"))
            .then_output(|| DeleteFunctionOutput::builder().build());
        let (ctx, log) = simulated(&[&config, &code, &publish, &alias, &delete]);
        let err = LambdaFunction
            .update(
                &ctx,
                &s,
                &observed(&s, Readiness::Busy),
                &[FunctionField::Code, FunctionField::Version],
            )
            .await
            .expect_err("our update failed");
        assert!(
            format!("{err:#}").contains("LastUpdateStatus=Failed"),
            "{err:#}"
        );
        assert_eq!(publish.num_calls(), 0);
        assert_eq!(alias.num_calls(), 0);
        assert_eq!(
            calls(&log),
            [
                "Lambda.GetFunctionConfiguration",
                "Lambda.UpdateFunctionCode",
                "Lambda.GetFunctionConfiguration",
                "Lambda.DeleteFunction",
            ]
        );
    }

    /// Lambda hashes the code it read from S3: code other than the built artifact (the object
    /// overwritten under our key) fails the update before the alias serves it.
    #[tokio::test(start_paused = true)]
    async fn code_that_is_not_the_built_artifact_is_not_served() {
        let s = spec();
        let code = code_published("5", "OTHER");
        let (publish, alias) = publish_and_alias();
        let (ctx, _log) = simulated(&[&code, &publish, &alias]);
        let err = new_code(&ctx, &s, &observed(&s, Readiness::Ready))
            .await
            .expect_err("foreign code");
        assert!(format!("{err:#}").contains("SHA-256 OTHER"), "{err:#}");
        assert_eq!(alias.num_calls(), 0);

        // The same check on CreateFunction: version 1 does not get the alias either.
        let create = mock!(Client::create_function).then_output(|| {
            CreateFunctionOutput::builder()
                .version("1")
                .code_sha256("OTHER")
                .build()
        });
        let create_alias =
            mock!(Client::create_alias).then_output(|| CreateAliasOutput::builder().build());
        let (ctx, _log) = simulated(&[&create, &create_alias]);
        let err = LambdaFunction
            .create(&ctx, &s)
            .await
            .expect_err("foreign code");
        assert!(format!("{err:#}").contains("CreateFunction"), "{err:#}");
        assert_eq!(create_alias.num_calls(), 0);
    }

    /// A zip within Lambda's direct-upload quota goes with UpdateFunctionCode (its bytes, no S3
    /// location); without one (a zip over the quota) Lambda is pointed at the artifact in S3.
    #[tokio::test(start_paused = true)]
    async fn the_code_goes_with_the_call_or_comes_from_s3() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("f.zip");
        std::fs::write(&zip, b"PK zip bytes").unwrap();
        let fields = [
            FunctionField::Code,
            FunctionField::Version,
            FunctionField::Alias,
        ];

        let mut direct = spec();
        direct.code_zip = Some(zip.clone());
        let code = mock!(Client::update_function_code)
            .match_requests(|r| {
                r.zip_file().map(|b| b.as_ref()) == Some(b"PK zip bytes".as_slice())
                    && r.s3_bucket().is_none()
                    && r.publish() == Some(true)
            })
            .then_output(|| published("5", "AAEC"));
        let (wait, (publish, alias)) = (settled(), publish_and_alias());
        let (ctx, _) = simulated(&[&code, &wait, &publish, &alias]);
        LambdaFunction
            .update(&ctx, &direct, &observed(&direct, Readiness::Ready), &fields)
            .await
            .expect("the zip went with the call");
        assert_eq!(code.num_calls(), 1);

        let from_s3 = spec();
        assert_eq!(from_s3.code_zip, None);
        let key = from_s3.code_key.clone();
        let code = mock!(Client::update_function_code)
            .match_requests(move |r| r.zip_file().is_none() && r.s3_key() == Some(key.as_str()))
            .then_output(|| published("5", "AAEC"));
        let (wait, (publish, alias)) = (settled(), publish_and_alias());
        let (ctx, _) = simulated(&[&code, &wait, &publish, &alias]);
        LambdaFunction
            .update(
                &ctx,
                &from_s3,
                &observed(&from_s3, Readiness::Ready),
                &fields,
            )
            .await
            .expect("Lambda read the artifact from S3");
        assert_eq!(code.num_calls(), 1);
    }

    /// A configuration change goes before the code, so the version the code update publishes
    /// carries both; without a code change the version comes from PublishVersion.
    #[tokio::test(start_paused = true)]
    async fn configuration_goes_first_and_a_config_only_change_publishes_separately() {
        let s = spec();
        let config_update = || {
            mock!(Client::update_function_configuration).then_output(|| {
                aws_sdk_lambda::operation::update_function_configuration::UpdateFunctionConfigurationOutput::builder().build()
            })
        };
        let both = [
            FunctionField::MemoryMb,
            FunctionField::Code,
            FunctionField::Version,
            FunctionField::Alias,
        ];
        let (wait, update, code) = (settled(), config_update(), code_published("5", "AAEC"));
        let (publish, alias) = publish_and_alias();
        let (ctx, log) = simulated(&[&wait, &update, &code, &publish, &alias]);
        LambdaFunction
            .update(&ctx, &s, &observed(&s, Readiness::Ready), &both)
            .await
            .expect("updated");
        assert_eq!(
            calls(&log),
            [
                "Lambda.UpdateFunctionConfiguration",
                "Lambda.GetFunctionConfiguration",
                "Lambda.UpdateFunctionCode",
                "Lambda.GetFunctionConfiguration",
                "Lambda.UpdateAlias",
            ]
        );

        let config_only = [
            FunctionField::MemoryMb,
            FunctionField::Version,
            FunctionField::Alias,
        ];
        let (wait, update) = (settled(), config_update());
        let (publish, alias) = publish_and_alias();
        let (ctx, log) = simulated(&[&wait, &update, &publish, &alias]);
        LambdaFunction
            .update(&ctx, &s, &observed(&s, Readiness::Ready), &config_only)
            .await
            .expect("updated");
        assert_eq!(
            calls(&log),
            [
                "Lambda.UpdateFunctionConfiguration",
                "Lambda.GetFunctionConfiguration",
                "Lambda.PublishVersion",
                "Lambda.UpdateAlias",
            ]
        );
    }

    /// An idle (Inactive) function is not busy: the update goes out without waiting.
    #[tokio::test(start_paused = true)]
    async fn an_inactive_function_is_updated_without_waiting() {
        let s = spec();
        let config = mock!(Client::get_function_configuration)
            .sequence()
            .output(|| status(State::Inactive, LastUpdateStatus::Successful))
            .output(|| status(State::Active, LastUpdateStatus::Successful))
            .build();
        let code = code_published("5", "AAEC");
        let (publish, alias) = publish_and_alias();
        let (ctx, _log) = simulated(&[&config, &code, &publish, &alias]);
        let start = Instant::now();
        LambdaFunction
            .update(
                &ctx,
                &s,
                &observed(&s, Readiness::Busy),
                &[FunctionField::Code, FunctionField::Version],
            )
            .await
            .expect("update");
        assert_eq!(start.elapsed(), Duration::ZERO, "no wait at all");
        assert_eq!(code.num_calls(), 1);
        assert_eq!(publish.num_calls(), 0, "published with the code");
    }

    fn invalid_parameter() -> CreateFunctionError {
        CreateFunctionError::InvalidParameterValueException(
            InvalidParameterValueException::builder()
                .message("simulated")
                .meta(
                    ErrorMetadata::builder()
                        .code("InvalidParameterValueException")
                        .build(),
                )
                .build(),
        )
    }

    fn role_created(ago: Duration) -> Rule {
        mock!(aws_sdk_iam::Client::get_role).then_output(move || {
            let created = std::time::SystemTime::now() - ago;
            GetRoleOutput::builder()
                .role(
                    Role::builder()
                        .role_name("r")
                        .path("/")
                        .role_id("AROA")
                        .arn("arn:aws:iam::123456789012:role/r")
                        .create_date(aws_smithy_types::DateTime::from(created))
                        .build()
                        .unwrap(),
                )
                .build()
        })
    }

    /// Finding 8, propagation: the role was created seconds ago, so Lambda's
    /// InvalidParameterValueException is retried (the role's age is looked up once) and the
    /// second attempt, one backoff later, succeeds.
    #[tokio::test(start_paused = true)]
    async fn invalid_parameter_with_a_new_role_is_retried() {
        let s = spec();
        let times = Times::default();
        let t = times.clone();
        let create = mock!(Client::create_function)
            .match_requests(move |_| t.stamp())
            .sequence()
            .error(invalid_parameter)
            .output(|| CreateFunctionOutput::builder().version("1").build())
            .build();
        let role = role_created(Duration::from_secs(10));
        let config = mock!(Client::get_function_configuration)
            .then_output(|| status(State::Active, LastUpdateStatus::Successful));
        let alias =
            mock!(Client::create_alias).then_output(|| CreateAliasOutput::builder().build());
        let (ctx, log) = simulated(&[&create, &role, &config, &alias]);
        LambdaFunction.create(&ctx, &s).await.expect("created");
        assert_eq!(
            calls(&log),
            [
                "Lambda.CreateFunction",
                "IAM.GetRole",
                "Lambda.CreateFunction",
                "Lambda.GetFunctionConfiguration",
                "Lambda.CreateAlias",
            ]
        );
        // Role propagation backs off from one second (20% jitter at most).
        let gap = times.gaps()[0];
        assert!(
            gap >= Duration::from_millis(800) && gap <= Duration::from_secs(1),
            "{gap:?}"
        );
    }

    /// Finding 8, a real mistake: the role is days old, so the same error is not IAM
    /// propagation; it surfaces at once instead of after the retry deadline.
    #[tokio::test(start_paused = true)]
    async fn invalid_parameter_with_a_settled_role_surfaces_at_once() {
        let s = spec();
        let create = mock!(Client::create_function).then_error(invalid_parameter);
        let role = role_created(Duration::from_secs(3 * 86_400));
        let (ctx, log) = simulated(&[&create, &role]);
        let start = Instant::now();
        let err = LambdaFunction
            .create(&ctx, &s)
            .await
            .expect_err("a mistake");
        assert!(format!("{err:#}").contains("CreateFunction"), "{err:#}");
        assert_eq!(calls(&log), ["Lambda.CreateFunction", "IAM.GetRole"]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(lambda_function::YOUNG_ROLE < Duration::from_secs(3 * 86_400));
    }
}

mod s3 {
    use super::*;
    use aws_sdk_s3::Client;
    use aws_sdk_s3::operation::create_bucket::{CreateBucketError, CreateBucketOutput};
    use aws_sdk_s3::operation::delete_bucket_policy::DeleteBucketPolicyOutput;
    use aws_sdk_s3::operation::put_bucket_encryption::PutBucketEncryptionOutput;
    use aws_sdk_s3::operation::put_bucket_lifecycle_configuration::PutBucketLifecycleConfigurationOutput;
    use aws_sdk_s3::operation::put_bucket_ownership_controls::PutBucketOwnershipControlsOutput;
    use aws_sdk_s3::operation::put_bucket_policy::PutBucketPolicyOutput;
    use aws_sdk_s3::operation::put_bucket_tagging::{
        PutBucketTaggingError, PutBucketTaggingOutput,
    };
    use aws_sdk_s3::operation::put_bucket_versioning::{
        PutBucketVersioningError, PutBucketVersioningOutput,
    };
    use aws_sdk_s3::operation::put_public_access_block::PutPublicAccessBlockOutput;
    use xtask::providers::s3_bucket::S3Bucket;

    /// Every part of a bucket the read asks for at once, each answered `status` with the
    /// error `code`, as S3 answers for a bucket that is missing or someone else's.
    fn every_read_answers(status: u16, code: &'static str) -> Vec<Rule> {
        let answer = move || {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
                aws_smithy_types::body::SdkBody::from(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>simulated</Message></Error>"
                )),
            )
        };
        vec![
            mock!(Client::get_bucket_tagging).then_http_response(answer),
            mock!(Client::get_bucket_versioning).then_http_response(answer),
            mock!(Client::get_bucket_encryption).then_http_response(answer),
            mock!(Client::get_public_access_block).then_http_response(answer),
            mock!(Client::get_bucket_ownership_controls).then_http_response(answer),
            mock!(Client::get_bucket_lifecycle_configuration).then_http_response(answer),
            mock!(Client::get_bucket_policy).then_http_response(answer),
        ]
    }

    /// The read sends no HeadBucket first: the tagging call's answer tells a missing bucket
    /// (nothing to compare, it will be created) from one another account owns under our name
    /// (a stop, saying how to choose another name), which HeadBucket used to tell.
    #[tokio::test(start_paused = true)]
    async fn a_missing_bucket_reads_as_absent_and_a_foreign_one_stops_the_plan() {
        let spec = first(|s| match s {
            Spec::Bucket(b) => Some(b),
            _ => None,
        });
        let missing = every_read_answers(404, "NoSuchBucket");
        let (ctx, log) = simulated(&missing.iter().collect::<Vec<_>>());
        assert_eq!(S3Bucket.read(&ctx, &spec).await.expect("read"), None);
        assert_eq!(
            calls(&log).len(),
            7,
            "one round of reads: {:?}",
            calls(&log)
        );
        assert!(!calls(&log).contains(&"S3.HeadBucket".to_string()));

        let foreign = every_read_answers(403, "AccessDenied");
        let (ctx, _log) = simulated(&foreign.iter().collect::<Vec<_>>());
        let err = S3Bucket
            .read(&ctx, &spec)
            .await
            .expect_err("someone else's bucket");
        assert!(
            format!("{err:#}").contains("taken by another AWS account")
                && format!("{err:#}").contains("name_suffix"),
            "{err:#}"
        );
    }

    /// Finding 3: re-creating a just-deleted name answers OperationAborted until the
    /// deletion settles, and the new bucket answers NoSuchBucket for a moment: both are
    /// retried, and every configuration call still goes out once it succeeds. The
    /// configuration calls go out together, and S3 may refuse one with OperationAborted while
    /// another change of the bucket is in progress: retried too.
    #[tokio::test(start_paused = true)]
    async fn create_waits_out_operation_aborted_and_no_such_bucket() {
        let spec = first(|s| match s {
            Spec::Bucket(b) => Some(b),
            _ => None,
        });
        let create = mock!(Client::create_bucket)
            .sequence()
            .error(|| code_only(CreateBucketError::generic, "OperationAborted"))
            .times(2)
            .output(|| CreateBucketOutput::builder().build())
            .build();
        let tagging = mock!(Client::put_bucket_tagging)
            .sequence()
            .error(|| code_only(PutBucketTaggingError::generic, "NoSuchBucket"))
            .output(|| PutBucketTaggingOutput::builder().build())
            .build();
        let versioning = mock!(Client::put_bucket_versioning)
            .sequence()
            .error(|| code_only(PutBucketVersioningError::generic, "OperationAborted"))
            .output(|| PutBucketVersioningOutput::builder().build())
            .build();
        let rest = [
            versioning,
            mock!(Client::put_bucket_encryption)
                .then_output(|| PutBucketEncryptionOutput::builder().build()),
            mock!(Client::put_public_access_block)
                .then_output(|| PutPublicAccessBlockOutput::builder().build()),
            mock!(Client::put_bucket_ownership_controls)
                .then_output(|| PutBucketOwnershipControlsOutput::builder().build()),
            mock!(Client::put_bucket_lifecycle_configuration)
                .then_output(|| PutBucketLifecycleConfigurationOutput::builder().build()),
            mock!(Client::put_bucket_policy)
                .then_output(|| PutBucketPolicyOutput::builder().build()),
            mock!(Client::delete_bucket_policy)
                .then_output(|| DeleteBucketPolicyOutput::builder().build()),
        ];
        let mut rules = vec![&create, &tagging];
        rules.extend(rest.iter());
        let (ctx, log) = simulated(&rules);
        S3Bucket.create(&ctx, &spec).await.expect("created");
        let c = calls(&log);
        assert_eq!(
            c[..3],
            ["S3.CreateBucket", "S3.CreateBucket", "S3.CreateBucket"]
        );
        let count = |op: &str| c.iter().filter(|x| *x == op).count();
        assert_eq!(count("S3.PutBucketTagging"), 2, "{c:?}");
        assert_eq!(count("S3.PutBucketVersioning"), 2, "{c:?}");
        assert_eq!(c.len(), 12, "{c:?}");
    }

    /// A permanent error of CreateBucket is not retried.
    #[tokio::test(start_paused = true)]
    async fn other_create_errors_are_final() {
        let spec = first(|s| match s {
            Spec::Bucket(b) => Some(b),
            _ => None,
        });
        let create = mock!(Client::create_bucket)
            .then_error(|| code_only(CreateBucketError::generic, "InvalidBucketName"));
        let (ctx, log) = simulated(&[&create]);
        S3Bucket.create(&ctx, &spec).await.expect_err("final");
        assert_eq!(calls(&log), ["S3.CreateBucket"]);
    }
}

mod autoscaling {
    use super::*;
    use aws_sdk_applicationautoscaling::Client;
    use aws_sdk_applicationautoscaling::operation::put_scaling_policy::{
        PutScalingPolicyError, PutScalingPolicyOutput,
    };
    use aws_sdk_applicationautoscaling::types::error::{
        FailedResourceAccessException, ObjectNotFoundException, ValidationException,
    };
    use xtask::providers::scaling_policy::ScalingPolicy;

    fn spec() -> stacks::ScalingPolicySpec {
        first(|s| match s {
            Spec::ScalingPolicy(p) => Some(p),
            _ => None,
        })
    }

    /// Finding 4: right after RegisterScalableTarget the target (or the service-linked role
    /// it creates) is not visible yet; PutScalingPolicy is retried until it is.
    #[tokio::test(start_paused = true)]
    async fn put_scaling_policy_waits_for_the_new_target() {
        let put = mock!(Client::put_scaling_policy)
            .sequence()
            .error(|| {
                PutScalingPolicyError::ObjectNotFoundException(
                    ObjectNotFoundException::builder().build(),
                )
            })
            .error(|| {
                PutScalingPolicyError::FailedResourceAccessException(
                    FailedResourceAccessException::builder().build(),
                )
            })
            .output(|| {
                PutScalingPolicyOutput::builder()
                    .policy_arn("arn:p")
                    .build()
                    .unwrap()
            })
            .build();
        let (ctx, log) = simulated(&[&put]);
        ScalingPolicy.create(&ctx, &spec()).await.expect("put");
        assert_eq!(
            calls(&log),
            [
                "Application Auto Scaling.PutScalingPolicy",
                "Application Auto Scaling.PutScalingPolicy",
                "Application Auto Scaling.PutScalingPolicy"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_validation_error_is_final() {
        let put = mock!(Client::put_scaling_policy).then_error(|| {
            PutScalingPolicyError::ValidationException(ValidationException::builder().build())
        });
        let (ctx, log) = simulated(&[&put]);
        ScalingPolicy
            .create(&ctx, &spec())
            .await
            .expect_err("final");
        assert_eq!(calls(&log).len(), 1);
    }
}

/// GetEventSourceMapping's answer for a mapping in `state`.
fn mapping_in(
    state: &str,
) -> aws_sdk_lambda::operation::get_event_source_mapping::GetEventSourceMappingOutput {
    aws_sdk_lambda::operation::get_event_source_mapping::GetEventSourceMappingOutput::builder()
        .state(state)
        .build()
}

mod event_source_mapping {
    use super::*;
    use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
    use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType, TableDescription};
    use aws_sdk_dynamodbstreams::operation::list_streams::ListStreamsOutput;
    use aws_sdk_dynamodbstreams::types::Stream;
    use aws_sdk_lambda::Client;
    use aws_sdk_lambda::operation::create_event_source_mapping::CreateEventSourceMappingOutput;
    use aws_sdk_lambda::operation::delete_event_source_mapping::{
        DeleteEventSourceMappingError, DeleteEventSourceMappingOutput,
    };
    use aws_sdk_lambda::operation::get_event_source_mapping::{
        GetEventSourceMappingError, GetEventSourceMappingOutput,
    };
    use aws_sdk_lambda::operation::list_event_source_mappings::ListEventSourceMappingsOutput;
    use aws_sdk_lambda::types::EventSourceMappingConfiguration;
    use aws_sdk_lambda::types::error::{ResourceInUseException, ResourceNotFoundException};
    use xtask::providers::event_source_mapping::EventSourceMapping;

    const OLD: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026-01-01";
    const NEW: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026-02-02";

    fn spec() -> stacks::EventSourceMappingSpec {
        first(|s| match s {
            Spec::EventSourceMapping(m) => Some(m),
            _ => None,
        })
    }

    fn table(stream: &'static str, view: StreamViewType) -> Rule {
        mock!(aws_sdk_dynamodb::Client::describe_table).then_output(move || {
            DescribeTableOutput::builder()
                .table(
                    TableDescription::builder()
                        .latest_stream_arn(stream)
                        .stream_specification(
                            StreamSpecification::builder()
                                .stream_enabled(true)
                                .stream_view_type(view.clone())
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build()
        })
    }

    fn streams(arns: &'static [&'static str]) -> Rule {
        mock!(aws_sdk_dynamodbstreams::Client::list_streams).then_output(move || {
            ListStreamsOutput::builder()
                .set_streams(Some(
                    arns.iter()
                        .map(|a| Stream::builder().stream_arn(*a).build())
                        .collect(),
                ))
                .build()
        })
    }

    fn mapping(uuid: &str, stream: &str, function: &str) -> EventSourceMappingConfiguration {
        EventSourceMappingConfiguration::builder()
            .uuid(uuid)
            .event_source_arn(stream)
            .function_arn(format!(
                "arn:aws:lambda:eu-west-1:123456789012:function:{function}:live"
            ))
            .state("Enabled")
            .build()
    }

    fn deleting() -> GetEventSourceMappingOutput {
        mapping_in("Deleting")
    }

    fn gone() -> GetEventSourceMappingError {
        GetEventSourceMappingError::ResourceNotFoundException(
            ResourceNotFoundException::builder().build(),
        )
    }

    /// Finding 5: a replace deletes (retrying ResourceInUse while the mapping is still
    /// Updating), waits out `Deleting`, and only then creates the new mapping, which would
    /// otherwise be refused as a duplicate.
    #[tokio::test(start_paused = true)]
    async fn replace_waits_for_the_old_mapping_to_be_deleted() {
        let s = spec();
        let describe = table(NEW, StreamViewType::NewImage);
        let list = streams(&[NEW]);
        let delete = mock!(Client::delete_event_source_mapping)
            .sequence()
            .error(|| {
                DeleteEventSourceMappingError::ResourceInUseException(
                    ResourceInUseException::builder().build(),
                )
            })
            .output(|| {
                DeleteEventSourceMappingOutput::builder()
                    .state("Deleting")
                    .build()
            })
            .build();
        let get = mock!(Client::get_event_source_mapping)
            .match_requests(|r| r.uuid() == Some("old"))
            .sequence()
            .output(deleting)
            .times(2)
            .error(gone)
            .build();
        let create = mock!(Client::create_event_source_mapping).then_output(|| {
            CreateEventSourceMappingOutput::builder()
                .uuid("new")
                .state("Creating")
                .build()
        });
        let get_new = mock!(Client::get_event_source_mapping)
            .match_requests(|r| r.uuid() == Some("new"))
            .sequence()
            .output(|| mapping_in("Creating"))
            .output(|| mapping_in("Enabled"))
            .build();
        let (ctx, log) = simulated(&[&describe, &list, &delete, &get, &create, &get_new]);
        let o = xtask::providers::event_source_mapping::ObservedMapping {
            uuid: "old".into(),
            stream_arn: NEW.into(),
            function_arn: format!("arn:aws:lambda:eu-west-1:1:function:{}:3", s.function_name),
            current_stream_arn: Some(NEW.into()),
            stream_view_type: Some("NEW_IMAGE".into()),
            starting_position: "LATEST".into(),
            batch_size: 1,
            batching_window_secs: 0,
            bisect_on_error: false,
            max_retries: 0,
            report_batch_item_failures: false,
        };
        EventSourceMapping
            .delete(&ctx, &s, &o)
            .await
            .expect("deleted");
        // The search for mappings on older streams (ListStreams) runs beside the deletion;
        // the deletion itself retries, then waits out `Deleting`.
        let deleting = calls(&log);
        let lambda: Vec<&str> = deleting
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with("Lambda."))
            .collect();
        assert_eq!(
            lambda,
            [
                "Lambda.DeleteEventSourceMapping",
                "Lambda.DeleteEventSourceMapping",
                "Lambda.GetEventSourceMapping",
                "Lambda.GetEventSourceMapping",
                "Lambda.GetEventSourceMapping",
            ]
        );
        assert_eq!(
            deleting
                .iter()
                .filter(|c| *c == "DynamoDB Streams.ListStreams")
                .count(),
            1
        );
        EventSourceMapping.create(&ctx, &s).await.expect("created");
        // The stream's lookup and the search of older streams go out together, then the
        // create, and the wait until the new mapping is out of Creating (with LATEST it
        // delivers only what is written once Enabled: apply seeds the table after it).
        let creating = calls(&log)[deleting.len()..].to_vec();
        let mut lookups = creating[..2].to_vec();
        lookups.sort();
        assert_eq!(
            lookups,
            ["DynamoDB Streams.ListStreams", "DynamoDB.DescribeTable"]
        );
        assert_eq!(
            creating[2..],
            [
                "Lambda.CreateEventSourceMapping",
                "Lambda.GetEventSourceMapping",
                "Lambda.GetEventSourceMapping",
            ]
        );
    }

    /// Finding 6: the view type changed, so the table has a new stream and our mapping is
    /// still on the old one. Read finds it there (none on the current stream), the diff
    /// replaces it, and its delete removes it from the old stream.
    #[tokio::test(start_paused = true)]
    async fn a_mapping_left_on_an_old_stream_is_found_and_replaced() {
        let s = spec();
        let f = s.function_name.clone();
        let describe = table(NEW, StreamViewType::NewImage);
        let list_streams = streams(&[NEW, OLD]);
        let (f1, f2) = (f.clone(), f.clone());
        let on_new = mock!(Client::list_event_source_mappings)
            .match_requests(|r| r.event_source_arn() == Some(NEW))
            .then_output(|| ListEventSourceMappingsOutput::builder().build());
        let on_old = mock!(Client::list_event_source_mappings)
            .match_requests(|r| r.event_source_arn() == Some(OLD))
            .then_output(move || {
                ListEventSourceMappingsOutput::builder()
                    .event_source_mappings(mapping("orphan", OLD, &f1))
                    .event_source_mappings(mapping("someone-else", OLD, "other-fn"))
                    .build()
            });
        let delete = mock!(Client::delete_event_source_mapping)
            .match_requests(|r| r.uuid() == Some("orphan"))
            .then_output(|| DeleteEventSourceMappingOutput::builder().build());
        let get = mock!(Client::get_event_source_mapping).then_error(gone);
        let (ctx, log) = simulated(&[&describe, &list_streams, &on_new, &on_old, &delete, &get]);
        let o = EventSourceMapping
            .read(&ctx, &s)
            .await
            .expect("read")
            .expect("the mapping on the old stream");
        assert_eq!(o.uuid, "orphan");
        assert_eq!(o.stream_arn, OLD);
        let d = EventSourceMapping::diff(&s, &o);
        assert!(
            d.0.iter()
                .any(|c| c.field == "stream" && c.forces_replacement),
            "{:?}",
            d.0
        );
        EventSourceMapping
            .delete(&ctx, &s, &o)
            .await
            .expect("deleted");
        assert_eq!(delete.num_calls(), 1, "only our mapping, and once: {f2}");
        assert_eq!(
            calls(&log),
            [
                "DynamoDB.DescribeTable",
                "Lambda.ListEventSourceMappings",
                "DynamoDB Streams.ListStreams",
                "Lambda.ListEventSourceMappings",
                "Lambda.DeleteEventSourceMapping",
                "Lambda.GetEventSourceMapping",
                "DynamoDB Streams.ListStreams",
                "Lambda.ListEventSourceMappings",
            ]
        );
    }
}

mod iam {
    use super::*;
    use aws_sdk_iam::Client;
    use aws_sdk_iam::operation::delete_role::{DeleteRoleError, DeleteRoleOutput};
    use aws_sdk_iam::types::error::DeleteConflictException;
    use xtask::engine::retry::Backoff;
    use xtask::providers::iam_role::{IamRole, ObservedRole};

    /// Finding 7: DeleteRole right after the policies were removed can still see them
    /// (DeleteConflict); it is retried with the wait backoff until the role goes.
    #[tokio::test(start_paused = true)]
    async fn delete_role_retries_delete_conflict() {
        let spec = first(|s| match s {
            Spec::Role(r) => Some(r),
            _ => None,
        });
        let times = Times::default();
        let t = times.clone();
        let delete = mock!(Client::delete_role)
            .match_requests(move |_| t.stamp())
            .sequence()
            .error(|| {
                DeleteRoleError::DeleteConflictException(DeleteConflictException::builder().build())
            })
            .times(2)
            .output(|| DeleteRoleOutput::builder().build())
            .build();
        let (ctx, log) = simulated(&[&delete]);
        let o = ObservedRole {
            trust_policy: serde_json::Value::Null,
            managed_policy_arns: Default::default(),
            inline_policies: Default::default(),
            tags: Default::default(),
        };
        IamRole.delete(&ctx, &spec, &o).await.expect("deleted");
        assert_eq!(
            calls(&log),
            ["IAM.DeleteRole", "IAM.DeleteRole", "IAM.DeleteRole"]
        );
        // The waits are the shared wait policy's first two delays (up to 20% jitter).
        let policy = Backoff::wait(WAIT);
        for (n, gap) in times.gaps().into_iter().enumerate() {
            let full = policy.first * 2u32.pow(n as u32);
            assert!(gap <= full && gap >= full.mul_f64(0.8), "{n}: {gap:?}");
        }
    }
}

mod apigateway {
    use super::*;
    use aws_sdk_apigateway::Client;
    use aws_sdk_apigateway::operation::create_deployment::CreateDeploymentOutput;
    use aws_sdk_apigateway::operation::create_rest_api::CreateRestApiOutput;
    use aws_sdk_apigateway::operation::delete_rest_api::DeleteRestApiOutput;
    use aws_sdk_apigateway::operation::update_account::{UpdateAccountError, UpdateAccountOutput};
    use aws_sdk_apigateway::types::error::TooManyRequestsException;
    use aws_sdk_apigateway::types::{EndpointConfiguration, EndpointType};
    use aws_sdk_iam::operation::attach_role_policy::AttachRolePolicyOutput;
    use aws_sdk_iam::operation::create_role::CreateRoleOutput;
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::interceptors::Intercept;
    use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
    use aws_smithy_runtime_api::client::orchestrator::Metadata;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::config_bag::ConfigBag;
    use xtask::providers::api_account::ApiAccount;
    use xtask::providers::apigw::Quota;

    fn throttled() -> UpdateAccountError {
        UpdateAccountError::TooManyRequestsException(TooManyRequestsException::builder().build())
    }

    /// When each API Gateway request left the client, by operation: recorded after the
    /// transport (where the pacer waits) handed the request over, so the gaps are the ones AWS
    /// would see.
    #[derive(Debug, Clone, Default)]
    struct Sent(Arc<Mutex<Vec<(String, Instant)>>>);

    impl Intercept for Sent {
        fn name(&self) -> &'static str {
            "test-sent-times"
        }
        fn read_after_transmit(
            &self,
            _context: &BeforeDeserializationInterceptorContextRef<'_>,
            _rc: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let op = cfg
                .load::<Metadata>()
                .map(|m| m.name().to_string())
                .unwrap_or_default();
            self.0.lock().unwrap().push((op, Instant::now()));
            Ok(())
        }
    }

    impl Sent {
        /// Installs the recorder on the context's API Gateway client (keeping its transport).
        fn on(ctx: &mut Ctx) -> Sent {
            let sent = Sent::default();
            ctx.aws.apigateway = Client::from_conf(
                ctx.aws
                    .apigateway
                    .config()
                    .to_builder()
                    .interceptor(sent.clone())
                    .build(),
            );
            sent
        }
        fn gaps(&self, operation: &str) -> Vec<Duration> {
            let t: Vec<Instant> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(op, _)| op == operation)
                .map(|(_, t)| *t)
                .collect();
            t.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    /// Finding 9: UpdateAccount is one call per 20 s per account. A TooManyRequests is
    /// retried no sooner than that (the client's pacer holds every attempt to the quota, the
    /// retry's own backoff is jittered below it), and not forever.
    #[tokio::test(start_paused = true)]
    async fn update_account_is_paced_and_bounded() {
        let update = mock!(Client::update_account)
            .sequence()
            .error(throttled)
            .times(2)
            .output(|| UpdateAccountOutput::builder().build())
            .build();
        let role = mock!(aws_sdk_iam::Client::create_role)
            .then_output(|| CreateRoleOutput::builder().build());
        let attach = mock!(aws_sdk_iam::Client::attach_role_policy)
            .then_output(|| AttachRolePolicyOutput::builder().build());
        let (mut ctx, log) = simulated(&[&update, &role, &attach]);
        let sent = Sent::on(&mut ctx);
        let spec = stacks::ApiAccountSpec {
            setup: true,
            role_name: "apigw-logs".into(),
        };
        ApiAccount.create(&ctx, &spec).await.expect("account set");
        assert_eq!(
            calls(&log),
            [
                "IAM.CreateRole",
                "IAM.AttachRolePolicy",
                "API Gateway.UpdateAccount",
                "API Gateway.UpdateAccount",
                "API Gateway.UpdateAccount",
            ]
        );
        let gaps = sent.gaps("UpdateAccount");
        assert_eq!(gaps.len(), 2);
        for gap in gaps {
            assert!(gap >= Quota::UpdateAccount.interval(), "{gap:?}");
        }

        // Throttled every time: the retry gives up after its bounded attempts.
        let update = mock!(Client::update_account).then_error(throttled);
        let (ctx, _log) = simulated(&[&update, &role, &attach]);
        ApiAccount.create(&ctx, &spec).await.expect_err("gives up");
        assert!(
            update.num_calls() > 1 && update.num_calls() <= 10,
            "{}",
            update.num_calls()
        );
    }

    /// CreateRestApi for an EDGE API is one per 30 s; REGIONAL one per 3 s. The client spaces
    /// consecutive creates by the type its request body names, and any API Gateway call the
    /// providers make goes through that one pacer.
    #[tokio::test(start_paused = true)]
    async fn create_rest_api_is_paced_by_endpoint_type() {
        let create = mock!(Client::create_rest_api)
            .then_output(|| CreateRestApiOutput::builder().id("api").build());
        let create_with = |ctx: &Ctx, t: EndpointType| {
            ctx.aws
                .apigateway
                .create_rest_api()
                .name("invoice-api")
                .endpoint_configuration(EndpointConfiguration::builder().types(t).build())
                .send()
        };
        for (t, quota) in [
            (EndpointType::Edge, Quota::CreateEdgeRestApi),
            (EndpointType::Regional, Quota::CreateRestApi),
        ] {
            let (mut ctx, _log) = simulated(&[&create]);
            let sent = Sent::on(&mut ctx);
            for _ in 0..3 {
                create_with(&ctx, t.clone()).await.expect("created");
            }
            let gaps = sent.gaps("CreateRestApi");
            assert_eq!(gaps.len(), 2);
            for gap in gaps {
                // Exactly the quota: the pacer waits no longer than it must.
                assert!(
                    gap >= quota.interval() && gap < quota.interval() + Duration::from_secs(1),
                    "{t:?}: {gap:?}"
                );
            }
        }
        assert!(Quota::CreateEdgeRestApi.interval() > Quota::CreateRestApi.interval());
    }

    /// CreateDeployment (5 s) and DeleteRestApi (30 s) made through the providers' own
    /// calls are spaced the same way, each by its own quota.
    #[tokio::test(start_paused = true)]
    async fn deployments_and_api_deletes_are_paced() {
        let deploy = mock!(Client::create_deployment)
            .then_output(|| CreateDeploymentOutput::builder().id("d").build());
        let delete =
            mock!(Client::delete_rest_api).then_output(|| DeleteRestApiOutput::builder().build());
        let (mut ctx, _log) = simulated(&[&deploy, &delete]);
        let sent = Sent::on(&mut ctx);
        let gw = ctx.aws.apigateway.clone();
        for i in 0..2 {
            gw.create_deployment()
                .rest_api_id("api")
                .send()
                .await
                .expect("deployed");
            gw.delete_rest_api()
                .rest_api_id(format!("api{i}"))
                .send()
                .await
                .expect("deleted");
        }
        for (op, quota) in [
            ("CreateDeployment", Quota::CreateDeployment),
            ("DeleteRestApi", Quota::DeleteRestApi),
        ] {
            let gaps = sent.gaps(op);
            assert_eq!(gaps.len(), 1, "{op}");
            assert!(gaps[0] >= quota.interval(), "{op}: {:?}", gaps[0]);
        }
    }

    /// Writes to one REST API go out together (resources, validator, gateway responses, then
    /// the routes), and AWS answers ConflictException ("concurrent modification") to a change
    /// while another is in progress: each write is sent again, bounded, until it lands.
    #[tokio::test(start_paused = true)]
    async fn concurrent_writes_to_one_api_retry_conflicts() {
        use aws_sdk_apigateway::operation::create_request_validator::CreateRequestValidatorOutput;
        use aws_sdk_apigateway::operation::create_resource::CreateResourceOutput;
        use aws_sdk_apigateway::operation::put_gateway_response::PutGatewayResponseOutput;
        use aws_sdk_apigateway::operation::put_integration::PutIntegrationOutput;
        use aws_sdk_apigateway::operation::put_integration_response::PutIntegrationResponseOutput;
        use aws_sdk_apigateway::operation::put_method::{PutMethodError, PutMethodOutput};
        use aws_sdk_apigateway::operation::put_method_response::PutMethodResponseOutput;
        use aws_sdk_apigateway::types::error::ConflictException;
        use xtask::providers::rest_api::{ObservedApi, RestApi};

        let conflict = || {
            PutMethodError::ConflictException(
                ConflictException::builder()
                    .message("Unable to complete operation due to concurrent modification. Please try again later.")
                    .meta(ErrorMetadata::builder().code("ConflictException").build())
                    .build(),
            )
        };
        let method = mock!(Client::put_method)
            .sequence()
            .error(conflict)
            .times(2)
            .output(|| PutMethodOutput::builder().build())
            .repeatedly()
            .build();
        let create_resource = mock!(Client::create_resource)
            .then_output(|| CreateResourceOutput::builder().id("res").build());
        let validator = mock!(Client::create_request_validator)
            .then_output(|| CreateRequestValidatorOutput::builder().id("val").build());
        let response = mock!(Client::put_gateway_response)
            .then_output(|| PutGatewayResponseOutput::builder().build());
        let integration =
            mock!(Client::put_integration).then_output(|| PutIntegrationOutput::builder().build());
        let method_response = mock!(Client::put_method_response)
            .then_output(|| PutMethodResponseOutput::builder().build());
        let integration_response = mock!(Client::put_integration_response)
            .then_output(|| PutIntegrationResponseOutput::builder().build());
        let (ctx, log) = simulated(&[
            &method,
            &create_resource,
            &validator,
            &response,
            &integration,
            &method_response,
            &integration_response,
        ]);
        let Spec::RestApi(spec) = resource("rest_api.invoice") else {
            panic!("rest_api.invoice is a REST API");
        };
        // A fresh API: only its root resource.
        let fresh = ObservedApi {
            id: "api".into(),
            description: spec.description.clone(),
            endpoint_type: Some(spec.endpoint_type.as_str().to_string()),
            tags: spec.tags.clone(),
            root_id: Some("root".into()),
            resources: BTreeMap::new(),
            routes: BTreeMap::new(),
            responses: BTreeMap::new(),
            validators: BTreeMap::new(),
        };
        let changes = RestApi::diff(&spec, &fresh).fields();
        RestApi
            .update(&ctx, &spec, &fresh, &changes)
            .await
            .expect("converged despite the conflicts");
        let calls = calls(&log);
        let count = |op: &str| calls.iter().filter(|c| *c == op).count();
        let routes = count("API Gateway.PutIntegration");
        assert!(routes >= 3, "{calls:?}");
        assert_eq!(
            count("API Gateway.PutMethod"),
            routes + 2,
            "two conflicts sent again"
        );
    }
}

mod event_source_mapping_propagation {
    use super::*;
    use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
    use aws_sdk_dynamodb::types::TableDescription;
    use aws_sdk_dynamodbstreams::operation::list_streams::ListStreamsOutput;
    use aws_sdk_iam::operation::get_role::GetRoleOutput;
    use aws_sdk_iam::types::Role;
    use aws_sdk_lambda::Client;
    use aws_sdk_lambda::operation::create_event_source_mapping::{
        CreateEventSourceMappingError, CreateEventSourceMappingOutput,
    };
    use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput;
    use aws_sdk_lambda::types::error::InvalidParameterValueException;
    use xtask::providers::event_source_mapping::EventSourceMapping;

    fn rules(role_age: Duration) -> Vec<Rule> {
        vec![
            mock!(aws_sdk_dynamodb::Client::describe_table).then_output(|| {
                DescribeTableOutput::builder()
                    .table(
                        TableDescription::builder()
                            .latest_stream_arn("arn:stream")
                            .build(),
                    )
                    .build()
            }),
            mock!(aws_sdk_dynamodbstreams::Client::list_streams)
                .then_output(|| ListStreamsOutput::builder().build()),
            mock!(Client::get_function_configuration).then_output(|| {
                GetFunctionConfigurationOutput::builder()
                    .role("arn:aws:iam::123456789012:role/generate-pdf-dev")
                    .build()
            }),
            mock!(aws_sdk_iam::Client::get_role).then_output(move || {
                let created = std::time::SystemTime::now() - role_age;
                GetRoleOutput::builder()
                    .role(
                        Role::builder()
                            .role_name("generate-pdf-dev")
                            .path("/")
                            .role_id("AROA")
                            .arn("arn:aws:iam::123456789012:role/generate-pdf-dev")
                            .create_date(aws_smithy_types::DateTime::from(created))
                            .build()
                            .unwrap(),
                    )
                    .build()
            }),
        ]
    }

    fn invalid() -> CreateEventSourceMappingError {
        CreateEventSourceMappingError::InvalidParameterValueException(
            InvalidParameterValueException::builder().build(),
        )
    }

    fn spec() -> stacks::EventSourceMappingSpec {
        first(|s| match s {
            Spec::EventSourceMapping(m) => Some(m),
            _ => None,
        })
    }

    /// The function's role is new: its stream permissions may still be propagating, so the
    /// error is retried (the role is looked up once) until the mapping is created.
    #[tokio::test(start_paused = true)]
    async fn create_retries_while_the_role_is_new() {
        let create = mock!(Client::create_event_source_mapping)
            .sequence()
            .error(invalid)
            .times(2)
            .output(|| CreateEventSourceMappingOutput::builder().uuid("u").build())
            .build();
        let enabled = mock!(Client::get_event_source_mapping).then_output(|| mapping_in("Enabled"));
        let mut all = rules(Duration::from_secs(5));
        all.push(create);
        all.push(enabled);
        let (ctx, log) = simulated(&all.iter().collect::<Vec<_>>());
        EventSourceMapping
            .create(&ctx, &spec())
            .await
            .expect("created");
        assert_eq!(
            calls(&log)[2..],
            [
                "Lambda.CreateEventSourceMapping",
                "Lambda.GetFunctionConfiguration",
                "IAM.GetRole",
                "Lambda.CreateEventSourceMapping",
                "Lambda.CreateEventSourceMapping",
                "Lambda.GetEventSourceMapping",
            ]
        );
    }

    /// A mapping that fails to start settles Disabled: the create fails with Lambda's reason
    /// instead of an apply that reports a trigger which delivers nothing.
    #[tokio::test(start_paused = true)]
    async fn a_mapping_that_settles_disabled_fails_the_create() {
        let create = mock!(Client::create_event_source_mapping)
            .then_output(|| CreateEventSourceMappingOutput::builder().uuid("u").build());
        let disabled = mock!(Client::get_event_source_mapping)
            .sequence()
            .output(|| mapping_in("Creating"))
            .output(|| {
                aws_sdk_lambda::operation::get_event_source_mapping::GetEventSourceMappingOutput::builder()
                    .state("Disabled")
                    .state_transition_reason("simulated: the function's role cannot read the stream")
                    .build()
            })
            .build();
        let mut all = rules(Duration::from_secs(5));
        all.push(create);
        all.push(disabled);
        let (ctx, _log) = simulated(&all.iter().collect::<Vec<_>>());
        let err = EventSourceMapping
            .create(&ctx, &spec())
            .await
            .expect_err("disabled");
        let msg = format!("{err:#}");
        assert!(msg.contains("is Disabled after its create"), "{msg}");
        assert!(msg.contains("cannot read the stream"), "{msg}");
    }

    /// A settled role: the error is a real mistake and surfaces at once.
    #[tokio::test(start_paused = true)]
    async fn create_fails_at_once_with_a_settled_role() {
        let create = mock!(Client::create_event_source_mapping).then_error(invalid);
        let mut all = rules(Duration::from_secs(30 * 86_400));
        all.push(create);
        let (ctx, log) = simulated(&all.iter().collect::<Vec<_>>());
        let start = Instant::now();
        EventSourceMapping
            .create(&ctx, &spec())
            .await
            .expect_err("a mistake");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(
            calls(&log)[2..],
            [
                "Lambda.CreateEventSourceMapping",
                "Lambda.GetFunctionConfiguration",
                "IAM.GetRole",
            ]
        );
    }
}

/// The environment lock when SSM's answer is lost after it made the parameter: the SDK's retry
/// is refused with ParameterAlreadyExists, and the holder read back is this very run.
mod lock {
    use super::*;
    use aws_sdk_ssm::Client;
    use aws_sdk_ssm::operation::get_parameter::GetParameterOutput;
    use aws_sdk_ssm::operation::put_parameter::PutParameterError;
    use aws_sdk_ssm::types::Parameter;
    use aws_sdk_ssm::types::error::ParameterAlreadyExists;
    use xtask::lock::{Holder, Lock, Place};

    const NAME: &str = "/invoice-app/dev/xtask-lock";

    fn place() -> Place {
        Place { lock: NAME.into() }
    }

    /// PutParameter: the first answer is lost (a 503 after SSM made it), the retry is refused;
    /// GetParameter then answers with `stored` (or, when `None`, the value the run wrote).
    fn lost_then_exists(stored: Option<String>) -> (Rule, Rule) {
        let written: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = written.clone();
        let put = mock!(Client::put_parameter)
            .match_requests(move |r| {
                *seen.lock().unwrap() = r.value().map(str::to_string);
                true
            })
            .sequence()
            .http_status(503, None)
            .error(|| {
                PutParameterError::ParameterAlreadyExists(ParameterAlreadyExists::builder().build())
            })
            .build();
        let get = mock!(Client::get_parameter).then_compute_output(move |_| {
            let value = stored
                .clone()
                .or_else(|| written.lock().unwrap().clone())
                .expect("the run wrote its value");
            GetParameterOutput::builder()
                .parameter(Parameter::builder().name(NAME).value(value).build())
                .build()
        });
        (put, get)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_on_the_lock_is_this_runs_own_lock() {
        let (put, get) = lost_then_exists(None);
        let (ctx, log) = simulated(&[&put, &get]);
        let lock = Lock::acquire(&ctx, &place(), "apply", &BTreeMap::new(), false)
            .await
            .expect("the parameter SSM made is this run's");
        assert_eq!(put.num_calls(), 2, "the SDK retried the lost answer once");
        assert_eq!(
            log.calls()
                .iter()
                .map(|c| format!("{}.{}", c.service, c.operation))
                .collect::<Vec<_>>(),
            ["SSM.PutParameter", "SSM.GetParameter"]
        );
        drop(lock);
    }

    #[tokio::test(start_paused = true)]
    async fn another_runs_lock_is_still_refused() {
        let other = Holder {
            who: "ci@runner".into(),
            command: "destroy".into(),
            pid: 7,
            since_unix: 0,
            run: "someone-else".into(),
        };
        let (put, get) = lost_then_exists(Some(serde_json::to_string(&other).unwrap()));
        let (ctx, _) = simulated(&[&put, &get]);
        let refused = Lock::acquire(&ctx, &place(), "apply", &BTreeMap::new(), false).await;
        let err = format!("{:#}", refused.err().expect("another run holds it"));
        assert!(
            err.contains("locked by ci@runner (`destroy`, pid 7)"),
            "{err}"
        );
    }
}

/// A stage's create when the account has no CloudWatch role for access logs: the deployment
/// made beside the check is taken back, and the apply stops with what to do.
mod api_stage {
    use super::*;
    use aws_sdk_apigateway::Client;
    use aws_sdk_apigateway::operation::create_deployment::CreateDeploymentOutput;
    use aws_sdk_apigateway::operation::delete_deployment::DeleteDeploymentOutput;
    use aws_sdk_apigateway::operation::get_account::GetAccountOutput;
    use aws_sdk_apigateway::operation::get_rest_apis::GetRestApisOutput;
    use aws_sdk_apigateway::types::RestApi;
    use xtask::providers::api_stage::ApiStage;

    #[tokio::test(start_paused = true)]
    async fn a_missing_logging_role_takes_the_new_deployment_back() {
        let Spec::ApiStage(spec) = resource("api_stage.main") else {
            panic!("api_stage.main is a stage")
        };
        let api_name = spec.api_name.clone();
        let apis = mock!(Client::get_rest_apis).then_output(move || {
            GetRestApisOutput::builder()
                .items(RestApi::builder().id("api1").name(&api_name).build())
                .build()
        });
        let deploy = mock!(Client::create_deployment)
            .then_output(|| CreateDeploymentOutput::builder().id("d1").build());
        let account =
            mock!(Client::get_account).then_output(|| GetAccountOutput::builder().build());
        let take_back = mock!(Client::delete_deployment)
            .match_requests(|r| r.rest_api_id() == Some("api1") && r.deployment_id() == Some("d1"))
            .then_output(|| DeleteDeploymentOutput::builder().build());
        let (ctx, _) = simulated(&[&apis, &deploy, &account, &take_back]);
        let err = ApiStage
            .create(&ctx, &spec)
            .await
            .expect_err("no role, no stage");
        assert!(
            format!("{err:#}").contains("needs the account's CloudWatch Logs role"),
            "{err:#}"
        );
        assert_eq!(deploy.num_calls(), 1);
        assert_eq!(
            take_back.num_calls(),
            1,
            "the unserved deployment is deleted"
        );
    }
}

/// A purge that S3 answers with per-key `SlowDown` errors (DeleteObjects succeeds as a call,
/// so the SDK does not retry): the keys are listed and deleted again after a pause.
mod s3_purge {
    use super::*;
    use aws_sdk_s3::Client;
    use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
    use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
    use aws_sdk_s3::types::{Error as S3KeyError, ObjectVersion};

    fn listing(keys: &[&str]) -> ListObjectVersionsOutput {
        keys.iter()
            .fold(ListObjectVersionsOutput::builder(), |b, k| {
                b.versions(ObjectVersion::builder().key(*k).version_id("v1").build())
            })
            .is_truncated(false)
            .build()
    }

    #[tokio::test(start_paused = true)]
    async fn keys_s3_was_too_busy_for_are_deleted_on_the_next_round() {
        let list = mock!(Client::list_object_versions)
            .sequence()
            .output(|| listing(&["a", "b"]))
            .output(|| listing(&["b"]))
            .output(|| listing(&[]))
            .build();
        let delete = mock!(Client::delete_objects)
            .sequence()
            .output(|| {
                DeleteObjectsOutput::builder()
                    .errors(
                        S3KeyError::builder()
                            .key("b")
                            .version_id("v1")
                            .code("SlowDown")
                            .build(),
                    )
                    .build()
            })
            .output(|| DeleteObjectsOutput::builder().build())
            .build();
        let (ctx, _) = simulated(&[&list, &delete]);
        let started = Instant::now();
        xtask::providers::s3_bucket::purge(&ctx, "bucket")
            .await
            .expect("purged after the busy round");
        assert_eq!(delete.num_calls(), 2);
        assert_eq!(list.num_calls(), 3, "re-listed until empty");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "paused before retrying"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_refused_for_good_fails_the_purge_and_names_it() {
        let list = mock!(Client::list_object_versions).then_output(|| listing(&["locked"]));
        let delete = mock!(Client::delete_objects).then_output(|| {
            DeleteObjectsOutput::builder()
                .errors(
                    S3KeyError::builder()
                        .key("locked")
                        .version_id("v1")
                        .code("AccessDenied")
                        .message("object lock")
                        .build(),
                )
                .build()
        });
        let (ctx, _) = simulated(&[&list, &delete]);
        let err = xtask::providers::s3_bucket::purge(&ctx, "bucket")
            .await
            .expect_err("AccessDenied is not retried");
        assert!(
            format!("{err:#}").contains("locked version v1: AccessDenied"),
            "{err:#}"
        );
        assert_eq!(delete.num_calls(), 1);
    }
}

/// Lambda's read under the lock: the alias, `$LATEST` and the versions (sent together),
/// without the alias-only shortcut first (the function is known to change).
mod lambda_read_again {
    use super::*;
    use aws_sdk_lambda::Client;
    use aws_sdk_lambda::operation::get_alias::GetAliasOutput;
    use aws_sdk_lambda::operation::get_function::GetFunctionOutput;
    use aws_sdk_lambda::operation::list_versions_by_function::ListVersionsByFunctionOutput;
    use aws_sdk_lambda::types::FunctionConfiguration;
    use xtask::providers::lambda_function::LambdaFunction;

    #[tokio::test(start_paused = true)]
    async fn read_again_reads_the_whole_function_and_the_alias_target() {
        let Spec::Function(spec) = resources()
            .into_iter()
            .find(|r| matches!(r.spec, Spec::Function(_)))
            .expect("a function")
            .spec
        else {
            unreachable!()
        };
        let config = |version: &str| {
            FunctionConfiguration::builder()
                .function_name(&spec.name)
                .function_arn(format!(
                    "arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}",
                    spec.name
                ))
                .version(version)
                .code_sha256("old")
                .build()
        };
        let (alias_config, latest_config, listed) = (config("3"), config("$LATEST"), config("3"));
        let alias = spec.alias.clone();
        let by_alias = mock!(Client::get_function)
            .match_requests(move |r| r.qualifier() == Some(alias.as_str()))
            .then_output(move || {
                GetFunctionOutput::builder()
                    .configuration(alias_config.clone())
                    .build()
            });
        let latest = mock!(Client::get_function)
            .match_requests(|r| r.qualifier().is_none())
            .then_output(move || {
                GetFunctionOutput::builder()
                    .configuration(latest_config.clone())
                    .build()
            });
        let versions = mock!(Client::list_versions_by_function).then_output(move || {
            ListVersionsByFunctionOutput::builder()
                .versions(listed.clone())
                .build()
        });
        let alias_revision = mock!(Client::get_alias)
            .then_output(|| GetAliasOutput::builder().revision_id("alias-rev").build());
        let (ctx, log) = simulated(&[&by_alias, &latest, &versions, &alias_revision]);
        let seen = LambdaFunction
            .read_again(&ctx, &spec)
            .await
            .expect("read")
            .expect("the function exists");
        assert_eq!(seen.alias_target.as_deref(), Some("3"));
        assert_eq!(seen.alias_revision_id.as_deref(), Some("alias-rev"));
        assert_eq!(
            by_alias.num_calls()
                + latest.num_calls()
                + versions.num_calls()
                + alias_revision.num_calls(),
            4
        );
        let mut calls: Vec<String> = log
            .calls()
            .iter()
            .map(|c| format!("{}.{}", c.service, c.operation))
            .collect();
        calls.sort();
        assert_eq!(
            calls,
            [
                "Lambda.GetAlias",
                "Lambda.GetFunction",
                "Lambda.GetFunction",
                "Lambda.ListVersionsByFunction"
            ],
            "no alias-only read first"
        );
    }
}
