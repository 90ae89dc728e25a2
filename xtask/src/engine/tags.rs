//! Tag reconciliation shared by every provider whose service tags with a "remove these keys"
//! call and an "add or overwrite these" call (DynamoDB, IAM, CloudWatch Logs, Lambda).

use std::collections::BTreeMap;

/// What to change so a resource's live tags become the desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagDelta {
    /// Keys to untag: live, not desired. `aws:` keys belong to AWS and cannot be removed.
    pub remove: Vec<String>,
    /// Keys to add or overwrite, with their desired values; unchanged ones are left out.
    pub set: BTreeMap<String, String>,
}

/// The delta from `live` to `desired`.
pub fn delta(desired: &BTreeMap<String, String>, live: &BTreeMap<String, String>) -> TagDelta {
    TagDelta {
        remove: live
            .keys()
            .filter(|k| !k.starts_with("aws:") && !desired.contains_key(*k))
            .cloned()
            .collect(),
        set: desired
            .iter()
            .filter(|(k, v)| live.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn removes_extra_keys_sets_changed_ones_and_leaves_aws_keys() {
        let desired = map(&[("app", "invoice-app"), ("env", "dev"), ("team", "b")]);
        let live = map(&[
            ("app", "invoice-app"),
            ("env", "prod"),
            ("old", "x"),
            ("aws:cloudformation:stack-name", "s"),
        ]);
        let d = delta(&desired, &live);
        assert_eq!(d.remove, vec!["old".to_string()]);
        assert_eq!(d.set, map(&[("env", "dev"), ("team", "b")]));
        assert_eq!(delta(&desired, &desired), TagDelta::default());
    }
}
