//! `ironbucket dev-cluster`: three nodes on 127.0.0.1 form one cluster, print their endpoints and
//! credentials, serve S3 with those credentials, and all stop on SIGINT; bad arguments are
//! refused with a message naming the flag.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A base port whose next `n` ports are free, for each of three ranges.
fn free_bases(n: u16) -> [u16; 3] {
    let mut found = Vec::new();
    // Below the ephemeral range, where no outgoing connection takes a port.
    let mut candidate = 10_000 + (std::process::id() % 18_000) as u16;
    while found.len() < 3 {
        let ok = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", candidate + i)).is_ok());
        if ok {
            found.push(candidate);
        }
        candidate += n + 7;
    }
    [found[0], found[1], found[2]]
}

#[tokio::test]
async fn dev_cluster_starts_serves_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let [s3, admin, rpc] = free_bases(3);
    let mut child = Command::new(bin())
        .args(["dev-cluster", "--nodes", "3", "--dir"])
        .arg(dir.path())
        .args(["--s3-port", &s3.to_string(), "--admin-port", &admin.to_string()])
        .args(["--rpc-port", &rpc.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("dev-cluster never got ready; printed so far: {printed:#?}"));
        let done = line.starts_with("ready");
        printed.push(line);
        if done {
            break;
        }
    }
    println!(
        "dev-cluster ready after {:?}:\n{}",
        started.elapsed(),
        printed.join("\n")
    );
    let field = |name: &str| {
        printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap()
    };
    let (ak, sk, token) = (field("access key:"), field("secret key:"), field("admin token:"));
    assert!(
        token.starts_with("ibt_") && token != sk,
        "the admin token is not the root secret"
    );
    for i in 0..3u16 {
        assert!(
            printed
                .iter()
                .any(|l| l.contains(&format!("S3 https://127.0.0.1:{}", s3 + i))),
            "{printed:?}"
        );
    }

    // The printed credentials work on every node, and a bucket made through node 1 is seen
    // through node 3.
    // Over HTTPS, trusting the CA the dev cluster made and printed.
    let ca = std::fs::read(field("CA of the nodes' certificates:")).unwrap();
    let c1 = crate::common::tls::tls_client_for(&format!("https://127.0.0.1:{s3}"), &ak, &sk, &ca);
    c1.create_bucket().bucket("dev-bucket").send().await.unwrap();
    c1.put_object()
        .bucket("dev-bucket")
        .key("hello.txt")
        .body(b"hi".to_vec().into())
        .send()
        .await
        .unwrap();
    let c3 = crate::common::tls::tls_client_for(&format!("https://127.0.0.1:{}", s3 + 2), &ak, &sk, &ca);
    let names = bucket_names(&c3).await;
    assert_eq!(names, ["dev-bucket"]);
    let (st, body) = crate::common::tls::https_request(
        &format!("127.0.0.1:{}", admin + 1),
        "127.0.0.1",
        "GET",
        "/cluster/status",
        &[("authorization", &format!("Bearer {token}"))],
        &ca,
    )
    .await
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");

    // The credentials file is private.
    let env_file = dir.path().join("cluster.env");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&env_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Ctrl-C stops every node.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "dev-cluster did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    for i in 0..3u16 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", admin + i)).is_err(),
            "node {} still answers",
            i + 1
        );
    }
}

#[test]
fn dev_cluster_refuses_bad_arguments() {
    for (args, needle) in [
        (vec!["--nodes", "0"], "--nodes"),
        (
            vec!["--nodes", "3", "--replication-factor", "4"],
            "--replication-factor",
        ),
        (vec!["--nodes", "3", "--s3-port", "65535"], "--s3-port"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(bin())
            .arg("dev-cluster")
            .args(&args)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{args:?}: {err}");
    }
}
