//! Bucket lifecycle rules and the pure decisions the lifecycle worker takes with them.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub enabled: bool,
    /// Filter: key prefix, tags that must all be present, size bounds (exclusive).
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_greater_than: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_less_than: Option<u64>,
    /// Actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<UnixMillis>,
    #[serde(default)]
    pub expired_object_delete_marker: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_noncurrent_versions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_multipart_days: Option<u32>,
}

/// Checks a lifecycle configuration; the error says what is wrong.
pub fn validate(rules: &[LifecycleRule]) -> Result<(), String> {
    if rules.is_empty() || rules.len() > 1000 {
        return Err("a lifecycle configuration holds 1 to 1000 rules".into());
    }
    let mut ids = std::collections::HashSet::new();
    for r in rules {
        if let Some(id) = &r.id {
            if id.len() > 255 {
                return Err("a rule ID is at most 255 characters".into());
            }
            if !ids.insert(id.as_str()) {
                return Err(format!("rule ID {id:?} is used twice"));
            }
        }
        let has_action = r.expiration_days.is_some()
            || r.expiration_date.is_some()
            || r.expired_object_delete_marker
            || r.noncurrent_days.is_some()
            || r.abort_incomplete_multipart_days.is_some();
        if !has_action {
            return Err("every lifecycle rule needs at least one action".into());
        }
        if [r.expiration_days, r.noncurrent_days, r.abort_incomplete_multipart_days]
            .iter()
            .flatten()
            .any(|d| *d == 0)
        {
            return Err("'Days' in a lifecycle rule must be a positive integer".into());
        }
        if r.expiration_days.is_some() && r.expiration_date.is_some() {
            return Err("an Expiration has Days or Date, not both".into());
        }
        if r.expired_object_delete_marker && !r.tags.is_empty() {
            return Err("ExpiredObjectDeleteMarker cannot be specified with tag-based filters".into());
        }
    }
    Ok(())
}

impl LifecycleRule {
    /// Whether the rule's filter selects an object.
    pub fn matches(&self, key: &str, size: u64, tags: &[(String, String)]) -> bool {
        self.enabled
            && key.starts_with(&self.prefix)
            && self.tags.iter().all(|t| tags.contains(t))
            && self.size_greater_than.is_none_or(|g| size > g)
            && self.size_less_than.is_none_or(|l| size < l)
    }

    /// Whether a current version last modified at `modified` has expired at `now`
    /// (`day_ms` is the length of a day: shortened in tests).
    pub fn current_expired(&self, modified: UnixMillis, now: UnixMillis, day_ms: u64) -> bool {
        if let Some(d) = self.expiration_days
            && now >= modified.saturating_add(d as u64 * day_ms)
        {
            return true;
        }
        self.expiration_date.is_some_and(|date| now >= date)
    }

    /// Whether a noncurrent version, which became noncurrent at `since` and has `newer`
    /// noncurrent versions above it, has expired.
    pub fn noncurrent_expired(&self, since: UnixMillis, newer: u32, now: UnixMillis, day_ms: u64) -> bool {
        match self.noncurrent_days {
            Some(d) => {
                now >= since.saturating_add(d as u64 * day_ms)
                    && self.newer_noncurrent_versions.is_none_or(|keep| newer >= keep)
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> LifecycleRule {
        LifecycleRule {
            enabled: true,
            prefix: "tmp/".into(),
            expiration_days: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn filters_and_ages() {
        let r = rule();
        assert!(r.matches("tmp/a", 1, &[]));
        assert!(!r.matches("keep/a", 1, &[]));
        let tagged = LifecycleRule {
            tags: vec![("k".into(), "v".into())],
            size_greater_than: Some(10),
            ..rule()
        };
        assert!(tagged.matches("tmp/a", 11, &[("k".into(), "v".into()), ("x".into(), "y".into())]));
        assert!(!tagged.matches("tmp/a", 10, &[("k".into(), "v".into())]));
        assert!(!tagged.matches("tmp/a", 11, &[]));
        assert!(
            !LifecycleRule {
                enabled: false,
                ..rule()
            }
            .matches("tmp/a", 1, &[])
        );
        assert!(!r.current_expired(1000, 1000 + 2 * 86_400_000 - 1, 86_400_000));
        assert!(r.current_expired(1000, 1000 + 2 * 86_400_000, 86_400_000));
        let nc = LifecycleRule {
            noncurrent_days: Some(1),
            newer_noncurrent_versions: Some(2),
            ..rule()
        };
        assert!(
            !nc.noncurrent_expired(0, 1, 10, 1),
            "the two newest noncurrent versions are kept"
        );
        assert!(nc.noncurrent_expired(0, 2, 10, 1));
        assert!(!nc.noncurrent_expired(0, 5, 0, 1));
    }

    #[test]
    fn validation() {
        assert!(validate(&[rule()]).is_ok());
        assert!(validate(&[]).is_err());
        assert!(
            validate(&[LifecycleRule {
                expiration_days: None,
                ..rule()
            }])
            .is_err()
        );
        assert!(
            validate(&[LifecycleRule {
                expiration_days: Some(0),
                ..rule()
            }])
            .is_err()
        );
        let id = LifecycleRule {
            id: Some("a".into()),
            ..rule()
        };
        assert!(validate(&[id.clone(), id]).is_err());
    }
}
