//! The admin API and the operator CLI.

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;

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

    let (st, _, m) = admin_get(&format!("{}/metrics", srv.admin)).await;
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
    let (st, _, _) = admin_get(&format!("{}/metrics", srv.admin)).await;
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

/// Every admin route: the token is checked before any body is read, bodies are limited, and
/// every error is one JSON shape.
#[tokio::test]
async fn admin_auth_limits_and_errors_are_uniform() {
    use std::io::{Read, Write};
    let srv = Server::start();
    let addr = srv.admin.trim_start_matches("http://").to_string();
    // A request that announces 100 MB and sends none of it is refused at once: the body was
    // never waited for.
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    write!(
        sock,
        "POST /keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("admin token"), "{head}");

    let bearer = format!("Bearer {SK}");
    let auth = [("authorization", bearer.as_str())];
    // Too large a body, with the token: 413, as JSON.
    let big = vec![b' '; 70 * 1024];
    let (st, _, body) = raw("POST", &format!("{}/keys", srv.admin), &auth, big).await;
    assert_eq!(st, 413, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("larger than"), "{body}");
    // Not JSON: 400 naming the problem.
    let (st, _, body) = raw("POST", &format!("{}/keys", srv.admin), &auth, b"{nope".to_vec()).await;
    assert_eq!(st, 400, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
    // Unknown route and wrong method: 404 and 405, as JSON.
    let (st, _, body) = raw("GET", &format!("{}/nothing/here", srv.admin), &[], vec![]).await;
    assert_eq!(st, 404);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(),
        "{body}"
    );
    let (st, _, body) = raw("DELETE", &format!("{}/health", srv.admin), &[], vec![]).await;
    assert_eq!(st, 405);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(),
        "{body}"
    );
    // A wrong token gets the same 401 on every protected family.
    for path in ["/keys", "/workers", "/buckets/x", "/cluster/replication"] {
        let (st, _, body) = raw(
            "PUT",
            &format!("{}{path}", srv.admin),
            &[("authorization", "Bearer wrong")],
            vec![],
        )
        .await;
        assert_eq!(st, 401, "{path}: {body}");
    }
}
