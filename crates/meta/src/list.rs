//! Listing as an index scan: a range read from the first candidate key, skipping whole common
//! prefixes by seeking past them, so a page costs the same whatever the bucket size.

use crate::Result;
use crate::records::{self, ObjectRecord, UploadRecord};
use redb::ReadableTable;
use std::ops::Bound;

/// A ListObjects request in store terms. `marker` is exclusive (v1 marker, v2 start-after or
/// continuation token).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub marker: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<(String, ObjectRecord)>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned: where the next page starts (exclusive).
    pub next_marker: Option<String>,
}

/// The smallest byte string greater than every string that starts with `p`, or `None` if
/// there is none (all 0xFF).
pub(crate) fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

/// Where a scan resumes.
enum From {
    Incl(Vec<u8>),
    Excl(Vec<u8>),
}

pub(crate) fn list_objects(
    t: &impl ReadableTable<(&'static str, &'static [u8]), &'static [u8]>,
    bucket: &str,
    q: &ListQuery,
) -> Result<ListPage> {
    let mut page = ListPage::default();
    if q.max_keys == 0 {
        return Ok(page);
    }
    let prefix = q.prefix.as_bytes();
    let marker = q.marker.as_deref().map(str::as_bytes);
    let delim = q.delimiter.as_deref().filter(|d| !d.is_empty()).map(str::as_bytes);
    let mut from = match marker {
        Some(m) if m >= prefix => From::Excl(m.to_vec()),
        _ => From::Incl(prefix.to_vec()),
    };
    let mut count = 0usize;
    'scan: loop {
        let lower = match &from {
            From::Incl(k) => Bound::Included((bucket, k.as_slice())),
            From::Excl(k) => Bound::Excluded((bucket, k.as_slice())),
        };
        let iter = t.range::<(&str, &[u8])>((lower, Bound::Unbounded))?;
        for item in iter {
            let (k, v) = item?;
            let (b, key) = k.value();
            if b != bucket || !key.starts_with(prefix) {
                break 'scan;
            }
            if let Some(d) = delim
                && let Some(pos) = find(&key[prefix.len()..], d)
            {
                let cp = &key[..prefix.len() + pos + d.len()];
                let already = marker.is_some_and(|m| cp <= m);
                if !already {
                    if count == q.max_keys {
                        page.truncated = true;
                        break 'scan;
                    }
                    let cp_s = utf8(cp)?;
                    page.next_marker = Some(cp_s.clone());
                    page.common_prefixes.push(cp_s);
                    count += 1;
                }
                match prefix_successor(cp) {
                    Some(next) => {
                        from = From::Incl(next);
                        continue 'scan;
                    }
                    None => break 'scan,
                }
            }
            if count == q.max_keys {
                page.truncated = true;
                break 'scan;
            }
            let key_s = utf8(key)?;
            let rec: ObjectRecord = records::decode(v.value())?;
            page.next_marker = Some(key_s.clone());
            page.objects.push((key_s, rec));
            count += 1;
        }
        break;
    }
    Ok(page)
}

fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| crate::Error::Corrupt("object key is not UTF-8".into()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A ListMultipartUploads request in store terms.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UploadListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub upload_id_marker: Option<String>,
    pub max_uploads: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UploadListPage {
    pub uploads: Vec<UploadRecord>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

pub(crate) fn list_uploads(
    t: &impl ReadableTable<(&'static str, &'static [u8], &'static str), &'static [u8]>,
    bucket: &str,
    q: &UploadListQuery,
) -> Result<UploadListPage> {
    let mut page = UploadListPage::default();
    let prefix = q.prefix.as_bytes();
    let delim = q.delimiter.as_deref().filter(|d| !d.is_empty()).map(str::as_bytes);
    let start_key: Vec<u8> = match &q.key_marker {
        Some(m) if m.as_bytes() >= prefix => m.as_bytes().to_vec(),
        _ => prefix.to_vec(),
    };
    let empty = "";
    let lower = (bucket, start_key.as_slice(), empty);
    let mut count = 0usize;
    let mut last_cp: Option<Vec<u8>> = None;
    for item in t.range::<(&str, &[u8], &str)>((Bound::Included(lower), Bound::Unbounded))? {
        let (k, v) = item?;
        let (b, key, upload_id) = k.value();
        if b != bucket || !key.starts_with(prefix) {
            break;
        }
        if let Some(m) = &q.key_marker {
            // Upload-id marker applies only within the marker key; without it the marker key
            // itself is skipped entirely.
            let after = match &q.upload_id_marker {
                Some(um) if key == m.as_bytes() => upload_id > um.as_str(),
                _ => key > m.as_bytes(),
            };
            if !after {
                continue;
            }
        }
        if let Some(d) = delim
            && let Some(pos) = find(&key[prefix.len()..], d)
        {
            let cp = key[..prefix.len() + pos + d.len()].to_vec();
            if last_cp.as_ref() == Some(&cp) {
                continue;
            }
            if count == q.max_uploads {
                page.truncated = true;
                break;
            }
            page.next_key_marker = Some(utf8(&cp)?);
            page.next_upload_id_marker = None;
            page.common_prefixes.push(utf8(&cp)?);
            last_cp = Some(cp);
            count += 1;
            continue;
        }
        if count == q.max_uploads {
            page.truncated = true;
            break;
        }
        let rec: UploadRecord = records::decode(v.value())?;
        page.next_key_marker = Some(rec.key.clone());
        page.next_upload_id_marker = Some(rec.upload_id.clone());
        page.uploads.push(rec);
        count += 1;
    }
    Ok(page)
}

/// A ListObjectVersions request in store terms.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct VersionListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub version_id_marker: Option<String>,
    pub max_keys: usize,
    /// A cluster member asked for a page may not hold the marker's version: start where it
    /// would sort (a stamped version id is its own sort key; after the key for `null`) instead
    /// of refusing.
    #[serde(default)]
    pub lenient_marker: bool,
}

#[derive(Debug, Clone, Default)]
pub struct VersionListPage {
    /// Versions and delete markers in S3 order (key ascending, newest first), with `is_latest`.
    pub versions: Vec<(String, ObjectRecord, bool)>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

pub(crate) fn list_versions(
    t: &impl ReadableTable<(&'static str, &'static [u8], &'static str), &'static [u8]>,
    bucket: &str,
    q: &VersionListQuery,
) -> Result<VersionListPage> {
    let mut page = VersionListPage::default();
    if q.max_keys == 0 {
        return Ok(page);
    }
    let prefix = q.prefix.as_bytes();
    let delim = q.delimiter.as_deref().filter(|d| !d.is_empty()).map(str::as_bytes);
    // Where to start: after the whole marker key, or after one of its versions.
    let (mut from_key, mut from_sk, mut inclusive): (Vec<u8>, String, bool) =
        match (&q.key_marker, &q.version_id_marker) {
            (Some(k), Some(v)) if k.as_bytes() >= prefix => match crate::tx::find_version(t, bucket, k, v)? {
                Some((sk, _)) => (k.as_bytes().to_vec(), sk, false),
                None if q.lenient_marker && v != "null" => (k.as_bytes().to_vec(), v.clone(), false),
                None if q.lenient_marker => match prefix_successor_exact(k.as_bytes()) {
                    Some(next) => (next, String::new(), true),
                    None => return Ok(page),
                },
                None => return Err(crate::Error::Corrupt(format!("no version {v} of {k}"))),
            },
            (Some(k), None) if k.as_bytes() >= prefix => match prefix_successor_exact(k.as_bytes()) {
                Some(next) => (next, String::new(), true),
                None => return Ok(page),
            },
            _ => (prefix.to_vec(), String::new(), true),
        };
    let mut count = 0usize;
    let mut last_key: Option<Vec<u8>> = None;
    'scan: loop {
        let lower = if inclusive {
            Bound::Included((bucket, from_key.as_slice(), from_sk.as_str()))
        } else {
            Bound::Excluded((bucket, from_key.as_slice(), from_sk.as_str()))
        };
        for item in t.range::<(&str, &[u8], &str)>((lower, Bound::Unbounded))? {
            let (k, v) = item?;
            let (b, key, sk) = k.value();
            if b != bucket || !key.starts_with(prefix) {
                break 'scan;
            }
            if let Some(d) = delim
                && let Some(pos) = find(&key[prefix.len()..], d)
            {
                let cp = key[..prefix.len() + pos + d.len()].to_vec();
                let already = q.key_marker.as_deref().is_some_and(|m| cp.as_slice() <= m.as_bytes());
                if !already {
                    if count == q.max_keys {
                        page.truncated = true;
                        break 'scan;
                    }
                    let s = utf8(&cp)?;
                    page.next_key_marker = Some(s.clone());
                    page.next_version_id_marker = None;
                    page.common_prefixes.push(s);
                    count += 1;
                }
                match prefix_successor(&cp) {
                    Some(next) => {
                        (from_key, from_sk, inclusive) = (next, String::new(), true);
                        continue 'scan;
                    }
                    None => break 'scan,
                }
            }
            if count == q.max_keys {
                page.truncated = true;
                break 'scan;
            }
            let rec: ObjectRecord = records::decode(v.value())?;
            // The first version met of a key is the newest only if the scan did not resume
            // in the middle of that key.
            let first_of_key = last_key.as_deref() != Some(key);
            let resumed_inside = !inclusive && from_key.as_slice() == key && last_key.is_none();
            let is_latest = first_of_key && !resumed_inside;
            last_key = Some(key.to_vec());
            let key_s = utf8(key)?;
            page.next_key_marker = Some(key_s.clone());
            page.next_version_id_marker = Some(rec.version_id.clone());
            let _ = sk;
            page.versions.push((key_s, rec, is_latest));
            count += 1;
        }
        break;
    }
    Ok(page)
}

/// The smallest key greater than `k` and every `(k, version)` entry: `k` followed by a 0 byte.
fn prefix_successor_exact(k: &[u8]) -> Option<Vec<u8>> {
    let mut v = k.to_vec();
    v.push(0);
    Some(v)
}
