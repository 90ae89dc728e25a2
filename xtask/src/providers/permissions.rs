//! What the deploy role needs: every AWS operation the deploying commands (plan, apply,
//! destroy, outputs, the lock and the account check) call, with the IAM actions each one
//! requires.
//!
//! The list is data next to the providers so that it is checked, not trusted: a unit test
//! scans the sources for SDK calls and fails when an operation is called but not listed (or
//! listed but no longer called), and another fails when the README's deploy-role section is
//! not [`readme_section`]'s rendering of this list. Most operations need the action of the
//! same name; the exceptions are spelled out (S3's older action names, API Gateway's
//! HTTP-verb actions, and the extra actions some calls need, such as `s3:TagResource` for
//! CreateBucket with tags or `iam:PassRole` for a function's role).

use std::collections::BTreeMap;

/// One SDK operation and the IAM actions it needs.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    /// The client it is called on (the field of `aws::Clients`).
    pub client: &'static str,
    /// The SDK method, as called (`create_bucket`).
    pub operation: &'static str,
    /// The IAM actions it needs.
    pub actions: &'static [&'static str],
}

const fn p(
    client: &'static str,
    operation: &'static str,
    actions: &'static [&'static str],
) -> Permission {
    Permission {
        client,
        operation,
        actions,
    }
}

/// Every operation the deploying commands call. Local-only code (`up`, `invoke`, the local
/// data plane) talks to the emulator and is not listed.
pub const DEPLOY_ROLE: &[Permission] = &[
    // API Gateway authorises by HTTP verb on the resource path, not by operation name.
    p("apigateway", "create_api_key", &["apigateway:POST"]),
    p("apigateway", "create_deployment", &["apigateway:POST"]),
    p(
        "apigateway",
        "create_request_validator",
        &["apigateway:POST"],
    ),
    p("apigateway", "create_resource", &["apigateway:POST"]),
    p("apigateway", "create_rest_api", &["apigateway:POST"]),
    p("apigateway", "create_stage", &["apigateway:POST"]),
    p("apigateway", "create_usage_plan", &["apigateway:POST"]),
    p("apigateway", "create_usage_plan_key", &["apigateway:POST"]),
    p("apigateway", "delete_api_key", &["apigateway:DELETE"]),
    p("apigateway", "delete_deployment", &["apigateway:DELETE"]),
    p("apigateway", "delete_method", &["apigateway:DELETE"]),
    p("apigateway", "delete_resource", &["apigateway:DELETE"]),
    p("apigateway", "delete_rest_api", &["apigateway:DELETE"]),
    p("apigateway", "delete_stage", &["apigateway:DELETE"]),
    p("apigateway", "delete_usage_plan", &["apigateway:DELETE"]),
    p("apigateway", "get_account", &["apigateway:GET"]),
    p("apigateway", "get_api_key", &["apigateway:GET"]),
    p("apigateway", "get_api_keys", &["apigateway:GET"]),
    p("apigateway", "get_deployments", &["apigateway:GET"]),
    p("apigateway", "get_gateway_responses", &["apigateway:GET"]),
    p("apigateway", "get_request_validators", &["apigateway:GET"]),
    p("apigateway", "get_resources", &["apigateway:GET"]),
    p("apigateway", "get_rest_apis", &["apigateway:GET"]),
    p("apigateway", "get_stage", &["apigateway:GET"]),
    p("apigateway", "get_stages", &["apigateway:GET"]),
    p("apigateway", "get_usage_plan_keys", &["apigateway:GET"]),
    p("apigateway", "get_usage_plans", &["apigateway:GET"]),
    p("apigateway", "put_gateway_response", &["apigateway:PUT"]),
    p("apigateway", "put_integration", &["apigateway:PUT"]),
    p(
        "apigateway",
        "put_integration_response",
        &["apigateway:PUT"],
    ),
    p("apigateway", "put_method", &["apigateway:PUT"]),
    p("apigateway", "put_method_response", &["apigateway:PUT"]),
    p("apigateway", "tag_resource", &["apigateway:PUT"]),
    p("apigateway", "untag_resource", &["apigateway:DELETE"]),
    // Setting the account's CloudWatch role passes that role to API Gateway.
    p(
        "apigateway",
        "update_account",
        &["apigateway:PATCH", "iam:PassRole"],
    ),
    p("apigateway", "update_api_key", &["apigateway:PATCH"]),
    p("apigateway", "update_rest_api", &["apigateway:PATCH"]),
    p("apigateway", "update_stage", &["apigateway:PATCH"]),
    p("apigateway", "update_usage_plan", &["apigateway:PATCH"]),
    // Target tracking creates and deletes CloudWatch alarms with the caller's permissions; the
    // first registration in an account creates the service-linked role.
    p(
        "autoscaling",
        "delete_scaling_policy",
        &[
            "application-autoscaling:DeleteScalingPolicy",
            "cloudwatch:DeleteAlarms",
            "cloudwatch:DescribeAlarms",
        ],
    ),
    p(
        "autoscaling",
        "deregister_scalable_target",
        &["application-autoscaling:DeregisterScalableTarget"],
    ),
    p(
        "autoscaling",
        "describe_scalable_targets",
        &["application-autoscaling:DescribeScalableTargets"],
    ),
    p(
        "autoscaling",
        "describe_scaling_policies",
        &["application-autoscaling:DescribeScalingPolicies"],
    ),
    p(
        "autoscaling",
        "put_scaling_policy",
        &[
            "application-autoscaling:PutScalingPolicy",
            "cloudwatch:DescribeAlarms",
            "cloudwatch:PutMetricAlarm",
        ],
    ),
    p(
        "autoscaling",
        "register_scalable_target",
        &[
            "application-autoscaling:RegisterScalableTarget",
            "iam:CreateServiceLinkedRole",
        ],
    ),
    // The seed step's read: whether every sample invoice is in the table.
    p("dynamodb", "batch_get_item", &["dynamodb:BatchGetItem"]),
    p(
        "dynamodb",
        "create_table",
        &["dynamodb:CreateTable", "dynamodb:TagResource"],
    ),
    p("dynamodb", "delete_table", &["dynamodb:DeleteTable"]),
    p(
        "dynamodb",
        "describe_continuous_backups",
        &["dynamodb:DescribeContinuousBackups"],
    ),
    p("dynamodb", "describe_table", &["dynamodb:DescribeTable"]),
    p(
        "dynamodb",
        "list_tags_of_resource",
        &["dynamodb:ListTagsOfResource"],
    ),
    p("dynamodb", "scan", &["dynamodb:Scan"]),
    p("dynamodb", "tag_resource", &["dynamodb:TagResource"]),
    p("dynamodb", "untag_resource", &["dynamodb:UntagResource"]),
    p(
        "dynamodb",
        "update_continuous_backups",
        &["dynamodb:UpdateContinuousBackups"],
    ),
    p("dynamodb", "update_table", &["dynamodb:UpdateTable"]),
    p("dynamodbstreams", "list_streams", &["dynamodb:ListStreams"]),
    p("iam", "attach_role_policy", &["iam:AttachRolePolicy"]),
    p("iam", "create_role", &["iam:CreateRole", "iam:TagRole"]),
    p("iam", "delete_role", &["iam:DeleteRole"]),
    p("iam", "delete_role_policy", &["iam:DeleteRolePolicy"]),
    p("iam", "detach_role_policy", &["iam:DetachRolePolicy"]),
    p("iam", "get_role", &["iam:GetRole"]),
    p("iam", "get_role_policy", &["iam:GetRolePolicy"]),
    p(
        "iam",
        "list_attached_role_policies",
        &["iam:ListAttachedRolePolicies"],
    ),
    p("iam", "list_role_policies", &["iam:ListRolePolicies"]),
    p("iam", "put_role_policy", &["iam:PutRolePolicy"]),
    p("iam", "tag_role", &["iam:TagRole"]),
    p("iam", "untag_role", &["iam:UntagRole"]),
    p(
        "iam",
        "update_assume_role_policy",
        &["iam:UpdateAssumeRolePolicy"],
    ),
    p("lambda", "add_permission", &["lambda:AddPermission"]),
    p("lambda", "create_alias", &["lambda:CreateAlias"]),
    p(
        "lambda",
        "create_event_source_mapping",
        &["lambda:CreateEventSourceMapping"],
    ),
    // Lambda reads the code from S3 with the caller's permissions and is passed the role.
    p(
        "lambda",
        "create_function",
        &[
            "lambda:CreateFunction",
            "lambda:TagResource",
            "iam:PassRole",
            "s3:GetObject",
        ],
    ),
    p(
        "lambda",
        "delete_event_source_mapping",
        &["lambda:DeleteEventSourceMapping"],
    ),
    p("lambda", "delete_function", &["lambda:DeleteFunction"]),
    p(
        "lambda",
        "get_event_source_mapping",
        &["lambda:GetEventSourceMapping"],
    ),
    p("lambda", "get_alias", &["lambda:GetAlias"]),
    p("lambda", "get_function", &["lambda:GetFunction"]),
    p(
        "lambda",
        "get_function_configuration",
        &["lambda:GetFunctionConfiguration"],
    ),
    p("lambda", "get_policy", &["lambda:GetPolicy"]),
    // The seed step, on AWS: insert-mock-data's alias, once.
    p("lambda", "invoke", &["lambda:InvokeFunction"]),
    p(
        "lambda",
        "list_event_source_mappings",
        &["lambda:ListEventSourceMappings"],
    ),
    p(
        "lambda",
        "list_versions_by_function",
        &["lambda:ListVersionsByFunction"],
    ),
    p("lambda", "publish_version", &["lambda:PublishVersion"]),
    p("lambda", "remove_permission", &["lambda:RemovePermission"]),
    p("lambda", "tag_resource", &["lambda:TagResource"]),
    p("lambda", "untag_resource", &["lambda:UntagResource"]),
    p("lambda", "update_alias", &["lambda:UpdateAlias"]),
    p(
        "lambda",
        "update_event_source_mapping",
        &["lambda:UpdateEventSourceMapping"],
    ),
    p(
        "lambda",
        "update_function_code",
        &["lambda:UpdateFunctionCode", "s3:GetObject"],
    ),
    p(
        "lambda",
        "update_function_configuration",
        &["lambda:UpdateFunctionConfiguration", "iam:PassRole"],
    ),
    p(
        "logs",
        "create_log_group",
        &["logs:CreateLogGroup", "logs:TagResource"],
    ),
    p("logs", "delete_log_group", &["logs:DeleteLogGroup"]),
    p("logs", "describe_log_groups", &["logs:DescribeLogGroups"]),
    p(
        "logs",
        "list_tags_for_resource",
        &["logs:ListTagsForResource"],
    ),
    p("logs", "put_retention_policy", &["logs:PutRetentionPolicy"]),
    p("logs", "tag_resource", &["logs:TagResource"]),
    p("logs", "untag_resource", &["logs:UntagResource"]),
    // CreateBucket with tags (the tags prove ownership from the first moment) also needs
    // s3:TagResource; a role with only the classic bucket permissions is refused.
    p(
        "s3",
        "create_bucket",
        &["s3:CreateBucket", "s3:TagResource"],
    ),
    p("s3", "delete_bucket", &["s3:DeleteBucket"]),
    p(
        "s3",
        "delete_bucket_lifecycle",
        &["s3:PutLifecycleConfiguration"],
    ),
    p("s3", "delete_bucket_policy", &["s3:DeleteBucketPolicy"]),
    p("s3", "delete_object", &["s3:DeleteObject"]),
    p(
        "s3",
        "delete_objects",
        &["s3:DeleteObject", "s3:DeleteObjectVersion"],
    ),
    p(
        "s3",
        "get_bucket_encryption",
        &["s3:GetEncryptionConfiguration"],
    ),
    p(
        "s3",
        "get_bucket_lifecycle_configuration",
        &["s3:GetLifecycleConfiguration"],
    ),
    p(
        "s3",
        "get_bucket_ownership_controls",
        &["s3:GetBucketOwnershipControls"],
    ),
    p("s3", "get_bucket_policy", &["s3:GetBucketPolicy"]),
    p("s3", "get_bucket_tagging", &["s3:GetBucketTagging"]),
    p("s3", "get_bucket_versioning", &["s3:GetBucketVersioning"]),
    p(
        "s3",
        "get_public_access_block",
        &["s3:GetBucketPublicAccessBlock"],
    ),
    p("s3", "list_object_versions", &["s3:ListBucketVersions"]),
    p("s3", "list_objects_v2", &["s3:ListBucket"]),
    p(
        "s3",
        "put_bucket_encryption",
        &["s3:PutEncryptionConfiguration"],
    ),
    p(
        "s3",
        "put_bucket_lifecycle_configuration",
        &["s3:PutLifecycleConfiguration"],
    ),
    p(
        "s3",
        "put_bucket_ownership_controls",
        &["s3:PutBucketOwnershipControls"],
    ),
    p("s3", "put_bucket_policy", &["s3:PutBucketPolicy"]),
    p("s3", "put_bucket_tagging", &["s3:PutBucketTagging"]),
    p("s3", "put_bucket_versioning", &["s3:PutBucketVersioning"]),
    p("s3", "put_object", &["s3:PutObject"]),
    p(
        "s3",
        "put_public_access_block",
        &["s3:PutBucketPublicAccessBlock"],
    ),
    p("ssm", "delete_parameter", &["ssm:DeleteParameter"]),
    p("ssm", "get_parameter", &["ssm:GetParameter"]),
    // Tags given to PutParameter also need AddTagsToResource.
    p(
        "ssm",
        "put_parameter",
        &["ssm:PutParameter", "ssm:AddTagsToResource"],
    ),
    // The direct engine refuses an environment a CloudFormation stack owns
    // (`cfn::flow::refuse_cloudformation_owned`): one stack read per plan, apply or destroy.
    p(
        "cloudformation",
        "describe_stacks",
        &["cloudformation:DescribeStacks"],
    ),
    // Needs no permission (any principal may call it); listed so the list is complete.
    p("sts", "get_caller_identity", &["sts:GetCallerIdentity"]),
];

/// Every IAM action, with the SDK operations that need it.
pub fn actions() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in DEPLOY_ROLE {
        for a in p.actions {
            out.entry(a).or_default().push(p.operation);
        }
    }
    out
}

/// The README's deploy-role list: one line per IAM service prefix, its actions sorted.
pub fn readme_section() -> String {
    let mut by_service: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for action in actions().keys() {
        let service = action.split(':').next().unwrap_or(action);
        by_service.entry(service).or_default().push(action);
    }
    let mut out = String::new();
    for (service, actions) in by_service {
        let list: Vec<String> = actions.iter().map(|a| format!("`{a}`")).collect();
        out.push_str(&format!("- **{service}**: {}\n", list.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Local names the sources give clients (`let gw = &ctx.aws.apigateway;`).
    const ALIASES: [(&str, &str); 2] = [("gw", "apigateway"), ("db", "dynamodb")];

    /// Sources of the deploying commands. The local data plane and the local-only commands
    /// (`up`, `invoke`, `bench`, `test`, `emulator`, `build`) talk only to the emulator.
    fn deploy_sources() -> Vec<std::path::PathBuf> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<_> = std::fs::read_dir(src.join("providers"))
            .expect("providers/")
            .map(|e| e.expect("entry").path())
            .collect();
        for f in [
            "lock.rs",
            "session.rs",
            "artifacts.rs",
            "cmd/plan.rs",
            "cmd/apply.rs",
            "cmd/destroy.rs",
            "cmd/outputs.rs",
        ] {
            files.push(src.join(f));
        }
        files.extend(
            std::fs::read_dir(src.join("engine"))
                .expect("engine/")
                .map(|e| e.expect("entry").path()),
        );
        files
    }

    /// The SDK clients `aws::Clients` holds, by field name, read from its source so that a
    /// service the list has never heard of is still scanned.
    fn client_fields() -> BTreeSet<String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/aws.rs");
        let text = std::fs::read_to_string(src).expect("aws.rs");
        let body = text
            .split("pub struct Clients {")
            .nth(1)
            .and_then(|rest| rest.split("\n}").next())
            .expect("aws::Clients");
        let fields: BTreeSet<String> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split_once(':'))
            .filter(|(_, ty)| ty.trim().starts_with("aws_sdk_"))
            .map(|(name, _)| name.trim().to_string())
            .collect();
        assert!(fields.contains("cloudformation"), "read {fields:?}");
        fields
    }

    /// `(client, operation)` of every `<client>.<operation>()` call in `source` outside its
    /// tests, where `<client>` is a field of `aws::Clients` or a local alias of one.
    fn sdk_calls(source: &str) -> BTreeSet<(String, String)> {
        let clients = client_fields();
        let clients: BTreeSet<&str> = clients.iter().map(String::as_str).collect();
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut out = BTreeSet::new();
        for (at, _) in code.match_indices("()") {
            let before = &code[..at];
            let op_start = before.trim_end_matches(ident).len();
            let op = &before[op_start..];
            let rest = before[..op_start].trim_end();
            let Some(rest) = rest.strip_suffix('.') else {
                continue;
            };
            let rest = rest.trim_end();
            let recv = &rest[rest.trim_end_matches(ident).len()..];
            let client = ALIASES
                .iter()
                .find(|(alias, _)| *alias == recv)
                .map(|(_, c)| *c)
                .unwrap_or(recv);
            if clients.contains(client) && !op.is_empty() && op != "clone" {
                out.insert((client.to_string(), op.to_string()));
            }
        }
        out
    }

    /// Functions outside the deploying commands' files that they call: the direct engine's
    /// check that no CloudFormation stack owns the environment reads the stack.
    const DEPLOY_FUNCTIONS: [(&str, &str); 1] = [("cfn/deploy.rs", "read")];

    /// The text of `fn <name>` in `source`, from its signature to its closing brace.
    fn function_body<'a>(source: &'a str, name: &str) -> &'a str {
        let start = source
            .find(&format!("fn {name}("))
            .unwrap_or_else(|| panic!("no fn {name}"));
        let mut depth = 0;
        for (i, c) in source[start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => return &source[start..start + i + 1],
                '}' => depth -= 1,
                _ => {}
            }
        }
        panic!("fn {name} does not end")
    }

    #[test]
    fn the_list_matches_the_calls_in_the_code() {
        let mut called = BTreeSet::new();
        for f in deploy_sources() {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            called.extend(sdk_calls(&text));
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for (file, name) in DEPLOY_FUNCTIONS {
            let text = std::fs::read_to_string(src.join(file)).expect(file);
            called.extend(sdk_calls(function_body(&text, name)));
        }
        let listed: BTreeSet<(String, String)> = DEPLOY_ROLE
            .iter()
            .map(|p| (p.client.to_string(), p.operation.to_string()))
            .collect();
        let missing: Vec<_> = called.difference(&listed).collect();
        let stale: Vec<_> = listed.difference(&called).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "called but not in DEPLOY_ROLE: {missing:?}\nin DEPLOY_ROLE but never called: {stale:?}"
        );
        assert_eq!(
            listed.len(),
            DEPLOY_ROLE.len(),
            "an operation is listed twice"
        );
    }

    #[test]
    fn the_scanner_sees_calls_through_fields_and_aliases() {
        let src = "let gw = &ctx.aws.apigateway;\n gw.create_rest_api()\n ctx.aws\n  .s3\n  \
                   .put_bucket_tagging()\n lambda.clone()\n spec.name()\n";
        let calls = sdk_calls(src);
        let expected: BTreeSet<(String, String)> = [
            ("apigateway", "create_rest_api"),
            ("s3", "put_bucket_tagging"),
        ]
        .iter()
        .map(|(c, o)| (c.to_string(), o.to_string()))
        .collect();
        assert_eq!(calls, expected);
    }

    #[test]
    fn the_readme_lists_exactly_these_actions() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .expect("README.md");
        let begin = "<!-- deploy-role:begin (generated: providers/permissions.rs) -->\n";
        let end = "<!-- deploy-role:end -->";
        let start = readme.find(begin).expect("the deploy-role begin marker") + begin.len();
        let stop = readme[start..].find(end).expect("the end marker") + start;
        assert_eq!(
            &readme[start..stop],
            readme_section(),
            "README.md's deploy-role list differs from providers/permissions.rs; replace it with the text above"
        );
    }
}
