#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The admin API and the operator CLI.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;

#[tokio::test]
async fn health_and_metrics() {
    let srv = Server::start_with(&["--node-id", "node-7"], &[]);
    let c = srv.client();
    c.create_bucket().bucket("met").send().await.unwrap();
    c.put_object()
        .bucket("met")
        .key("a")
        .body(ByteStream::from_static(b"12345"))
        .send()
        .await
        .unwrap();
    let _ = c.get_object().bucket("met").key("missing").send().await;

    let (st, _, body) = raw("GET", &format!("{}/health", srv.admin), &[], vec![]).await;
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["node_id"], "node-7");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["uptime_seconds"].is_u64());
    assert_eq!(v["storage"]["objects"], 1);
    assert_eq!(v["storage"]["used_bytes"], 5);
    assert!(v["storage"]["disk_free_bytes"].as_u64().unwrap() > 0);

    let (st, _, m) = raw("GET", &format!("{}/metrics", srv.admin), &[], vec![]).await;
    assert_eq!(st, 200);
    assert!(
        m.contains("ironbucket_s3_requests_total{operation=\"PutObject\",status=\"200\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("ironbucket_s3_requests_total{operation=\"GetObject\",status=\"404\"} 1"),
        "{m}"
    );
    assert!(m.contains("ironbucket_s3_request_duration_seconds_bucket"), "{m}");
    assert!(m.contains("ironbucket_objects 1"), "{m}");
    assert!(m.contains("ironbucket_s3_received_bytes_total"), "{m}");

    let (st, _, _) = raw("GET", &format!("{}/nothing", srv.admin), &[], vec![]).await;
    assert_eq!(st, 404);

    let out = std::process::Command::new(cli_bin())
        .args(["--admin-url", &srv.admin, "health"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("node-7") && text.contains("status:   ok"), "{text}");
    let out = std::process::Command::new(cli_bin())
        .args(["--admin-url", "http://127.0.0.1:1", "--timeout", "2", "health"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[tokio::test]
async fn metrics_can_be_disabled() {
    let srv = Server::start_with(&["--metrics-enabled", "false"], &[]);
    let (st, _, _) = raw("GET", &format!("{}/metrics", srv.admin), &[], vec![]).await;
    assert_eq!(st, 404);
}

/// The CLI binary sits next to the server binary in the target directory.
fn cli_bin() -> std::path::PathBuf {
    let p = std::path::Path::new(bin()).with_file_name("ironbucket-cli");
    if !p.exists() {
        let st = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "ironbucket-cli"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    p
}

#[test]
fn help_documents_every_flag() {
    let out = std::process::Command::new(bin())
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--data-dir",
        "--bind",
        "--port",
        "--admin-port",
        "--node-id",
        "--region",
        "--domain",
        "--access-key",
        "--secret-key",
        "--fsync",
        "--inline-max",
        "--enable-encryption",
        "--encryption-key",
        "--encryption-old-keys",
        "--metrics-enabled",
        "--multipart-max-age",
        "--worker-interval",
        "--lifecycle-interval",
        "--lifecycle-day-secs",
        "--shutdown-timeout",
        "--admin-token",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for env in [
        "STORAGE_PATH",
        "NODE_API_PORT",
        "NODE_ADMIN_PORT",
        "ENABLE_ENCRYPTION",
        "ENCRYPTION_KEY",
        "METRICS_ENABLED",
    ] {
        assert!(help.contains(env), "{env} missing from --help");
    }
}
