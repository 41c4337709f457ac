//! The signature envelope checks on arbitrary headers and query strings: input is
//! `query \0 header-lines` (`name: value`, one per line).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (query, head) = text.split_once('\0').unwrap_or(("", &text));
    let mut headers = http::HeaderMap::new();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    let q = (!query.is_empty()).then_some(query);
    ironbucket_s3::fuzzing::signature_envelope(&headers, q);
});
