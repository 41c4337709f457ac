//! XML request bodies through the whole S3 front end (parsing by s3s, then this project's
//! conversion and validation): the first byte picks the operation, the rest is the body. Bad
//! input must get a 4xx (or a 501 for what is not supported), never a 500 or a panic.
#![no_main]
use ironbucket_fuzz::{BUCKET, Harness};
use libfuzzer_sys::fuzz_target;

const OPS: &[(&str, &str, &str)] = &[
    ("POST", "", "delete"),
    ("PUT", "", "cors"),
    ("PUT", "", "lifecycle"),
    ("PUT", "", "tagging"),
    ("PUT", "", "acl"),
    ("PUT", "", "object-lock"),
    ("PUT", "", "versioning"),
    ("PUT", "", "encryption"),
    ("PUT", "", "publicAccessBlock"),
    ("PUT", "/k", "tagging"),
    ("PUT", "/k", "acl"),
    ("PUT", "/k", "retention"),
    ("PUT", "/k", "legal-hold"),
    ("POST", "/k", "uploadId=nope"),
    ("PUT", "", "policy"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, key, query) = OPS[pick as usize % OPS.len()];
    let h = Harness::get();
    let status = h.call(
        method,
        &format!("/{BUCKET}{key}"),
        query,
        &[("content-length", body.len().to_string())],
        "UNSIGNED-PAYLOAD",
        body.to_vec(),
    );
    assert_ne!(
        status, 500,
        "{method} ?{query} with a fuzzed body made an internal error"
    );
});
