//! One module per command; `main.rs` dispatches to their `run` functions.

pub mod apply;
pub mod bench;
pub mod build;
pub mod destroy;
pub mod emulator;
pub mod invoke;
pub mod outputs;
pub mod plan;
pub mod synth;
pub mod test;
pub mod up;

use std::sync::Arc;

use stacks::Stack;

use crate::engine::Node;
use crate::providers;

/// Exit codes, as documented in the README and `--help`.
pub mod exit {
    /// Success; for `plan --detailed-exitcode`, no changes.
    pub const OK: u8 = 0;
    /// Any error: bad config, AWS failure, refused plan.
    pub const ERROR: u8 = 1;
    /// `plan --detailed-exitcode` only: there are changes.
    pub const CHANGES: u8 = 2;
    /// Interrupted by Ctrl-C.
    pub const INTERRUPTED: u8 = 130;
}

/// Which engine deploys the environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// xtask reconciles each resource itself (no state but AWS and the ownership tags).
    #[default]
    Direct,
    /// CloudFormation runs a change set of the `synth` template.
    Cloudformation,
}

/// Binds every resource of a stack to its provider.
pub fn nodes(stack: &Stack) -> Vec<Arc<dyn Node>> {
    stack.resources.iter().map(providers::bind).collect()
}
