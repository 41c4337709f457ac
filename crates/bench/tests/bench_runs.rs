#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Short, bounded runs of `ironbucket-bench` against a real IronBucket server: the numbers must
//! add up and failures must be counted, never hidden.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AK: &str = "bench-test-key";
const SK: &str = "bench-test-secret";

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn target_bin(name: &str) -> std::path::PathBuf {
    let bench = std::path::Path::new(env!("CARGO_BIN_EXE_ironbucket-bench"));
    let p = bench.with_file_name(name);
    if !p.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "ironbucket-server"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    p
}

/// Starts a process and waits for the stdout line with `marker`; returns the rest of that line.
fn start(mut cmd: Command, marker: &str) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&marker) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(20)).expect("process started");
    (Proc(child), url)
}

fn server() -> (Proc, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(target_bin("ironbucket"));
    // Plain HTTP, asked for: the bench client speaks HTTP only.
    cmd.arg("server").arg("--data-dir").arg(dir.path()).args([
        "--api-tls",
        "false",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--admin-port",
        "0",
        "--access-key",
        AK,
        "--secret-key",
        SK,
        "--fsync",
        "false",
    ]);
    let (p, url) = start(cmd, "S3 API listening on ");
    (p, url, dir)
}

fn bench(args: &[&str]) -> (i32, serde_json::Value, String) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ironbucket-bench"))
        .args(args)
        .args(["--json", "-", "--no-progress"])
        .env("AWS_ACCESS_KEY_ID", AK)
        .env("AWS_SECRET_ACCESS_KEY", SK)
        .output()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(120), "bench runs are bounded");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json_start = stdout.find("\n{").map(|i| i + 1).unwrap_or(0);
    let v: serde_json::Value = serde_json::from_str(&stdout[json_start..])
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v, stdout)
}

#[test]
fn put_counts_add_up() {
    let (_srv, ep, _dir) = server();
    let (code, v, table) = bench(&["put", "--endpoint", &ep, "--objects", "60", "-c", "4", "--size", "4KiB"]);
    assert_eq!(code, 0, "{table}");
    let put = &v["operations"]["PUT"];
    assert_eq!(put["count"], 60);
    assert_eq!(put["errors"], 0);
    assert_eq!(put["bytes"], 60 * 4096);
    let secs = v["duration_secs"].as_f64().unwrap();
    let ops = put["ops_per_sec"].as_f64().unwrap();
    assert!((ops * secs - 60.0).abs() < 0.5, "ops/s x duration = count");
    let lat = &put["latency_ms"];
    assert!(lat["p50"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap());
    assert!(lat["p99"].as_f64().unwrap() <= lat["max"].as_f64().unwrap());
    assert!(table.contains("PUT"));
    let ticks: u64 = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["ops"].as_u64().unwrap())
        .sum();
    assert_eq!(ticks, 60, "the timeline accounts for every operation");
}

#[test]
fn wrong_secret_is_all_signature_errors() {
    let (_srv, ep, _dir) = server();
    let (code, v, _) = bench(&[
        "put",
        "--endpoint",
        &ep,
        "--objects",
        "25",
        "-c",
        "2",
        "--secret-key",
        "not-the-secret",
    ]);
    assert_eq!(code, 1, "errors make the exit code non-zero");
    assert_eq!(v["total"]["count"], 25);
    assert_eq!(v["total"]["errors"], 25);
    assert_eq!(v["errors_by_code"]["SignatureDoesNotMatch"], 25);
}

#[test]
fn get_mixed_list_multipart_delete() {
    let (_srv, ep, _dir) = server();
    let (code, v, t) = bench(&[
        "get",
        "--endpoint",
        &ep,
        "--objects",
        "30",
        "-c",
        "4",
        "--duration",
        "1s",
        "--size",
        "1KiB..64KiB",
        "--verify-ratio",
        "1",
    ]);
    assert_eq!(code, 0, "{t}");
    assert!(v["operations"]["GET"]["count"].as_u64().unwrap() > 0);
    assert!(v["operations"]["PUT"].is_null(), "preparation is not measured");

    let (code, v, t) = bench(&[
        "mixed",
        "--endpoint",
        &ep,
        "--objects",
        "30",
        "-c",
        "4",
        "--duration",
        "1s",
        "--get",
        "50",
        "--put",
        "20",
        "--stat",
        "20",
        "--delete",
        "10",
    ]);
    assert_eq!(code, 0, "{t}");
    let sum: u64 = ["GET", "PUT", "STAT", "DELETE"]
        .iter()
        .map(|o| v["operations"][o]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, v["total"]["count"].as_u64().unwrap());

    let (code, v, t) = bench(&[
        "list",
        "--endpoint",
        &ep,
        "--objects",
        "1500",
        "-c",
        "2",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 0, "{t}");
    assert!(v["operations"]["LIST"]["count"].as_u64().unwrap() >= 2);

    let (code, v, t) = bench(&[
        "multipart",
        "--endpoint",
        &ep,
        "--objects",
        "2",
        "-c",
        "2",
        "--size",
        "11MiB",
        "--part-size",
        "5MiB",
    ]);
    assert_eq!(code, 0, "{t}");
    assert_eq!(v["operations"]["MULTIPART"]["bytes"], 2 * 11 * 1024 * 1024);

    let (code, v, t) = bench(&["delete", "--endpoint", &ep, "--objects", "40", "-c", "4"]);
    assert_eq!(code, 0, "{t}");
    assert_eq!(v["operations"]["DELETE"]["count"], 40);
}

#[test]
fn null_server_measures_the_client_alone() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ironbucket-bench"));
    cmd.args(["null-server", "--listen", "127.0.0.1:0"]);
    let (_null, url) = start(cmd, "null server listening on ");
    let (code, v, t) = bench(&[
        "put",
        "--endpoint",
        &url,
        "--size",
        "0",
        "--duration",
        "1s",
        "-c",
        "8",
        "--no-cleanup",
    ]);
    assert_eq!(code, 0, "{t}");
    assert!(v["operations"]["PUT"]["count"].as_u64().unwrap() > 100);
}

#[test]
fn bad_arguments_are_explained() {
    let out = Command::new(env!("CARGO_BIN_EXE_ironbucket-bench"))
        .args(["put", "--size", "4XB", "--access-key", "a", "--secret-key", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid size unit"));
    let out = Command::new(env!("CARGO_BIN_EXE_ironbucket-bench"))
        .args([
            "put",
            "--endpoint",
            "http://127.0.0.1:1",
            "--access-key",
            "a",
            "--secret-key",
            "b",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}
