//! Shared core of the invoice Lambda functions.
//!
//! The handler crates (`insert-invoice`, `list-invoices`, `generate-pdf`, `download-pdf`,
//! `insert-mock-data`) are thin wrappers around this crate:
//!
//! - [`model`]: the invoice as clients send it and as DynamoDB stores it.
//! - [`validate`]: turns untrusted JSON into a valid [`model::Invoice`] or a field-level error.
//! - [`money`]: ISO 4217 currencies and formatting of integer minor units.
//! - [`error`]: the API error type and the storage error type.
//! - [`http`]: API Gateway request parsing and JSON/text responses.
//! - [`store`]: storage traits the handlers are written against, and [`ops`] built on them.
//! - [`dynamo`] (feature `dynamodb`) and [`s3`] (feature `s3`): the AWS implementations of
//!   those traits; a handler enables only the ones it calls, so it links only what it uses
//!   ([`s3`] signs its requests itself, without the S3 SDK client).
//! - [`pdf`] (feature `pdf`): deterministic A4 invoice rendering with an embedded subset font.
//! - [`memory`] (feature `test-util`): in-memory stores for tests.

pub mod aws;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
pub mod error;
pub mod http;
pub mod logging;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod model;
pub mod money;
pub mod ops;
#[cfg(feature = "pdf")]
pub mod pdf;
#[cfg(feature = "s3")]
pub mod s3;
pub mod store;
pub mod validate;

pub use error::{ApiError, FieldError, StoreError};
pub use model::{Invoice, LineItem, ProcessedRecord};
