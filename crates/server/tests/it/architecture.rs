//! Keeps the layering of design.md honest: dependencies between IronBucket crates only point
//! down, and the heavy libraries stay inside the one crate allowed to use each.

use std::collections::HashMap;

fn rank(name: &str) -> Option<u32> {
    Some(match name {
        "ironbucket-types" => 0,
        "ironbucket-runtime" => 1,
        "ironbucket-api" => 2,
        "ironbucket-storage" | "ironbucket-meta" | "ironbucket-rpc" => 2,
        "ironbucket-store" => 3,
        "ironbucket-consensus" => 4,
        "ironbucket-cluster" => 5,
        "ironbucket-replication" => 6,
        "ironbucket-s3" | "ironbucket-admin" | "ironbucket-testkit" => 7,
        "ironbucket-server" | "ironbucket-cli" | "ironbucket-bench" | "ironbucket-chaos" => 8,
        _ => return None,
    })
}

#[test]
fn dependencies_point_down_and_libraries_stay_contained() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let only_in: HashMap<&str, &[&str]> = HashMap::from([
        ("s3s", &["ironbucket-s3"][..]),
        ("redb", &["ironbucket-meta"][..]),
        ("openraft", &["ironbucket-consensus"][..]),
        ("foca", &["ironbucket-cluster"][..]),
        ("tonic", &["ironbucket-rpc"][..]),
        ("prost", &["ironbucket-rpc"][..]),
        ("tonic-build", &["ironbucket-rpc"][..]),
        ("protox", &["ironbucket-rpc"][..]),
        // Fault injection points: armed only by the server binary.
        (
            "fail",
            &[
                "ironbucket-meta",
                "ironbucket-storage",
                "ironbucket-replication",
                "ironbucket-server",
            ][..],
        ),
        (
            "anyhow",
            &[
                "ironbucket-server",
                "ironbucket-cli",
                "ironbucket-bench",
                "ironbucket-chaos",
            ][..],
        ),
        (
            "clap",
            &[
                "ironbucket-server",
                "ironbucket-cli",
                "ironbucket-bench",
                "ironbucket-chaos",
            ][..],
        ),
        (
            "tracing-subscriber",
            &["ironbucket-server", "ironbucket-cli", "ironbucket-bench"][..],
        ),
    ]);
    let mut checked = 0;
    for pkg in meta["packages"].as_array().unwrap() {
        let name = pkg["name"].as_str().unwrap();
        let Some(my_rank) = rank(name) else {
            assert!(!name.starts_with("ironbucket"), "{name} has no layer: add it to rank()");
            continue;
        };
        checked += 1;
        for dep in pkg["dependencies"].as_array().unwrap() {
            if dep["kind"].as_str() == Some("dev") {
                continue;
            }
            let d = dep["name"].as_str().unwrap();
            if let Some(r) = rank(d) {
                assert!(r < my_rank, "{name} depends on {d}: arrows must point down");
            }
            if let Some(allowed) = only_in.get(d) {
                assert!(
                    allowed.contains(&name),
                    "{name} must not depend on {d} (only {allowed:?} may)"
                );
            }
        }
    }
    assert!(checked >= 8, "every IronBucket crate has a layer ({checked} checked)");
}
