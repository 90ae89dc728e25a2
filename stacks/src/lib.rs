//! The invoice app's desired state as pure data.
//!
//! [`config`] turns `config/<env>.toml` (plus overrides) into a checked [`config::Config`];
//! [`invoice_app`] turns that into a [`model::Stack`]: every resource the app may own, with
//! its typed spec and dependencies. [`functions`] describes each Lambda function once; its
//! resources, route and triggers derive from that entry. Nothing here talks to AWS, so all
//! of it is unit-tested.

pub mod api;
pub mod config;
pub mod functions;
pub mod invoice_app;
pub mod model;
pub mod names;
pub mod validate;

pub use config::{Config, ConfigError, Override};
pub use invoice_app::{Target, invoice_app};
pub use model::*;
