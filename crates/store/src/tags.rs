//! S3 tag-set rules.

use crate::{Error, Result, Tag};
use std::collections::HashSet;

/// Checks a tag set: at most `max` tags, keys of 1-128 and values of 0-256 characters,
/// no duplicate keys, no reserved `aws:` prefix.
pub fn validate_tags(tags: &[Tag], max: usize) -> Result<()> {
    if tags.len() > max {
        return Err(Error::InvalidTag(format!("a tag set may hold at most {max} tags")));
    }
    let mut seen = HashSet::new();
    for t in tags {
        let klen = t.key.chars().count();
        if klen == 0 || klen > 128 {
            return Err(Error::InvalidTag(format!(
                "tag key {:?} must be 1 to 128 characters",
                t.key
            )));
        }
        if t.value.chars().count() > 256 {
            return Err(Error::InvalidTag(format!(
                "tag value for {:?} exceeds 256 characters",
                t.key
            )));
        }
        if t.key.starts_with("aws:") {
            return Err(Error::InvalidTag("tag keys starting with aws: are reserved".into()));
        }
        if !seen.insert(t.key.as_str()) {
            return Err(Error::InvalidTag(format!("duplicate tag key {:?}", t.key)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(k: &str, v: &str) -> Tag {
        Tag {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn rules() {
        assert!(validate_tags(&[t("a", "1"), t("b", "")], 10).is_ok());
        assert!(validate_tags(&[t("a", "1"), t("a", "2")], 10).is_err());
        assert!(validate_tags(&[t("", "1")], 10).is_err());
        assert!(validate_tags(&[t(&"k".repeat(129), "1")], 10).is_err());
        assert!(validate_tags(&[t("k", &"v".repeat(257))], 10).is_err());
        assert!(validate_tags(&[t("aws:x", "1")], 10).is_err());
        let many: Vec<Tag> = (0..11).map(|i| t(&i.to_string(), "")).collect();
        assert!(validate_tags(&many, 10).is_err());
    }
}
