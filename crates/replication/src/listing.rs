//! Cluster-wide listing, the pure part: every node answers with its own entries after a bound
//! (its newest version of each key, tombstones included, sorted, up to a limit), and the
//! coordinator merges the answers into one S3 page: per key the newest version wins, deleted keys
//! disappear, keys collapse into common prefixes under a delimiter, and where a node stopped
//! early the coordinator asks every node again after that point before deciding, so that pages
//! are exact (the same items and `truncated` as one node holding everything) whichever node
//! coordinates.

use crate::quorum::Stamp;

/// A node's newest version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<M> {
    pub key: String,
    pub stamp: Stamp,
    /// Deleted (a tombstone, or a delete marker as the newest version).
    pub tombstone: bool,
    pub meta: M,
}

/// One node's answer: its entries after the bound, sorted by key, one per key; `truncated` when
/// it stopped at its limit with more to come. A truncated answer must hold at least one entry
/// (the node's limit counts the entries it returns, tombstones included): an empty truncated
/// answer would say nothing about where that node stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePage<M> {
    pub entries: Vec<Entry<M>>,
    pub truncated: bool,
}

/// One item of an S3 listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<M> {
    Object { key: String, meta: M },
    CommonPrefix(String),
}

/// The merged page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<M> {
    pub items: Vec<Item<M>>,
    /// True exactly when another item follows.
    pub truncated: bool,
    /// The last key or common prefix returned, when truncated.
    pub next_marker: Option<String>,
}

/// What the coordinator does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<M> {
    Done(Page<M>),
    /// Some node stopped early: ask every node again for keys after `after` (a plain key bound)
    /// and feed the answers to the same merger.
    More {
        after: String,
    },
}

/// The common prefix `key` rolls up into, if any.
pub fn common_prefix<'a>(key: &'a str, prefix: &str, delimiter: Option<&str>) -> Option<&'a str> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    rest.find(d).map(|i| &key[..prefix.len() + i + d.len()])
}

/// Builds one S3 page from rounds of node answers. (Keys under a common prefix already returned
/// are still sent by the nodes and dropped here; letting nodes skip past such a prefix is an
/// optimization for directories with very many keys, not done yet.) The same rules as a single node's listing:
/// keys and common prefixes after the client's marker (a common prefix not above the marker was
/// returned before), at most `max_keys` items, `truncated` only when another item exists.
#[derive(Debug, Clone)]
pub struct Merger<M> {
    prefix: String,
    delimiter: Option<String>,
    marker: Option<String>,
    max_keys: usize,
    items: Vec<Item<M>>,
    last_prefix: Option<String>,
}

impl<M: Clone> Merger<M> {
    pub fn new(prefix: &str, delimiter: Option<&str>, marker: Option<&str>, max_keys: usize) -> Self {
        Self {
            prefix: prefix.to_string(),
            delimiter: delimiter.filter(|d| !d.is_empty()).map(str::to_string),
            marker: marker.map(str::to_string),
            max_keys,
            items: Vec::new(),
            last_prefix: None,
        }
    }

    /// The first round's bound: nodes answer with keys after this (and under the prefix).
    pub fn start_after(&self) -> Option<String> {
        self.marker.clone()
    }

    fn done(&mut self, truncated: bool) -> Step<M> {
        let items = std::mem::take(&mut self.items);
        let next_marker = truncated
            .then(|| {
                items.last().map(|i| match i {
                    Item::Object { key, .. } => key.clone(),
                    Item::CommonPrefix(p) => p.clone(),
                })
            })
            .flatten();
        Step::Done(Page {
            items,
            truncated,
            next_marker,
        })
    }

    /// Merges one round of node answers (each for keys after the same bound).
    pub fn feed(&mut self, pages: &[NodePage<M>]) -> Step<M> {
        if self.max_keys == 0 {
            return self.done(false);
        }
        // Beyond the last key of a truncated answer that node may hold keys not seen yet.
        let horizon: Option<String> = pages
            .iter()
            .filter(|p| p.truncated)
            .filter_map(|p| p.entries.last().map(|e| e.key.clone()))
            .min();
        let mut newest: std::collections::BTreeMap<&str, &Entry<M>> = std::collections::BTreeMap::new();
        for e in pages.iter().flat_map(|p| &p.entries) {
            if horizon.as_deref().is_some_and(|h| e.key.as_str() > h) {
                continue;
            }
            match newest.get(e.key.as_str()) {
                Some(old) if old.stamp >= e.stamp => {}
                _ => {
                    newest.insert(e.key.as_str(), e);
                }
            }
        }
        for (key, e) in newest {
            if e.tombstone {
                continue;
            }
            match common_prefix(key, &self.prefix, self.delimiter.as_deref()) {
                Some(cp) => {
                    let returned =
                        self.last_prefix.as_deref() == Some(cp) || self.marker.as_deref().is_some_and(|m| cp <= m);
                    if returned {
                        continue;
                    }
                    if self.items.len() == self.max_keys {
                        return self.done(true);
                    }
                    self.items.push(Item::CommonPrefix(cp.to_string()));
                    self.last_prefix = Some(cp.to_string());
                }
                None => {
                    if self.items.len() == self.max_keys {
                        return self.done(true);
                    }
                    self.items.push(Item::Object {
                        key: key.to_string(),
                        meta: e.meta.clone(),
                    });
                }
            }
        }
        match horizon {
            Some(after) => Step::More { after },
            None => self.done(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironbucket_types::Hlc;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn stamp(t: u64) -> Stamp {
        Stamp {
            hlc: Hlc {
                physical: t,
                logical: 0,
            },
            node: 0,
        }
    }

    fn e(key: &str, t: u64, tombstone: bool) -> Entry<u64> {
        Entry {
            key: key.into(),
            stamp: stamp(t),
            tombstone,
            meta: t,
        }
    }

    /// Runs the merger against node maps, each node answering at most `limit` entries.
    fn list(
        nodes: &[BTreeMap<String, Entry<u64>>],
        prefix: &str,
        delimiter: Option<&str>,
        marker: Option<&str>,
        max_keys: usize,
        limit: usize,
    ) -> (Page<u64>, usize) {
        let mut m = Merger::new(prefix, delimiter, marker, max_keys);
        let mut after = m.start_after();
        for round in 1..10_000 {
            let pages: Vec<NodePage<u64>> = nodes
                .iter()
                .map(|n| {
                    let mut entries: Vec<Entry<u64>> = n
                        .values()
                        .filter(|e| e.key.starts_with(prefix) && after.as_ref().is_none_or(|a| e.key > *a))
                        .cloned()
                        .collect();
                    let truncated = entries.len() > limit;
                    entries.truncate(limit);
                    NodePage { entries, truncated }
                })
                .collect();
            match m.feed(&pages) {
                Step::Done(p) => return (p, round),
                Step::More { after: a } => {
                    assert!(after.as_ref().is_none_or(|b| a > *b), "no progress past {after:?}");
                    after = Some(a);
                }
            }
        }
        panic!("the merger never finished");
    }

    fn node(entries: &[Entry<u64>]) -> BTreeMap<String, Entry<u64>> {
        entries.iter().map(|e| (e.key.clone(), e.clone())).collect()
    }

    fn names(p: &Page<u64>) -> Vec<&str> {
        p.items
            .iter()
            .map(|i| match i {
                Item::Object { key, .. } => key.as_str(),
                Item::CommonPrefix(p) => p.as_str(),
            })
            .collect()
    }

    #[test]
    fn newest_wins_and_tombstones_hide() {
        let a = node(&[e("a", 1, false), e("b", 5, false), e("c", 2, false)]);
        let b = node(&[e("a", 3, false), e("b", 6, true)]);
        let (p, _) = list(&[a, b], "", None, None, 10, 100);
        assert_eq!(
            p.items,
            vec![
                Item::Object {
                    key: "a".into(),
                    meta: 3
                },
                Item::Object {
                    key: "c".into(),
                    meta: 2
                }
            ]
        );
        assert!(!p.truncated);
    }

    #[test]
    fn a_node_that_stops_early_is_asked_again() {
        // Node b stops after one key each time: "d" must still come before "e".
        let a = node(&[e("a", 1, false), e("e", 1, false)]);
        let b = node(&[e("b", 1, false), e("c", 1, true), e("d", 1, false)]);
        let (p, rounds) = list(&[a, b], "", None, None, 10, 1);
        assert_eq!(names(&p), ["a", "b", "d", "e"]);
        assert!(rounds > 1 && !p.truncated);
        let (p, _) = list(
            &[node(&[e("a", 1, false)]), node(&[e("b", 1, false)])],
            "",
            None,
            None,
            1,
            1,
        );
        assert_eq!(
            (names(&p), p.truncated, p.next_marker.as_deref()),
            (vec!["a"], true, Some("a"))
        );
    }

    #[test]
    fn prefixes_roll_up_once_and_the_marker_skips_them() {
        assert_eq!(
            common_prefix("photos/2026/a.jpg", "photos/", Some("/")),
            Some("photos/2026/")
        );
        assert_eq!(common_prefix("photos/a.jpg", "photos/", Some("/")), None);
        assert_eq!(common_prefix("a/b", "", None), None);
        let n = node(&[e("a/1", 1, false), e("a/2", 1, false), e("b", 1, false)]);
        let (p, _) = list(std::slice::from_ref(&n), "", Some("/"), None, 1, 1);
        assert_eq!((names(&p), p.next_marker.as_deref()), (vec!["a/"], Some("a/")));
        let (p, _) = list(&[n], "", Some("/"), Some("a/"), 10, 1);
        assert_eq!(names(&p), ["b"]);
    }

    /// The oracle: the union of every node's entries, newest per key, live keys only, rolled up,
    /// after the marker.
    fn oracle(
        nodes: &[BTreeMap<String, Entry<u64>>],
        prefix: &str,
        delimiter: Option<&str>,
        marker: Option<&str>,
    ) -> Vec<Item<u64>> {
        let mut newest: BTreeMap<String, Entry<u64>> = BTreeMap::new();
        for n in nodes {
            for (k, v) in n {
                if newest.get(k).is_none_or(|o| o.stamp < v.stamp) {
                    newest.insert(k.clone(), v.clone());
                }
            }
        }
        let mut out: Vec<Item<u64>> = Vec::new();
        for (k, v) in newest {
            if v.tombstone || !k.starts_with(prefix) || marker.is_some_and(|m| k.as_str() <= m) {
                continue;
            }
            match common_prefix(&k, prefix, delimiter) {
                Some(p) => {
                    if out.last() != Some(&Item::CommonPrefix(p.to_string())) && marker.is_none_or(|m| p > m) {
                        out.push(Item::CommonPrefix(p.to_string()));
                    }
                }
                None => out.push(Item::Object { key: k, meta: v.meta }),
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Paging through, whatever each node's answer limit and the client's max-keys, yields
        /// exactly the oracle's listing: nothing missing, nothing twice, and `truncated` only
        /// when more follows.
        #[test]
        fn pagination_is_exact(
            data in proptest::collection::vec(
                proptest::collection::btree_map("[ab]{0,2}/?[ab/]{0,3}", (0u64..20, any::<bool>()), 0..12),
                1..4,
            ),
            limit in 1usize..5,
            max_keys in 1usize..5,
            delimiter in prop_oneof![Just(None), Just(Some("/"))],
            prefix in prop_oneof![Just(""), Just("a"), Just("a/")],
        ) {
            let nodes: Vec<BTreeMap<String, Entry<u64>>> = data
                .into_iter()
                .map(|m| m.into_iter().map(|(k, (t, dead))| (k.clone(), e(&k, t, dead))).collect())
                .collect();
            let want = oracle(&nodes, prefix, delimiter, None);
            let mut got: Vec<Item<u64>> = Vec::new();
            let mut marker: Option<String> = None;
            for _ in 0..1000 {
                let (page, _) = list(&nodes, prefix, delimiter, marker.as_deref(), max_keys, limit);
                prop_assert!(page.items.len() <= max_keys);
                // Every page equals the oracle's listing after the same marker, cut to max-keys.
                let expect = oracle(&nodes, prefix, delimiter, marker.as_deref());
                prop_assert_eq!(page.truncated, expect.len() > max_keys);
                prop_assert_eq!(&page.items[..], &expect[..expect.len().min(max_keys)]);
                got.extend(page.items);
                if !page.truncated {
                    break;
                }
                marker = page.next_marker;
            }
            prop_assert_eq!(got, want);
        }
    }
}
