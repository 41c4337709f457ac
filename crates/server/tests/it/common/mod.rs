//! Test harness: starts the real `ironbucket` binary on ephemeral ports and builds clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod moves;
pub mod tls;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AK: &str = "testaccesskey";
pub const SK: &str = "testsecretkey-0123456789";

pub struct Server {
    child: Option<Child>,
    pub s3: String,
    pub s3_addr: String,
    pub admin: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub stdout_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ironbucket")
}

impl Server {
    /// A server with its own temporary data directory.
    pub fn start() -> Server {
        Self::start_with(&[], &[])
    }

    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, args, envs).expect("server starts");
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data directory (restart tests).
    pub fn start_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<Server, String> {
        let mut cmd = Command::new(bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(dir)
            .args([
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
            ])
            .args(args)
            // IRONBUCKET_TEST_RUST_LOG (with IRONBUCKET_TEST_LOG set) shows more of a server's log.
            .env(
                "RUST_LOG",
                std::env::var("IRONBUCKET_TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The tests' admin token is the root secret, set explicitly (a node's default is a
        // token of its own in <data-dir>/admin-token), unless the test chooses one (or asks for
        // the default with IRONBUCKET_TEST_DEFAULT_ADMIN_TOKEN).
        let chooses = args.iter().any(|a| a.starts_with("--admin-token"))
            || envs
                .iter()
                .any(|(k, _)| k.starts_with("IRONBUCKET_ADMIN_TOKEN") || *k == "IRONBUCKET_TEST_DEFAULT_ADMIN_TOKEN");
        if !chooses {
            cmd.env("IRONBUCKET_ADMIN_TOKEN", SK);
        }
        // Plain HTTP, asked for explicitly (a node's default is HTTPS with a certificate of its
        // own), unless the test sets up TLS itself.
        let tls_chosen = args.iter().any(|a| a.starts_with("--api-tls"))
            || envs
                .iter()
                .any(|(k, _)| k.starts_with("API_TLS") || *k == "IRONBUCKET_TEST_DEFAULT_TLS");
        if !tls_chosen {
            cmd.args(["--api-tls", "false"]);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let err_buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let e2 = err_buf.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = e2.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
                if std::env::var("IRONBUCKET_TEST_LOG").is_ok() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut s3, mut admin) = (None, None);
        while s3.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // `https://` when the node serves its APIs over TLS.
                    if let Some(a) = line.strip_prefix("S3 API listening on ") {
                        s3 = Some(a.to_string());
                    }
                    if let Some(a) = line.strip_prefix("Admin API listening on ") {
                        admin = Some(a.to_string());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    return Err(format!("server did not start: {}", err_buf.lock().unwrap()));
                }
            }
        }
        let s3 = s3.unwrap_or_default();
        let s3_addr = s3.split_once("://").map_or(s3.as_str(), |(_, a)| a).to_string();
        Ok(Server {
            child: Some(child),
            s3,
            s3_addr,
            admin: admin.unwrap_or_default(),
            dir: dir.to_path_buf(),
            _tmp: None,
            stdout_lines: lines,
        })
    }

    pub fn client(&self) -> Client {
        client_for(&self.s3, AK, SK)
    }

    /// SIGSTOP (`true`: the node stops answering without dying) or SIGCONT.
    #[allow(dead_code)]
    pub fn pause(&self, stop: bool) {
        use nix::sys::signal::{Signal, kill};
        if let Some(c) = &self.child {
            let sig = if stop { Signal::SIGSTOP } else { Signal::SIGCONT };
            kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).expect("signal the node");
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    /// The first stdout line starting with `prefix`, waiting up to `timeout` for it (lines
    /// printed after the listening lines arrive a moment later).
    pub async fn printed(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .stdout_lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned();
            if let Some(l) = found {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "the node printed no line starting with {prefix:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Keeps the data directory alive past this server (for restarts).
    pub fn take_tmp(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client_for(endpoint: &str, ak: &str, sk: &str) -> Client {
    Client::from_conf(config_for(endpoint, ak, sk).build())
}

/// The S3 client configuration the tests use (path style, plain HTTP, the given key).
pub fn config_for(endpoint: &str, ak: &str, sk: &str) -> aws_sdk_s3::config::Builder {
    let creds = Credentials::new(ak, sk, None, None, "test");
    aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
}

/// The names ListBuckets returns, in order.
pub async fn bucket_names(c: &Client) -> Vec<String> {
    c.list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(String::from))
        .collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A raw HTTP request (for unsigned, presigned and malformed cases). Returns status, headers, body.
/// The `Authorization` value the test servers' admin API takes (their admin token is the root
/// secret).
pub fn bearer() -> String {
    format!("Bearer {SK}")
}

/// `GET url` on an admin API with the test servers' admin token.
pub async fn admin_get(url: &str) -> (u16, http::HeaderMap, String) {
    raw("GET", url, &[("authorization", &bearer())], vec![]).await
}

pub async fn raw(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, http::HeaderMap, String) {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = client.request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub async fn body_bytes(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    out.body.collect().await.expect("body").into_bytes().to_vec()
}

/// The S3 error code of an SDK error.
pub fn code<E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: &aws_sdk_s3::error::SdkError<E, R>,
) -> String {
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(s) => s.err().code().unwrap_or("<none>").to_string(),
        other => format!("<not a service error: {other:?}>"),
    }
}

/// The HTTP status of an SDK error.
pub fn status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> u16 {
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(s) => s.raw().status().as_u16(),
        aws_sdk_s3::error::SdkError::ResponseError(r) => r.raw().status().as_u16(),
        _ => 0,
    }
}

// SigV4 building blocks written from the specification, for tests that sign by hand.
use sha2::{Digest, Sha256};

pub fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

pub fn sha_hex(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

/// `YYYYMMDDTHHMMSSZ` from Unix seconds (civil-from-days, no date crate needed).
pub fn time_fmt(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The SigV4 signing key for `date` (YYYYMMDD), us-east-1, s3.
pub fn signing_key(date: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{SK}").as_bytes(), date.as_bytes());
    let k = hmac(&k, b"us-east-1");
    let k = hmac(&k, b"s3");
    hmac(&k, b"aws4_request")
}

/// Runs ironbucket-cli against a server with the admin token; returns exit code, parsed JSON
/// output and stderr.
pub fn cli(srv: &Server, args: &[&str]) -> (i32, serde_json::Value, String) {
    let bin = std::path::Path::new(bin()).with_file_name("ironbucket-cli");
    if !bin.exists() {
        assert!(
            std::process::Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "ironbucket-cli"])
                .status()
                .unwrap()
                .success()
        );
    }
    let out = std::process::Command::new(bin)
        .args(["--admin-url", &srv.admin, "--admin-token", SK])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A timestamp `s` seconds from now (retention dates).
pub fn in_secs(s: u64) -> aws_smithy_types::DateTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    aws_smithy_types::DateTime::from_secs((now + s) as i64)
}

/// Turns versioning on for `bucket`.
pub async fn enable_versioning(c: &aws_sdk_s3::Client, bucket: &str) {
    c.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
}
