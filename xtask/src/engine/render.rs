//! Plans and results for people (text) and for programs (a stable JSON document).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::apply::Outcome;
use super::plan::{Action, Plan, Summary};
use crate::aws::CallCounts;

/// Bumped whenever a field of the JSON documents changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The plan as text: one block per resource that changes, then a summary line.
pub fn plan_text(plan: &Plan, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{command} for env `{}` in account {} region {}",
        plan.env, plan.account_id, plan.region
    );
    let _ = writeln!(out);
    for r in plan.resources.iter().filter(|r| r.action != Action::NoOp) {
        let _ = writeln!(out, "{:>3} {}  ({})", r.action.symbol(), r.id, r.name);
        for c in &r.changes {
            let suffix = if c.forces_replacement && r.action == Action::Replace {
                "   # forces replacement"
            } else {
                ""
            };
            match r.action {
                Action::Create => {
                    let _ = writeln!(out, "        {}: {}", c.field, show(&c.new));
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "        {}: {} -> {}{suffix}",
                        c.field,
                        show(&c.old),
                        show(&c.new)
                    );
                }
            }
        }
        for d in &r.details {
            let _ = writeln!(out, "        # {d}");
        }
        if let Some(b) = &r.blocked {
            let _ = writeln!(out, "        ! blocked: {b}");
        }
    }
    let s = plan.summary();
    if !plan.has_changes() && s.conflict == 0 {
        if s.no_op == 0 {
            let _ = writeln!(out, "No changes: nothing exists and nothing is wanted.");
        } else {
            let _ = writeln!(
                out,
                "No changes: {} resource{} up to date.",
                s.no_op,
                plural(s.no_op)
            );
        }
    } else {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", summary_line(&s));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub fn summary_line(s: &Summary) -> String {
    let mut parts = vec![
        format!("{} to create", s.create),
        format!("{} to update", s.update),
        format!("{} to replace", s.replace),
        format!("{} to delete", s.delete),
        format!("{} unchanged", s.no_op),
    ];
    if s.conflict > 0 {
        parts.push(format!(
            "{} conflict{} (not ours, left alone)",
            s.conflict,
            plural(s.conflict)
        ));
    }
    format!("Plan: {}.", parts.join(", "))
}

#[derive(Serialize)]
struct PlanDoc<'a> {
    format_version: u32,
    command: &'a str,
    #[serde(flatten)]
    plan: &'a Plan,
    summary: Summary,
    changes: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcomes: Option<&'a [Outcome]>,
    api_calls: CallCounts,
}

/// The plan (and, after apply or destroy, what happened) as one JSON document.
pub fn json(
    plan: &Plan,
    command: &str,
    outcomes: Option<&[Outcome]>,
    api_calls: CallCounts,
) -> String {
    let doc = PlanDoc {
        format_version: FORMAT_VERSION,
        command,
        plan,
        summary: plan.summary(),
        changes: plan.has_changes(),
        outcomes,
        api_calls,
    };
    serde_json::to_string_pretty(&doc).expect("plan serialises")
}
