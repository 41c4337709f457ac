//! `Range` / `x-amz-copy-source-range` and `x-amz-copy-source` headers.
#![no_main]
use ironbucket_types::RangeSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(spec) = RangeSpec::parse(&text) {
        for size in [0u64, 1, 100, u64::MAX] {
            if let Ok(r) = spec.resolve(size) {
                assert!(r.len() <= size, "a range longer than the object");
                let _ = r.content_range(size);
            }
        }
    }
    ironbucket_s3::fuzzing::copy_source(&text);
    let _ = s3s::dto::CopySource::parse(&text);
});
