//! docs/s3-compatibility.md must match the operations the S3 layer implements.

use std::collections::BTreeSet;

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn compatibility_table_matches_the_implementation() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let front = std::fs::read_to_string(root.join("crates/s3/src/front/mod.rs")).unwrap();
    let body = &front[front.find("impl S3 for Front {").expect("the S3 impl")..];
    let mut implemented: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("    async fn "))
        .filter_map(|l| l.split('(').next())
        .map(pascal)
        .collect();
    assert!(
        implemented.contains("ListObjectsV2") && implemented.len() > 30,
        "{implemented:?}"
    );

    // s3s serves PostObject (browser form uploads) through the PutObject implementation after
    // checking the form's policy and signature; tests/post_object.rs exercises it.
    if implemented.contains("PutObject") {
        implemented.insert("PostObject".to_string());
    }

    let doc = std::fs::read_to_string(root.join("docs/s3-compatibility.md")).unwrap();
    let mut documented = BTreeSet::new();
    let mut unsupported = BTreeSet::new();
    for line in doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Operation") && !l.starts_with("| ---"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (ops, status) = (cells[1], cells[2]);
        for op in ops.split(',').map(str::trim) {
            match status {
                "supported" | "partly" => {
                    documented.insert(op.to_string());
                }
                "not supported" => {
                    unsupported.insert(op.to_string());
                }
                other => panic!("unknown status {other:?} for {op}"),
            }
        }
    }
    let missing: Vec<_> = implemented.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "implemented but not documented as supported: {missing:?}"
    );
    let claimed: Vec<_> = documented.difference(&implemented).collect();
    assert!(
        claimed.is_empty(),
        "documented as supported but not implemented: {claimed:?}"
    );
    let wrong: Vec<_> = unsupported.intersection(&implemented).collect();
    assert!(
        wrong.is_empty(),
        "implemented but documented as not supported: {wrong:?}"
    );
}
