//! Supervised background workers: `GET /workers`, `ironbucket-cli workers`, readiness, and a
//! node whose metadata commit thread dies: `/health` turns red and writes fail fast with 503.

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use std::time::{Duration, Instant};

fn auth() -> String {
    format!("Bearer {SK}")
}

#[tokio::test]
async fn workers_are_listed_throttled_and_woken_and_the_node_is_ready() {
    let srv = Server::start();
    // Readiness needs no token (load balancers and health checks call it).
    let (st, _, body) = raw("GET", &format!("{}/health/ready", srv.admin), &[], vec![]).await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    let (code, _, err) = cli(&srv, &["ready"]);
    assert_eq!(code, 0, "{err}");

    // The list needs the admin token.
    let (st, _, _) = raw("GET", &format!("{}/workers", srv.admin), &[], vec![]).await;
    assert_eq!(st, 401);
    let (st, _, body) = raw(
        "GET",
        &format!("{}/workers", srv.admin),
        &[("authorization", &auth())],
        vec![],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = list.iter().map(|w| w["name"].as_str().unwrap()).collect();
    for want in [
        "store.garbage",
        "store.multipart-expiry",
        "store.tombstones",
        "store.lifecycle",
        "store.request-counts",
        "meta.commit",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let commit = list.iter().find(|w| w["name"] == "meta.commit").unwrap();
    assert_eq!(commit["on_failure"], "fatal");
    assert_eq!(commit["state"], "busy");

    // Tranquility is set per worker and reported back; bad values and names are refused.
    let url = format!("{}/workers/store.garbage", srv.admin);
    let (st, _, body) = raw(
        "PUT",
        &url,
        &[("authorization", &auth())],
        br#"{"tranquility": 5}"#.to_vec(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tranquility"], 5);
    let (st, _, _) = raw(
        "PUT",
        &url,
        &[("authorization", &auth())],
        br#"{"tranquility": -1}"#.to_vec(),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _, body) = raw(
        "PUT",
        &format!("{}/workers/nope", srv.admin),
        &[("authorization", &auth())],
        br#"{"tranquility": 1}"#.to_vec(),
    )
    .await;
    assert_eq!(st, 404);
    assert!(body.contains("nope"), "{body}");

    // Waking the garbage worker makes it run a round now.
    let units = |list: &serde_json::Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "store.garbage")
            .unwrap()["units"]
            .as_u64()
            .unwrap()
    };
    let (code, before, err) = cli(&srv, &["workers", "--json"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&srv, &["workers", "wake", "store.garbage"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, now, _) = cli(&srv, &["workers", "--json"]);
        if units(&now) > units(&before) {
            break;
        }
        assert!(Instant::now() < deadline, "the woken worker did not run: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The table names every worker.
    let bin = std::path::Path::new(bin()).with_file_name("ironbucket-cli");
    let out = std::process::Command::new(bin)
        .args(["--admin-url", &srv.admin, "--admin-token", SK, "workers"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("WORKER") && text.contains("store.lifecycle"),
        "{text}"
    );
}

/// The metadata commit thread dies (a fault injected after a few commits): the node reports
/// itself failed with the reason, and writes are refused with 503 at once instead of hanging.
#[tokio::test]
async fn a_dead_commit_thread_turns_health_red_and_writes_get_503_at_once() {
    let srv = Server::start_with(&[], &[("FAILPOINTS", "meta-commit=25*off->panic")]);
    // No SDK retries: the test times the node's own answer.
    let c = aws_sdk_s3::Client::from_conf(
        srv.client()
            .config()
            .to_builder()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build(),
    );
    c.create_bucket().bucket("fp-bucket").send().await.unwrap();
    let (st, _, _) = raw("GET", &format!("{}/health", srv.admin), &[], vec![]).await;
    assert_eq!(st, 200);

    // Write until the fault fires; every write either succeeds or gets 503.
    let mut failed_at = None;
    for i in 0..200 {
        let r = c
            .put_object()
            .bucket("fp-bucket")
            .key(format!("k{i}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await;
        match r {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(status(&e), 503, "{e:?}");
                failed_at = Some(Instant::now());
                break;
            }
        }
    }
    assert!(failed_at.is_some(), "the fault never fired");

    let (st, _, body) = raw("GET", &format!("{}/health", srv.admin), &[], vec![]).await;
    assert_eq!(st, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["failed_worker"], "meta.commit");
    assert!(v["error"].as_str().unwrap().contains("panicked"), "{body}");
    let (st, _, body) = raw("GET", &format!("{}/health/ready", srv.admin), &[], vec![]).await;
    assert_eq!(st, 503, "{body}");
    let (code, v, _) = cli(&srv, &["ready", "--json"]);
    assert_eq!(code, 1);
    assert!(v["reasons"][0].as_str().unwrap().contains("meta.commit"), "{v}");

    // Every later write is refused quickly, with the reason in the error message.
    for i in 0..5 {
        let began = Instant::now();
        let e = c
            .put_object()
            .bucket("fp-bucket")
            .key(format!("after{i}"))
            .body(ByteStream::from_static(b"y"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(status(&e), 503, "{e:?}");
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "a write took {:?} to be refused",
            began.elapsed()
        );
        let (_, _, b) = raw("GET", &format!("{}/health", srv.admin), &[], vec![]).await;
        assert!(b.contains("failed"), "{b}");
    }
    let (st, _, m) = admin_get(&format!("{}/metrics", srv.admin)).await;
    assert_eq!(st, 200);
    assert!(m.contains("ironbucket_node_failed 1"), "{m}");
    // Reads still work: the node failed for writes only.
    let got = c.get_object().bucket("fp-bucket").key("k0").send().await;
    assert!(got.is_ok(), "{got:?}");
    // The CLI reports the dead worker with exit code 1.
    let (code, list, _) = cli(&srv, &["workers", "--json"]);
    assert_eq!(code, 1);
    let dead = list
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "meta.commit")
        .unwrap();
    assert_eq!(dead["state"], "dead", "{dead}");
}
