//! What a node reads off the wire from a peer before trusting it: the gRPC messages (envelope,
//! data chunk), the message kind named in them, and the credentials token.
#![no_main]
use ironbucket_rpc::{Auth, Kind, Method, pb};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = pb::Envelope::decode(data) {
        for m in [Method::Raft, Method::Control, Method::Push, Method::Pull] {
            let _ = Kind::parse(m, &env.kind);
        }
    }
    let _ = pb::Chunk::decode(data);
    let _ = pb::PingReply::decode(data);
    let auth = Auth::new("cluster", "a-cluster-secret-of-some-length");
    let _ = auth.check(Some(&String::from_utf8_lossy(data)));
});
