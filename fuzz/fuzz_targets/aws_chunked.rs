//! aws-chunked bodies (STREAMING-UNSIGNED-PAYLOAD-TRAILER, so no chunk signature stops the
//! decoder early) through the whole S3 front end as a signed PutObject. The first two bytes are
//! the declared decoded length. Any answer but a 500 is fine; a panic or a hang is not.
#![no_main]
use ironbucket_fuzz::{BUCKET, Harness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let declared = u16::from_le_bytes([data[0], data[1]]);
    let h = Harness::get();
    let status = h.call(
        "PUT",
        &format!("/{BUCKET}/chunked"),
        "",
        &[
            ("content-encoding", "aws-chunked".into()),
            ("x-amz-decoded-content-length", declared.to_string()),
            ("x-amz-trailer", "x-amz-checksum-crc32".into()),
        ],
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        data[2..].to_vec(),
    );
    assert_ne!(status, 500, "an aws-chunked body made an internal error");
});
