//! The invoice app's deployer as a library, so integration tests drive the same code as the CLI.
//!
//! `main.rs` parses flags and dispatches to one module per command; the engine (graph, diff,
//! plan, apply, waits) lives in [`engine`] and knows no resource kind by name; each AWS resource
//! kind is one module under [`providers`].

pub mod artifacts;
pub mod aws;
pub mod build;
pub mod cfn;
pub mod cmd;
pub mod emulator;
pub mod engine;
pub mod local;
pub mod lock;
pub mod providers;
pub mod session;
