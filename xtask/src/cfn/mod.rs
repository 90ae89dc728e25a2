//! The CloudFormation engine: the same stack model, deployed by AWS instead of by xtask.
//!
//! [`template`] synthesises one template from `stacks::invoice_app` (no second description of
//! the app); [`deploy`] runs it through a change set: validate, create, show as a plan,
//! execute, follow the stack's events, read the outputs, and delete the stack on destroy.
//! Ownership: resources it deploys carry `managed-by = xtask-cloudformation`, and each engine
//! refuses an environment the other one owns ([`flow::refuse_direct_owned`],
//! [`flow::refuse_cloudformation_owned`]).

pub mod deploy;
pub mod flow;
pub mod template;

use std::collections::BTreeMap;

use stacks::{Code, Config, Resource, Spec, Stack};

/// The stack model as the template describes it: for account `${AWS::AccountId}` in region
/// `${AWS::Region}`, so one template serves every account and region.
pub fn portable_stack(config: &Config, env: &str, code: &BTreeMap<String, Code>) -> Stack {
    stacks::invoice_app(
        config,
        &stacks::Target {
            env,
            account_id: template::ACCOUNT,
            region: template::REGION,
        },
        code,
    )
}

/// The template of an environment.
pub fn synth(config: &Config, env: &str, code: &BTreeMap<String, Code>) -> template::Template {
    let stack = portable_stack(config, env, code);
    template::synth(
        &stack,
        &format!("{} {env}: synthesised by cargo xtask synth", config.app),
    )
}

/// The stack's bootstrap: the artifacts bucket alone, with the very same template resource as
/// the full template, so the code can be uploaded before any function needs it.
pub fn bootstrap(stack: &Stack) -> template::Template {
    let only = Stack {
        resources: stack
            .resources
            .iter()
            .filter(|r| r.id == stacks::invoice_app::ARTIFACTS_BUCKET)
            .cloned()
            .collect(),
        ..stack.clone()
    };
    template::synth(
        &only,
        "artifacts bucket (bootstrap before the first upload)",
    )
}

/// The function zips the stack references, as resources the direct engine's object provider
/// uploads (content-addressed: present keys are not uploaded again).
pub fn artifacts(stack: &Stack) -> Vec<&Resource> {
    stack
        .resources
        .iter()
        .filter(|r| r.ensure == stacks::Ensure::Present && matches!(r.spec, Spec::Object(_)))
        .collect()
}
