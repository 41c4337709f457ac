//! The browser-form reader that runs before a POST Object's file: input is
//! `content-type \n body`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let content_type = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or(&[]);
    ironbucket_s3::fuzzing::post_form_head(&content_type, body);
});
