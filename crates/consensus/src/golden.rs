//! The control plane's log and wire format, pinned. A `Command` is at once a Raft log entry (on
//! every member's disk, replayed by every release that may read the log) and the body of a
//! forwarded proposal; it carries the control plane's own records (`records::{Bucket,
//! AccessKey}`, separate from the local store's) and bucket changes (`BucketChange`). These tests
//! decode commands as this and earlier releases wrote them and encode them back: a change that
//! would alter or break the form (a renamed, removed or re-typed field, a new required one) fails
//! here, and must come as a versioned change (docs/protocol.md, "The compatibility rule"). Adding
//! an optional field that is skipped when empty keeps these passing, as older nodes read such
//! entries unchanged.

use crate::Command;

/// Commands as written to the log, one of each kind that carries a stored record.
const GOLDEN: &[&str] = &[
    r#"{"op":"init","cluster_id":"c0ffee","name":"prod","replication":{"factor":3,"strategy":"ConsistentHash","read_consistency":"QUORUM","write_consistency":"ONE","vnodes":256}}"#,
    r#"{"op":"upsert_member","member":{"name":"node-1","raft_id":7,"rpc_addr":"10.0.0.1:7000","role":"primary","zone":"z1","rack":"r1","weight":100,"state":"active"}}"#,
    r#"{"op":"set_member_state","name":"node-2","state":"draining"}"#,
    r#"{"op":"create_bucket","record":{"name":"photos","created":1700000000000,"tags":[["team","media"]],"versioning":"Enabled","cors":[{"id":"web","allowed_origins":["https://a.example"],"allowed_methods":["GET","PUT"],"allowed_headers":["*"],"expose_headers":["ETag"],"max_age_seconds":600}],"lifecycle":[{"id":"tmp","enabled":true,"prefix":"tmp/","tags":[["k","v"]],"size_greater_than":1,"size_less_than":1000,"expiration_days":3,"expired_object_delete_marker":false,"noncurrent_days":7,"newer_noncurrent_versions":2,"abort_incomplete_multipart_days":1}],"quota":{"max_bytes":1000000,"max_objects":10},"encryption":"AES256","object_lock":{"default_mode":"GOVERNANCE","default_days":30},"policy":"{\"Version\":\"2012-10-17\",\"Statement\":[]}","acl":{"owner":"AKOWNER","grants":[{"grantee":{"user":"AKOWNER"},"permission":"FULL_CONTROL"},{"grantee":{"group":"http://acs.amazonaws.com/groups/global/AllUsers"},"permission":"READ"}]},"public_access_block":{"block_public_acls":true,"ignore_public_acls":false,"block_public_policy":true,"restrict_public_buckets":false}},"owner":"AKOWNER"}"#,
    r#"{"op":"change_bucket","name":"photos","change":{"quota":{"max_objects":5}}}"#,
    r#"{"op":"change_bucket","name":"photos","change":{"object_lock":{"default_mode":"COMPLIANCE","default_years":1}}}"#,
    r#"{"op":"change_bucket","name":"photos","change":{"versioning":"Suspended"}}"#,
    r#"{"op":"put_key","record":{"access_key":"AKEXAMPLE","name":"backup","secret_sealed":"sealed:abc","created":1700000000001,"enabled":true,"buckets":{"photos":"write"}}}"#,
    r#"{"op":"set_key_permission","access_key":"AKEXAMPLE","bucket":"photos","permission":"read"}"#,
    r#"{"op":"lock","cmd":{"op":"acquire","name":"job:lifecycle","holder":"node-1","ttl_ms":10000,"permits":1,"wait":false,"now":1700000000002,"leader_renewed":true}}"#,
    r#"{"op":"lock","cmd":{"op":"renew","name":"job:lifecycle","holder":"node-1","token":4,"ttl_ms":10000,"now":1700000000003}}"#,
    r#"{"op":"lock","cmd":{"op":"expire","leases":[["job:lifecycle",4]],"now":1700000000004}}"#,
    r#"{"op":"lock","cmd":{"op":"arrive","barrier":"start","participant":"p1","count":3}}"#,
    r#"{"op":"enable_leader_leases"}"#,
    r#"{"op":"delete_bucket","name":"photos"}"#,
];

#[test]
fn commands_read_and_write_the_pinned_form() {
    for g in GOLDEN {
        let cmd: Command = serde_json::from_str(g).unwrap_or_else(|e| panic!("cannot read {g}: {e}"));
        let back = serde_json::to_value(&cmd).unwrap();
        let want: serde_json::Value = serde_json::from_str(g).unwrap();
        assert_eq!(back, want, "a command no longer writes the form it was read in");
    }
}

/// Entries of releases before optional fields were added (no lease flags, no `leader_leases`)
/// still read, with the defaults.
#[test]
fn older_entries_still_read() {
    let old =
        r#"{"op":"lock","cmd":{"op":"acquire","name":"l","holder":"h","ttl_ms":5,"permits":1,"wait":true,"now":9}}"#;
    match serde_json::from_str::<Command>(old).unwrap() {
        Command::Lock {
            cmd: crate::LockCmd::Acquire { leader_renewed, .. },
        } => assert!(!leader_renewed),
        other => panic!("{other:?}"),
    }
    let bucket = r#"{"op":"create_bucket","record":{"name":"b","created":1}}"#;
    assert!(serde_json::from_str::<Command>(bucket).is_ok());
}
