//! Secure defaults: admin roles and tokens (401/403 before any body is read), the audit log,
//! connection caps and header deadlines against slowloris, and request rate limits.

use crate::common::cluster::*;
use crate::common::tls::*;
use crate::common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn admin(srv: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (st, _, body) = raw(method, &format!("{}{path}", srv.admin), &headers, vec![]).await;
    (st, body)
}

fn new_token(srv: &Server, name: &str, role: &str) -> String {
    let (rc, v, err) = cli(srv, &["token", "create", "--name", name, "--role", role]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(v["role"], role, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// Audit lines of `srv` (its data directory's audit.log) that satisfy `f`, waiting for them.
async fn audit_lines(srv: &Server, f: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(srv.dir.join("audit.log")).unwrap_or_default();
        let found: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v| f(v))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Security review findings (medium): `/cluster/*` needed no token, and the admin API read the
/// whole body before checking the token. Every route but liveness and readiness now needs a
/// token whose role allows it, and a refusal comes before the body.
#[tokio::test]
async fn admin_routes_need_a_token_with_the_right_role() {
    let srv = Server::start();
    for open in ["/health", "/health/ready"] {
        assert_eq!(admin(&srv, "GET", open, None).await.0, 200, "{open}");
    }
    for closed in [
        "/metrics",
        "/cluster/status",
        "/cluster/nodes",
        "/cluster/locate/b/k",
        "/workers",
        "/keys",
    ] {
        assert_eq!(admin(&srv, "GET", closed, None).await.0, 401, "{closed}");
        assert_eq!(admin(&srv, "GET", closed, Some("wrong")).await.0, 401, "{closed}");
    }

    let viewer = new_token(&srv, "dashboards", "viewer");
    let operator = new_token(&srv, "oncall", "operator");
    assert!(viewer.starts_with("ibt_") && viewer != operator);
    assert_eq!(admin(&srv, "GET", "/workers", Some(&viewer)).await.0, 200);
    assert_eq!(admin(&srv, "GET", "/metrics", Some(&viewer)).await.0, 200);
    // A viewer may not drain; an operator may not manage keys or tokens.
    let (st, body) = admin(&srv, "POST", "/cluster/nodes/node-1/drain", Some(&viewer)).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("viewer") && body.contains("operator"), "{body}");
    assert_eq!(admin(&srv, "POST", "/keys", Some(&operator)).await.0, 403);
    assert_eq!(admin(&srv, "GET", "/tokens", Some(&operator)).await.0, 403);
    let (st, _) = admin(&srv, "POST", "/workers/scrubber/wake", Some(&operator)).await;
    assert_ne!(st, 403, "an operator may wake a worker");

    // 403 arrives while a (claimed) 100 MB body has not been sent: nothing was read first.
    let addr = srv.admin.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /keys HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {viewer}\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the refusal waited for the body")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 403"));

    // Tokens are listed without their secret and stored only hashed.
    let (rc, list, _) = cli(&srv, &["token", "list"]);
    assert_eq!(rc, 0);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains(&viewer));
    let stored = std::fs::read_to_string(srv.dir.join("admin-tokens.json")).unwrap();
    assert!(!stored.contains(&viewer) && !stored.contains(&operator));
    // A bad role or name is a clear CLI error.
    let (rc, _, err) = cli(&srv, &["token", "create", "--name", "x", "--role", "root"]);
    assert_ne!(rc, 0);
    assert!(err.contains("viewer, operator or admin"), "{err}");
    let (rc, _, err) = cli(&srv, &["token", "create", "--name", "has space", "--role", "viewer"]);
    assert_ne!(rc, 0);
    assert!(err.contains("token name"), "{err}");

    // Revoked: the token stops working at once.
    let (rc, _, err) = cli(&srv, &["token", "revoke", "dashboards"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(admin(&srv, "GET", "/workers", Some(&viewer)).await.0, 401);

    // The audit log has the refused drain (who, from where) and the token changes.
    let drain = audit_lines(&srv, |v| v["action"] == "POST /cluster/nodes/node-1/drain").await;
    assert_eq!(drain.len(), 1, "{drain:?}");
    let d = &drain[0];
    assert_eq!(
        (d["api"].as_str(), d["result"].as_str()),
        (Some("admin"), Some("denied"))
    );
    assert_eq!(d["principal"], "token:dashboards");
    assert_eq!(d["source"], "127.0.0.1");
    assert_eq!(d["status"], 403);
    let created = audit_lines(&srv, |v| v["action"] == "POST /tokens" && v["result"] == "allowed").await;
    assert_eq!(created.len(), 2, "{created:?}");
    assert!(
        !std::fs::read_to_string(srv.dir.join("audit.log"))
            .unwrap()
            .contains(&viewer)
    );
}

/// The audit log records every S3 request refused for authorization, with who and from where.
#[tokio::test]
async fn refused_s3_requests_are_audited() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("private").send().await.unwrap();
    let (st, _, _) = raw("GET", &format!("{}/private/secret", srv.s3), &[], vec![]).await;
    assert_eq!(st, 403);
    let wrong = client_for(&srv.s3, AK, "not-the-secret");
    assert!(wrong.list_objects_v2().bucket("private").send().await.is_err());
    let anon = audit_lines(&srv, |v| v["api"] == "s3" && v["principal"] == "anonymous").await;
    assert_eq!(anon.len(), 1, "{anon:?}");
    assert_eq!(anon[0]["resource"], "GET /private/secret");
    assert_eq!(anon[0]["result"], "denied");
    assert_eq!(anon[0]["source"], "127.0.0.1");
    assert!(anon[0]["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let forged = audit_lines(&srv, |v| v["api"] == "s3" && v["principal"] == AK).await;
    assert!(!forged.is_empty(), "the bad signature is not in the audit log");
}

/// Security review finding (medium): no header deadline, idle timeout or connection cap, so one
/// client could hold every connection. A client (127.0.0.2) opening 1,000 connections that never
/// finish their headers is capped and timed out while a normal client's requests go through.
#[tokio::test]
async fn slowloris_does_not_starve_other_clients() {
    let srv = Server::start_with(&["--header-timeout", "2", "--max-connections-per-ip", "100"], &[]);
    let c = srv.client();
    c.create_bucket().bucket("busy").send().await.unwrap();
    let target: std::net::SocketAddr = srv.s3_addr.parse().unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..1000 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = sock.connect(target).await.unwrap();
        // Half a request, never finished.
        if s.write_all(b"GET /busy HTTP/1.1\r\nhost: x\r\n").await.is_err() {
            refused += 1;
            continue;
        }
        held.push(s);
    }
    // The normal client is served while the attacker holds its connections.
    let started = Instant::now();
    for i in 0..20 {
        c.put_object()
            .bucket("busy")
            .key(format!("k{i}"))
            .body(b"still served".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // Past the first 100, the attacker's connections were answered 503 and closed (a few were
    // admitted when earlier ones hit the header deadline, and closed in turn): none hangs.
    let (mut over, mut hung) = (0, 0);
    for s in held.iter_mut().skip(100) {
        let mut buf = vec![0u8; 512];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503") => over += 1,
            Ok(_) => {}
            Err(_) => hung += 1,
        }
    }
    assert_eq!(hung, 0, "connections over the cap were kept open");
    assert!(
        over + refused >= 700,
        "only {over} answered 503 and {refused} refused of 900 over the cap"
    );
    // The first 100 are closed once their header deadline passes.
    let mut closed = 0;
    for s in held.iter_mut().take(100) {
        let mut buf = vec![0u8; 512];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(closed, 100, "connections outlived the header deadline");
}

/// Requests over a key's or an address's rate get 503 SlowDown with Retry-After.
#[tokio::test]
async fn rate_limits_answer_slow_down() {
    let srv = Server::start_with(&["--rate-limit-per-key", "5", "--rate-limit-per-ip", "50"], &[]);
    let c = aws_sdk_s3::Client::from_conf(
        config_for(&srv.s3, AK, SK)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build(),
    );
    let mut slowed = 0;
    for _ in 0..30 {
        if let Err(e) = c.list_buckets().send().await {
            assert_eq!(code(&e), "SlowDown");
            assert_eq!(status(&e), 503);
            let raw = e.raw_response().unwrap();
            assert!(raw.headers().get("retry-after").is_some());
            slowed += 1;
        }
    }
    assert!((15..=25).contains(&slowed), "{slowed} of 30 slowed at 5/s (burst 10)");
    // Per address: anonymous requests from 127.0.0.1 beyond 50/s (burst 100).
    let mut slowed = 0;
    for _ in 0..150 {
        let (st, h, body) = raw("GET", &format!("{}/nobucket", srv.s3), &[], vec![]).await;
        if st == 503 {
            assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
            assert!(h.contains_key("retry-after"));
            slowed += 1;
        }
    }
    assert!(slowed >= 20, "only {slowed} of 150 slowed at 50/s");
}

/// In a cluster, tokens are agreed through Raft: one made through node 1 opens node 2, an
/// operator token drains a node (audited), and a viewer token cannot.
#[tokio::test]
async fn cluster_tokens_work_on_every_node() {
    let (nodes, seeds, _) = cluster_with(3, &["--replication-factor", "2"]).await;
    let operator = new_token(&nodes[0], "ops", "operator");
    let viewer = new_token(&nodes[0], "watch", "viewer");
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin(&nodes[1], "GET", "/cluster/status", Some(&viewer)).await.0 != 200 {
        assert!(Instant::now() < deadline, "the token did not reach node 2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        admin(&nodes[1], "POST", "/cluster/nodes/node-2/drain", Some(&viewer))
            .await
            .0,
        403
    );
    let (st, body) = admin(&nodes[1], "POST", "/cluster/nodes/node-2/drain", Some(&operator)).await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = admin(&nodes[1], "POST", "/cluster/nodes/node-2/activate", Some(&operator)).await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = admin(&nodes[1], "DELETE", "/cluster/nodes/node-2", Some(&operator)).await;
    assert_eq!(st, 403, "removing a node is for admins");
    let drained = audit_lines(&nodes[1], |v| {
        v["action"] == "POST /cluster/nodes/node-2/drain" && v["result"] == "allowed"
    })
    .await;
    assert_eq!(drained.len(), 1, "{drained:?}");
    assert_eq!(drained[0]["principal"], "token:ops");
    // Revoked on node 2, refused on node 1.
    let (rc, _, err) = cli(&nodes[1], &["token", "revoke", "ops"]);
    assert_eq!(rc, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin(&nodes[0], "GET", "/cluster/status", Some(&operator)).await.0 != 401 {
        assert!(Instant::now() < deadline, "the revocation did not reach node 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Join tokens are for admins.
    let (st, _) = admin(&nodes[0], "POST", "/cluster/join-tokens", Some(&viewer)).await;
    assert_eq!(st, 403);
    // Node traffic is TLS by default (these nodes were given no certificates: their CA is
    // derived from the cluster secret). A node speaking plaintext is not let in, though it has
    // the secret and a valid join token.
    let token = join_token(&nodes[0]).await;
    let port = free_ports(1)[0];
    let mut args = node_args("plain", port, &seeds, SECRET);
    args.extend(
        [
            "--rpc-address",
            &format!("127.0.0.1:{port}"),
            "--enable-tls",
            "false",
            "--join-token",
            &token,
        ]
        .map(String::from),
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let plain = Server::start_with(&a, &[]);
    let why = not_ready_because(&plain, "not in a cluster yet").await;
    holds_for("the plaintext node stays out", Duration::from_secs(3), || async {
        let s = cluster_status(&nodes[0]).await.unwrap();
        !s["members"].as_array().unwrap().iter().any(|m| m["name"] == "plain")
    })
    .await;
    assert!(!why.contains("cannot join"), "it never reached the leader: {why}");
}

/// Every secret can come from a file (`*_FILE`, as Docker secrets are mounted); a variable and
/// its file together are refused with a message naming both.
#[tokio::test]
async fn secrets_can_come_from_files() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "token-from-a-docker-secret\n").unwrap();
    let key_file = secrets.path().join("encryption-key");
    std::fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let (tf, kf) = (token_file.to_str().unwrap(), key_file.to_str().unwrap());
    let srv = Server::start_with(
        &["--admin-token-file", tf, "--enable-encryption", "true"],
        &[("ENCRYPTION_KEY_FILE", kf)],
    );
    assert_eq!(
        admin(&srv, "GET", "/workers", Some("token-from-a-docker-secret"))
            .await
            .0,
        200
    );
    assert_eq!(
        admin(&srv, "GET", "/workers", Some(SK)).await.0,
        401,
        "the file's token replaces the default"
    );
    let c = srv.client();
    c.create_bucket().bucket("sealed").send().await.unwrap();
    c.put_object()
        .bucket("sealed")
        .key("k")
        .body(b"under a key from a file".to_vec().into())
        .send()
        .await
        .unwrap();
    let got = body_bytes(c.get_object().bucket("sealed").key("k").send().await.unwrap()).await;
    assert_eq!(got, b"under a key from a file");
    // The CLI reads its token from a file too.
    let cli_bin = std::path::Path::new(bin()).with_file_name("ironbucket-cli");
    let out = std::process::Command::new(&cli_bin)
        .args(["--admin-url", &srv.admin, "workers", "--json"])
        .env("IRONBUCKET_ADMIN_TOKEN_FILE", tf)
        .env_remove("IRONBUCKET_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let e = Server::start_in(dir.path(), &["--admin-token", "x", "--admin-token-file", tf], &[])
        .err()
        .expect("a token and a token file together are refused");
    assert!(
        e.contains("IRONBUCKET_ADMIN_TOKEN and IRONBUCKET_ADMIN_TOKEN_FILE"),
        "{e}"
    );
}

/// Security review findings (low): data files were 0644, and the signature appeared in debug
/// logs. Everything the node writes is for its own user only, and a node logging at debug does
/// not print request signatures.
#[tokio::test]
async fn files_are_private_and_debug_logs_hold_no_signature() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(bin())
        .args([
            "server",
            "--api-tls",
            "false",
            "--data-dir",
            data.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .args(["--admin-port", "0", "--access-key", AK, "--secret-key", SK])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut s3 = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(a) = line.strip_prefix("S3 API listening on ") {
            s3 = Some(a.to_string());
        }
        if line.starts_with("Admin API listening") {
            break;
        }
    }
    let s3 = s3.expect("the server printed its S3 address");
    let c = client_for(&s3, AK, SK);
    c.create_bucket().bucket("private").send().await.unwrap();
    c.put_object()
        .bucket("private")
        .key("big")
        .body(vec![7u8; 300_000].into())
        .send()
        .await
        .unwrap();
    // A malformed request: the node logs at debug that the connection ended with an error
    // (proof that debug logging is on).
    let mut bad = tokio::net::TcpStream::connect(s3.trim_start_matches("http://"))
        .await
        .unwrap();
    bad.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut sink)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();

    let mut checked = 0;
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
            checked += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(checked > 3, "only {checked} entries in the data directory");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("connection ended with an error"),
        "the node did not log at debug: {text}"
    );
    assert!(!text.contains("Signature="), "a request signature is in the debug log");
}

/// A node whose stdout nobody reads (the pipe's reader is gone before it starts) serves as
/// usual: printing its listening lines and notes there panicked the process (`println!` on a
/// closed pipe), and so did the audit lines `--audit-stdout` prints.
#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let ports = crate::common::cluster::free_ports(2);
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let mut child = std::process::Command::new(bin())
        .args(["server", "--api-tls", "false", "--audit-stdout", "true", "--data-dir"])
        .arg(dir.path())
        .args(["--bind", "127.0.0.1", "--port", &ports[0].to_string()])
        .args(["--admin-port", &ports[1].to_string()])
        .args(["--access-key", AK, "--secret-key", SK])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let s3 = format!("http://127.0.0.1:{}", ports[0]);
    let admin = format!("127.0.0.1:{}", ports[1]);
    poll_until("the node listens", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move { tokio::net::TcpStream::connect(admin).await.ok().map(|_| ()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the node exited (a closed stdout stopped it)"
    );
    for _ in 0..3 {
        // Refused (anonymous): an audit line goes to stdout.
        let (st, _, _) = raw("PUT", &format!("{s3}/nobody-may"), &[], vec![]).await;
        assert_eq!(st, 403);
    }
    let c = client_for(&s3, AK, SK);
    c.create_bucket().bucket("still-here").send().await.unwrap();
    assert_eq!(bucket_names(&c).await, ["still-here"]);
    assert!(child.try_wait().unwrap().is_none(), "the node exited");
    let _ = child.kill();
    let _ = child.wait();
}

/// `ironbucket-cli ... | head` closes the CLI's stdout early: it ends quietly (status 0, nothing
/// on stderr) instead of panicking on the write (`println!` on a closed pipe did).
#[tokio::test]
async fn the_cli_ends_quietly_when_its_output_is_closed() {
    let srv = Server::start();
    let bin = std::path::Path::new(bin()).with_file_name("ironbucket-cli");
    // Built by the first `cli` call when the workspace build did not make it.
    let (code, _, err) = cli(&srv, &["health"]);
    assert_eq!(code, 0, "{err}");
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let out = std::process::Command::new(bin)
        .args(["--admin-url", &srv.admin, "--admin-token", SK, "health"])
        .stdout(std::process::Stdio::from(write_end))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// A node started without TLS settings serves S3 and admin over HTTPS with a CA and certificate
/// it makes for itself (kept across restarts); a real S3 client trusting the printed CA works,
/// plain HTTP gets no answer, and plain HTTP is served only when asked for (API_TLS=false).
#[tokio::test]
async fn a_node_serves_https_by_default_with_a_certificate_of_its_own() {
    let data = tempfile::tempdir().unwrap();
    let default_tls = [("IRONBUCKET_TEST_DEFAULT_TLS", "1")];
    let mut srv = Server::start_in(data.path(), &[], &default_tls).unwrap();
    assert!(
        srv.s3.starts_with("https://") && srv.admin.starts_with("https://"),
        "{} {}",
        srv.s3,
        srv.admin
    );
    let line = srv.printed("TLS: ", Duration::from_secs(5)).await;
    let ca_path = data.path().join("tls").join("ca.pem");
    assert!(line.contains("made now"), "{line}");
    assert!(
        line.ends_with(&format!("AWS_CA_BUNDLE={}", ca_path.display())),
        "{line}"
    );
    let ca = std::fs::read(&ca_path).unwrap();

    let c = tls_client_for(&srv.s3, AK, SK, &ca);
    c.create_bucket().bucket("over-tls").send().await.unwrap();
    c.put_object()
        .bucket("over-tls")
        .key("k")
        .body(b"sealed in transit".to_vec().into())
        .send()
        .await
        .unwrap();
    let got = c.get_object().bucket("over-tls").key("k").send().await.unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"sealed in transit"
    );
    let admin_addr = srv.admin.trim_start_matches("https://").to_string();
    assert_eq!(https_get(&admin_addr, "/health", &ca).await, Ok(200));
    let other = tempfile::tempdir().unwrap();
    ironbucket_rpc::generate_certificates(other.path(), "other", &["x".to_string()], &[]).unwrap();
    let stranger = std::fs::read(other.path().join("ca.pem")).unwrap();
    assert!(
        https_get(&srv.s3_addr, "/", &stranger).await.is_err(),
        "trusted a CA it was not given"
    );
    let answer = plain_http_answer(&srv.s3_addr, "/").await;
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP answered on the TLS port");
    srv.stop();

    // A restart serves the same certificate, so clients keep trusting it.
    let mut srv = Server::start_in(data.path(), &[], &default_tls).unwrap();
    let line = srv.printed("TLS: ", Duration::from_secs(5)).await;
    assert!(line.contains("made earlier"), "{line}");
    assert_eq!(std::fs::read(&ca_path).unwrap(), ca);
    let c = tls_client_for(&srv.s3, AK, SK, &ca);
    assert_eq!(bucket_names(&c).await, ["over-tls"]);
    srv.stop();

    // Plain HTTP only when asked for.
    let srv = Server::start_in(data.path(), &["--api-tls", "false"], &[]).unwrap();
    assert!(srv.s3.starts_with("http://"), "{}", srv.s3);
    assert_eq!(bucket_names(&srv.client()).await, ["over-tls"]);
}

/// The S3 and admin ports over TLS: certificates from files, `aws:SecureTransport` true for
/// requests that came over TLS, a renewed certificate served without a restart, plain HTTP
/// refused.
#[tokio::test]
async fn apis_over_tls_with_certificate_reload() {
    let certs = tempfile::tempdir().unwrap();
    let (one, two) = (certs.path().join("one"), certs.path().join("two"));
    ironbucket_rpc::generate_certificates(&one, "ca-one", &["api".to_string()], &[]).unwrap();
    ironbucket_rpc::generate_certificates(&two, "ca-two", &["api".to_string()], &[]).unwrap();
    let served = certs.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let (cert, key) = (served.join("api.pem"), served.join("api.key"));
    std::fs::copy(one.join("api.pem"), &cert).unwrap();
    std::fs::copy(one.join("api.key"), &key).unwrap();
    let (ca1, ca2) = (
        std::fs::read(one.join("ca.pem")).unwrap(),
        std::fs::read(two.join("ca.pem")).unwrap(),
    );

    // A bucket whose object everyone may read, but only over TLS (set up over plain HTTP).
    let data = tempfile::tempdir().unwrap();
    let mut plain = Server::start_in(data.path(), &[], &[]).unwrap();
    let c = plain.client();
    c.create_bucket().bucket("tls-only").send().await.unwrap();
    c.put_object()
        .bucket("tls-only")
        .key("doc")
        .body(b"secret".to_vec().into())
        .send()
        .await
        .unwrap();
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::tls-only/*","Condition":{"Bool":{"aws:SecureTransport":"true"}}}]}"#;
    c.put_bucket_policy()
        .bucket("tls-only")
        .policy(policy)
        .send()
        .await
        .unwrap();
    let (st, _, _) = raw("GET", &format!("{}/tls-only/doc", plain.s3), &[], vec![]).await;
    assert_eq!(st, 403, "plain HTTP is not secure transport");
    plain.stop();

    let (c_arg, k_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let srv = Server::start_in(data.path(), &["--api-tls-cert", c_arg, "--api-tls-key", k_arg], &[]).unwrap();
    assert!(
        srv.s3.starts_with("https://") && srv.admin.starts_with("https://"),
        "{} {}",
        srv.s3,
        srv.admin
    );
    let admin_addr = srv.admin.trim_start_matches("https://").to_string();
    assert_eq!(https_get(&srv.s3_addr, "/tls-only/doc", &ca1).await, Ok(200));
    assert_eq!(https_get(&admin_addr, "/health", &ca1).await, Ok(200));
    assert!(
        https_get(&srv.s3_addr, "/tls-only/doc", &ca2).await.is_err(),
        "trusted a CA it was not given"
    );
    // Plain HTTP on a TLS port gets no HTTP answer.
    let answer = plain_http_answer(&srv.s3_addr, "/tls-only/doc").await;
    assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));

    // A renewed certificate (from another CA) is served once the files change.
    std::fs::copy(two.join("api.pem"), &cert).unwrap();
    std::fs::copy(two.join("api.key"), &key).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while https_get(&srv.s3_addr, "/tls-only/doc", &ca2).await != Ok(200) {
        assert!(Instant::now() < deadline, "the renewed certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(https_get(&srv.s3_addr, "/tls-only/doc", &ca1).await.is_err());
}

/// The cluster secret is rotated in three rolling steps (accept the new one; speak the new one
/// and accept the old; drop the old) without the nodes ever refusing each other, and an access
/// key made under the old secret keeps working: its sealed secret opens with the accepted old
/// secret, `cluster reseal-keys` seals it with the new one, and then the old secret can go.
#[tokio::test]
async fn a_rotated_cluster_secret_keeps_access_keys_usable() {
    const NEW: &str = "the-new-cluster-secret-42";
    let ports = free_ports(2);
    let seeds = seeds_of(&ports);
    let args = |i: usize, secret: &str, accepted: Option<&str>| {
        let mut a = node_args(&format!("node-{}", i + 1), ports[i], &seeds, secret);
        if let Some(x) = accepted {
            a.extend(["--cluster-secrets-accepted".to_string(), x.to_string()]);
        }
        a
    };
    let mut nodes: Vec<Server> = (0..2)
        .map(|i| {
            let a = args(i, SECRET, None);
            Server::start_with(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
        })
        .collect();
    let dirs: Vec<tempfile::TempDir> = nodes.iter_mut().map(|n| n.take_tmp().unwrap()).collect();
    converged(&nodes.iter().collect::<Vec<_>>(), 2, Duration::from_secs(30)).await;
    let (rc, key, err) = cli(&nodes[0], &["key", "create", "--name", "rotating"]);
    assert_eq!(rc, 0, "{err}");
    let (ak, sk) = (key["access_key"].as_str().unwrap(), key["secret_key"].as_str().unwrap());
    let usable = |srv: &Server| client_for(&srv.s3, ak, sk);
    usable(&nodes[1]).list_buckets().send().await.unwrap();

    // Each step restarts the nodes one at a time; the cluster agrees after each restart.
    let steps = [(SECRET, Some(NEW)), (NEW, Some(SECRET)), (NEW, None)];
    for (step, (secret, accepted)) in steps.into_iter().enumerate() {
        for i in 0..2 {
            nodes[i].stop();
            let a = args(i, secret, accepted);
            nodes[i] =
                Server::start_in(dirs[i].path(), &a.iter().map(String::as_str).collect::<Vec<_>>(), &[]).unwrap();
            converged(&nodes.iter().collect::<Vec<_>>(), 2, Duration::from_secs(60)).await;
            for n in &nodes {
                let r = usable(n).list_buckets().send().await;
                assert!(r.is_ok(), "step {step}, node-{} restarted: {r:?}", i + 1);
            }
        }
        if step == 1 {
            // Both nodes speak the new secret: seal the key's secret with it.
            let (rc, report, err) = cli(&nodes[1], &["cluster", "reseal-keys"]);
            assert_eq!(rc, 0, "{err}");
            assert!(
                report["resealed"].as_array().unwrap().iter().any(|k| k == ak),
                "{report}"
            );
            assert_eq!(report["failed"].as_array().unwrap().len(), 0, "{report}");
            let (_, again, _) = cli(&nodes[0], &["cluster", "reseal-keys"]);
            assert_eq!(again["resealed"].as_array().unwrap().len(), 0, "{again}");
        }
    }
    // Only the new secret now, and the key works on both nodes (checked in the loop); a node
    // still on the old secret alone is not let in.
    let port = free_ports(1)[0];
    let mut a = node_args("stale", port, &seeds, SECRET);
    a.extend(["--rpc-address".to_string(), format!("127.0.0.1:{port}")]);
    let stale = Server::start_with(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    not_ready_because(&stale, "not in a cluster yet").await;
}

/// Requests refused for a bucket that does not exist (an anonymous CreateBucket of any name)
/// leave no stored request counter behind: a bucket created later under that name starts from
/// its own requests. (The S3 metrics carry no bucket label at all.)
#[tokio::test]
async fn refused_requests_leave_no_counters_for_unknown_buckets() {
    let srv = Server::start();
    for _ in 0..20 {
        let (st, _, _) = raw("PUT", &format!("{}/ghost-bucket", srv.s3), &[], vec![]).await;
        assert_eq!(st, 403);
    }
    let requests = |name: &'static str| {
        let srv = &srv;
        async move {
            let (rc, info, err) = cli(srv, &["bucket", "info", name]);
            assert_eq!(rc, 0, "{err}");
            info["requests_by_month"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum::<u64>())
        }
    };
    // A flush of the counts has happened once a real bucket's request is counted.
    srv.client().create_bucket().bucket("real").send().await.unwrap();
    poll_until("a flush", Duration::from_secs(10), || async {
        (requests("real").await >= 1).then_some(())
    })
    .await;
    srv.client()
        .create_bucket()
        .bucket("ghost-bucket")
        .send()
        .await
        .unwrap();
    let n = poll_until("the create counted", Duration::from_secs(10), || async {
        let n = requests("ghost-bucket").await;
        (n >= 1).then_some(n)
    })
    .await;
    assert!(n <= 2, "the 20 refused requests were counted for the bucket: {n}");
    let (_, _, m) = admin_get(&format!("{}/metrics", srv.admin)).await;
    assert!(!m.contains("ghost-bucket"), "no metric series names the bucket");
}

/// A node started without `IRONBUCKET_ADMIN_TOKEN` makes an admin token of its own (kept in
/// `<data-dir>/admin-token`, mode 600): the root secret key does not open the admin API.
#[tokio::test]
async fn the_default_admin_token_is_not_the_root_secret() {
    let mut srv = Server::start_with(&[], &[("IRONBUCKET_TEST_DEFAULT_ADMIN_TOKEN", "1")]);
    assert_eq!(admin(&srv, "GET", "/workers", Some(SK)).await.0, 401);
    let path = srv.dir.join("admin-token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(token.starts_with("ibt_"), "{token}");
    assert_eq!(admin(&srv, "GET", "/workers", Some(&token)).await.0, 200);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // The same token after a restart; the CLI reads it from the file.
    let dir = srv.take_tmp().unwrap();
    srv.stop();
    let srv = Server::start_in(dir.path(), &[], &[("IRONBUCKET_TEST_DEFAULT_ADMIN_TOKEN", "1")]).unwrap();
    assert_eq!(admin(&srv, "GET", "/workers", Some(&token)).await.0, 200);
    let cli_bin = std::path::Path::new(bin()).with_file_name("ironbucket-cli");
    let out = std::process::Command::new(&cli_bin)
        .args(["--admin-url", &srv.admin, "workers", "--json"])
        .env("IRONBUCKET_ADMIN_TOKEN_FILE", &path)
        .env_remove("IRONBUCKET_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
