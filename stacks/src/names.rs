//! Physical names and ownership tags, derived from app, prefix, environment and suffix.
//!
//! Names must be stable: there is no state file, so the name is how a resource is found again.

use std::collections::BTreeMap;

use crate::config::Config;

pub const TAG_APP: &str = "app";
pub const TAG_ENV: &str = "env";
pub const TAG_MANAGED_BY: &str = "managed-by";
pub const MANAGED_BY: &str = "xtask";
/// The `managed-by` value of resources the CloudFormation engine deploys: the engine marker
/// that keeps either engine from taking over an environment the other one owns.
pub const MANAGED_BY_CLOUDFORMATION: &str = "xtask-cloudformation";
/// Tags xtask sets on everything it creates; together they prove ownership.
pub const RESERVED_TAGS: [&str; 3] = [TAG_APP, TAG_ENV, TAG_MANAGED_BY];

/// The names of one environment's resources.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
    app: String,
    env: String,
    suffix: String,
}

impl Names {
    /// `suffix` makes bucket names globally unique: the configured one or the account id.
    pub fn new(c: &Config, env: &str, suffix: &str) -> Names {
        Names {
            prefix: c.name_prefix.clone(),
            app: c.app.clone(),
            env: env.into(),
            suffix: suffix.into(),
        }
    }

    /// The names of environment `env` in account `account_id`: bucket names end with the
    /// configured `buckets.name_suffix` or, by default, the account id, which keeps them
    /// globally unique without a random component. The one place this rule is written.
    pub fn for_account(c: &Config, env: &str, account_id: &str) -> Names {
        let suffix = if c.buckets.name_suffix.is_empty() {
            account_id
        } else {
            &c.buckets.name_suffix
        };
        Names::new(c, env, suffix)
    }

    pub fn env(&self) -> &str {
        &self.env
    }

    pub fn artifacts_bucket(&self) -> String {
        format!(
            "{}{}-artifacts-{}-{}",
            self.prefix, self.app, self.env, self.suffix
        )
    }

    pub fn pdf_bucket(&self) -> String {
        format!(
            "{}{}-pdfs-{}-{}",
            self.prefix, self.app, self.env, self.suffix
        )
    }

    pub fn invoices_table(&self) -> String {
        format!("{}invoices-table-{}", self.prefix, self.env)
    }

    pub fn processed_table(&self) -> String {
        format!("{}processed-invoices-table-{}", self.prefix, self.env)
    }

    /// The REST API's name.
    pub fn rest_api(&self) -> String {
        format!("{}invoice-api-gateway-{}", self.prefix, self.env)
    }

    pub fn api_key(&self) -> String {
        format!("{}{}-api-key-{}", self.prefix, self.app, self.env)
    }

    pub fn usage_plan(&self) -> String {
        format!("{}{}-usage-plan-{}", self.prefix, self.app, self.env)
    }

    /// The account-wide role API Gateway writes logs with (one per account, shared by envs).
    pub fn apigateway_cloudwatch_role(&self) -> String {
        format!("{}apigateway-cloudwatch-logs", self.prefix)
    }

    /// A Lambda function's name: `insert-invoice-dev`.
    pub fn function(&self, function: &str) -> String {
        format!("{}{function}-{}", self.prefix, self.env)
    }

    /// The execution role of a function.
    pub fn function_role(&self, function: &str) -> String {
        format!("{}{}-{function}-{}", self.prefix, self.app, self.env)
    }

    /// The log group Lambda writes a function's logs to.
    pub fn function_log_group(&self, function: &str) -> String {
        format!("/aws/lambda/{}", self.function(function))
    }

    /// The SSM parameter that serialises apply and destroy of this environment.
    pub fn lock_parameter(&self) -> String {
        format!("/{}{}/{}/xtask-lock", self.prefix, self.app, self.env)
    }

    /// The CloudFormation stack of this environment under `--engine cloudformation`.
    pub fn cloudformation_stack(&self) -> String {
        format!("{}{}-{}", self.prefix, self.app, self.env)
    }

    /// The ownership tags every taggable resource of this environment carries.
    pub fn ownership_tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TAG_APP.to_string(), self.app.clone()),
            (TAG_ENV.to_string(), self.env.clone()),
            (TAG_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        ])
    }
}

/// The ARN partition of a region.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The ARN AWS gives the DynamoDB table `name`.
pub fn table_arn(region: &str, account_id: &str, name: &str) -> String {
    format!(
        "arn:{}:dynamodb:{region}:{account_id}:table/{name}",
        partition(region)
    )
}

/// The ARN AWS gives the CloudWatch Logs log group `name` (without DescribeLogGroups' `:*`).
pub fn log_group_arn(region: &str, account_id: &str, name: &str) -> String {
    format!(
        "arn:{}:logs:{region}:{account_id}:log-group:{name}",
        partition(region)
    )
}

/// Environment names become part of every resource name.
pub fn check_env(env: &str) -> Result<(), String> {
    let mut bytes = env.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if first_ok && rest_ok && env.len() <= 16 {
        Ok(())
    } else {
        Err(format!(
            "environment name `{env}` must be 1 to 16 characters of a-z, 0-9 and `-`, starting with a letter"
        ))
    }
}

/// S3's general purpose bucket naming rules.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err(format!("{} characters; allowed 3 to 63", name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("only a-z, 0-9, `.` and `-` are allowed".into());
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge_ok(name.bytes().next()) || !edge_ok(name.bytes().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    if name.contains("..") {
        return Err("must not contain `..`".into());
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Err("must not look like an IP address".into());
    }
    for p in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(p) {
            return Err(format!("must not start with `{p}`"));
        }
    }
    for s in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(s) {
            return Err(format!("must not end with `{s}`"));
        }
    }
    Ok(())
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-4`: letters and dashes, then a number.
pub fn is_region(region: &str) -> bool {
    let Some((head, num)) = region.rsplit_once('-') else {
        return false;
    };
    let parts: Vec<&str> = head.split('-').collect();
    !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit())
        && parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rules() {
        assert!(check_bucket_name("invoice-app-pdfs-dev-123456789012").is_ok());
        assert!(check_bucket_name("ab").is_err());
        assert!(check_bucket_name(&"a".repeat(64)).is_err());
        assert!(check_bucket_name("Upper").is_err());
        assert!(check_bucket_name("-dash").is_err());
        assert!(check_bucket_name("a..b").is_err());
        assert!(check_bucket_name("192.168.1.1").is_err());
        assert!(check_bucket_name("xn--abc").is_err());
        assert!(check_bucket_name("abc-s3alias").is_err());
    }

    #[test]
    fn env_and_region_rules() {
        assert!(check_env("dev").is_ok());
        assert!(check_env("pr-42").is_ok());
        assert!(check_env("Dev").is_err());
        assert!(check_env("").is_err());
        assert!(check_env("9lives").is_err());
        assert!(is_region("eu-west-1"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("eu-west"));
        assert!(!is_region("EU-west-1"));
    }
}
