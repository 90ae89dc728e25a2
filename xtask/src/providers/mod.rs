//! One module per AWS resource kind, and [`bind`]: the single place that maps a stack's
//! spec variants to their providers.
//!
//! Each kind declares its field set with `fields!` (or by hand, where fields are named by
//! an index or a route) and how its SDK errors say "not found" with `not_found_errors!`;
//! its code then asks [`not_found`], one way for every call.

pub mod api_account;
pub mod api_key;
pub mod api_stage;
pub mod apigw;
pub mod dynamodb_table;
pub mod event_source_mapping;
pub mod iam_role;
pub mod lambda_function;
pub mod lambda_permission;
pub mod log_group;
pub mod permissions;
pub mod rest_api;
pub mod s3_bucket;
pub mod s3_object;
pub mod scalable_target;
pub mod scaling_policy;
pub mod seed;
pub mod usage_plan;

use std::sync::Arc;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use stacks::{Resource, Spec};

use crate::engine::{Bound, Node};

/// Turns a stack resource into an engine node bound to its provider.
pub fn bind(resource: &Resource) -> Arc<dyn Node> {
    match &resource.spec {
        Spec::Bucket(s) => Arc::new(Bound::new(s3_bucket::S3Bucket, resource, s.clone())),
        Spec::Table(s) => Arc::new(Bound::new(
            dynamodb_table::DynamoDbTable,
            resource,
            s.clone(),
        )),
        Spec::ScalableTarget(s) => Arc::new(Bound::new(
            scalable_target::ScalableTarget,
            resource,
            s.clone(),
        )),
        Spec::ScalingPolicy(s) => Arc::new(Bound::new(
            scaling_policy::ScalingPolicy,
            resource,
            s.clone(),
        )),
        Spec::ApiAccount(s) => Arc::new(Bound::new(api_account::ApiAccount, resource, s.clone())),
        Spec::RestApi(s) => Arc::new(Bound::new(rest_api::RestApi, resource, s.clone())),
        Spec::ApiStage(s) => Arc::new(Bound::new(api_stage::ApiStage, resource, s.clone())),
        Spec::ApiKey(s) => Arc::new(Bound::new(api_key::ApiKey, resource, s.clone())),
        Spec::UsagePlan(s) => Arc::new(Bound::new(usage_plan::UsagePlan, resource, s.clone())),
        Spec::LambdaPermission(s) => Arc::new(Bound::new(
            lambda_permission::LambdaPermission,
            resource,
            s.clone(),
        )),
        Spec::Role(s) => Arc::new(Bound::new(iam_role::IamRole, resource, s.clone())),
        Spec::LogGroup(s) => Arc::new(Bound::new(log_group::LogGroup, resource, s.clone())),
        Spec::Object(s) => Arc::new(Bound::new(s3_object::S3Object, resource, s.clone())),
        Spec::Function(s) => Arc::new(Bound::new(
            lambda_function::LambdaFunction,
            resource,
            s.clone(),
        )),
        Spec::EventSourceMapping(s) => Arc::new(Bound::new(
            event_source_mapping::EventSourceMapping,
            resource,
            s.clone(),
        )),
        Spec::Seed(s) => Arc::new(Bound::new(seed::Seed, resource, s.clone())),
    }
}

/// Declares a provider's field set ([`crate::engine::Field`]): an enum whose variants render
/// as the names plans show, compared with those names too (for tests and assertions).
macro_rules! fields {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The name plans show.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
pub(crate) use fields;

/// The service's own error, when the call reached the service and it answered with one.
pub fn service_error<E, R>(err: &SdkError<E, R>) -> Option<&E> {
    match err {
        SdkError::ServiceError(e) => Some(e.err()),
        _ => None,
    }
}

/// The AWS error code of a service error, for the errors the SDK models only as codes
/// (S3's `NoSuchTagSet`, say). Never a match on message text.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    service_error(err).and_then(|e| e.code())
}

/// An SDK operation error that can say "what the call names does not exist". Each error kind
/// decides it one way, declared with `not_found_errors!`: by its typed variant where the SDK models
/// one, by its error code only where it does not (S3's `NoSuchBucket` on most calls).
pub trait NotFound {
    fn is_not_found(&self) -> bool;
}

/// Whether a call failed because what it names does not exist.
pub fn not_found<E: NotFound, R>(err: &SdkError<E, R>) -> bool {
    service_error(err).is_some_and(E::is_not_found)
}

/// Declares how error kinds say "not found": `Error::Variant` for a typed variant,
/// `Error = "Code"` for an error the SDK models only as a code.
macro_rules! not_found_errors {
    ($($err:ident $(:: $variant:ident)? $(= $code:literal)?),+ $(,)?) => {
        $(
            impl $crate::providers::NotFound for $err {
                fn is_not_found(&self) -> bool {
                    $crate::providers::not_found_errors!(@check self, $err $(:: $variant)? $(= $code)?)
                }
            }
        )+
    };
    (@check $e:ident, $err:ident :: $variant:ident) => {
        matches!($e, $err::$variant(_))
    };
    (@check $e:ident, $err:ident = $code:literal) => {
        aws_smithy_types::error::metadata::ProvideErrorMetadata::code($e) == Some($code)
    };
}
pub(crate) use not_found_errors;

/// What a failed call's response said, for error messages: HTTP status and AWS error code.
/// The SDK's own text for a service error whose response carries no code (moto's bare 403
/// when a bucket policy denies a request, say) is only "unhandled error".
pub fn response_summary<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> String {
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (status, error_code(err)) {
        (Some(status), Some(code)) => format!("HTTP {status} {code}"),
        (Some(status), None) => format!("HTTP {status} with no error code in the response"),
        (None, _) => "no response".into(),
    }
}

/// The ARN partition of a region (one definition, shared with the stack's ARNs).
pub use stacks::names::partition;
