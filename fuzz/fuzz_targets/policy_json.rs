//! Bucket policy documents: parsed, and when valid, evaluated and classified.
#![no_main]
use ironbucket_types::policy::{self, Identity, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = policy::parse(text, "bucket") else {
        return;
    };
    let who = Identity {
        access_key: "AKIA".into(),
        name: "alice".into(),
    };
    let context = [
        ("aws:sourceip", "10.1.2.3".to_string()),
        ("s3:prefix", "photos/".to_string()),
        ("aws:securetransport", "false".to_string()),
    ];
    for principal in [None, Some(&who)] {
        for (action, resource) in [
            ("s3:GetObject", "arn:aws:s3:::bucket/photos/a.jpg"),
            ("s3:ListBucket", "arn:aws:s3:::bucket"),
        ] {
            let _ = p.evaluate(&Request {
                principal,
                action,
                resource,
                context: &context,
            });
        }
    }
    let _ = p.is_public();
});
