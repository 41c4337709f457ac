//! Lease renewals off the Raft log (node protocol 4) with real processes: once every member
//! speaks protocol 4 the leader answers renewals from memory (the log does not grow with them),
//! a new leader honours leases renewed under the old one, a lease whose holder stops renewing
//! ends and passes to the next waiter with a larger fencing token, and a node that speaks only
//! protocol 3 can no longer join.

use crate::common::cluster::*;
use crate::common::*;
use std::time::Duration;

async fn log_index(srv: &Server) -> Option<u64> {
    cluster_status(srv).await?["last_log_index"].as_u64()
}

fn renew(holder: &str, token: u64) -> serde_json::Value {
    serde_json::json!({"op": "renew", "holder": holder, "token": token, "ttl_ms": 4000})
}

#[tokio::test]
async fn renewals_are_answered_by_the_leader_and_leave_the_log_alone() {
    let (mut nodes, seeds, ports) = cluster_of(3).await;
    poll_until("leader-renewed leases turned on", Duration::from_secs(30), || async {
        let s = cluster_status(&nodes[0]).await?;
        (s["leader_leases"] == true).then_some(())
    })
    .await;
    // Job leases granted before then become leader-renewed at their next renewal.
    poll_until("job leases leader-renewed", Duration::from_secs(30), || async {
        let t = lock_table(&nodes[0]).await;
        let jobs: Vec<&serde_json::Value> = t["locks"]
            .as_object()?
            .iter()
            .filter(|(k, _)| k.starts_with("job:"))
            .map(|(_, v)| v)
            .collect();
        jobs.iter()
            .all(|l| l["holders"][0]["leader_renewed"] == true)
            .then_some(())
    })
    .await;

    let a = lock_call(
        &nodes[1],
        "locks/renewed",
        serde_json::json!({"op": "acquire", "holder": "worker-a", "ttl_ms": 4000}),
    )
    .await;
    assert_eq!(a["lock"], "granted", "{a}");
    let token = a["token"].as_u64().unwrap();
    let before = log_index(&nodes[0]).await.unwrap();
    let mut last = a["expires_at"].as_u64().unwrap();
    for i in 0..15 {
        let r = lock_call(&nodes[i % 3], "locks/renewed", renew("worker-a", token)).await;
        assert_eq!(r["lock"], "renewed", "{r}");
        let until = r["expires_at"].as_u64().unwrap();
        assert!(until >= last, "a renewal moves the end forward: {until} < {last}");
        last = until;
    }
    let after = log_index(&nodes[0]).await.unwrap();
    assert!(
        after - before <= 2,
        "15 renewals wrote {} log entries (from {before} to {after})",
        after - before
    );
    // The leader shows the lease's end as renewed.
    let leader = cluster_status(&nodes[0]).await.unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let li = (0..3).find(|i| format!("node-{}", i + 1) == leader).unwrap();
    let shown = lock_table(&nodes[li]).await["locks"]["renewed"]["holders"][0].clone();
    assert_eq!(shown["leader_renewed"], true, "{shown}");
    assert!(shown["expires_at"].as_u64().unwrap() >= last, "{shown}");

    // The leader dies; the new one has never seen the renewals but honours the lease: the
    // holder's renewals keep succeeding once it is elected.
    drop(nodes.remove(li));
    let renewed = poll_until("a renewal through the new leader", Duration::from_secs(20), || async {
        let r = try_lock_call(&nodes[0], "locks/renewed", renew("worker-a", token))
            .await
            .ok()?;
        Some(r)
    })
    .await;
    assert_eq!(renewed["lock"], "renewed", "{renewed}");

    // worker-a stops renewing: its lease ends (an Expire entry) and the waiter gets the lock
    // with a larger fencing token, as every node sees.
    let b = lock_call(
        &nodes[1],
        "locks/renewed",
        serde_json::json!({"op": "acquire", "holder": "worker-b", "ttl_ms": 4000, "wait": true}),
    )
    .await;
    assert_eq!(b["lock"], "queued", "{b}");
    let holder = poll_until("the lease passed to the waiter", Duration::from_secs(20), || async {
        let h = lock_table(&nodes[0]).await["locks"]["renewed"]["holders"][0].clone();
        (h["holder"] == "worker-b").then_some(h)
    })
    .await;
    assert!(holder["token"].as_u64().unwrap() > token, "{holder}");
    let late = lock_call(&nodes[1], "locks/renewed", renew("worker-a", token)).await;
    assert_eq!(late["lock"], "not_holder", "{late}");

    // A node that speaks only protocol 3 cannot join any more, and says why.
    let port = free_ports(1)[0];
    let mut args = node_args("node-9", port, &seeds, SECRET);
    args.extend([
        "--rpc-address".to_string(),
        format!("127.0.0.1:{port}"),
        "--protocol-version".to_string(),
        "1-3".to_string(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let old = Server::start_with(&a, &[]);
    let why = poll_until("the old node's refusal", Duration::from_secs(30), || async {
        let (st, _, body) = raw("GET", &format!("{}/health/ready", old.admin), &[], vec![]).await;
        (st == 503 && body.contains("protocol")).then_some(body)
    })
    .await;
    assert!(why.contains("cannot join") && why.contains("upgrade it"), "{why}");
    let members = cluster_status(&nodes[0]).await.unwrap()["members"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, 3, "{why}");
    drop(ports);
}
