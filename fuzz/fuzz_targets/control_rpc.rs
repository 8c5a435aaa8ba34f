//! Arbitrary bytes as a request or answer on a coordinator's QUIC port: the postcard envelope,
//! `ControlRequest` (node heartbeats) and, inside it, every coordinator-to-coordinator
//! `PeerRequest` (Raft AppendEntries, Vote, InstallSnapshot, forwarded commands), and the
//! answers a coordinator decodes from its peers.
//!
//! Oracles: no panic, and whatever decodes re-encodes to bytes that decode to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_coordinator::cluster::peer::{PeerRequest, PeerResponse};
use quiver_proto::{ControlRequest, ControlResponse, Envelope};

fn roundtrip<T>(envelope: Envelope<T>)
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
{
    let bytes = quiver_proto::encode(&envelope).expect("a decoded value encodes");
    let again = quiver_proto::decode::<T>(&bytes).expect("and decodes again");
    assert_eq!(again.body, envelope.body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(envelope) = quiver_proto::decode::<ControlRequest>(bytes) {
                if let ControlRequest::Peer(inner) = &envelope.body {
                    let _ = postcard::from_bytes::<PeerRequest>(inner);
                }
                roundtrip(envelope);
            }
        }
        1 => {
            if let Ok(envelope) = quiver_proto::decode::<ControlResponse>(bytes) {
                roundtrip(envelope);
            }
        }
        2 => {
            if let Ok(request) = postcard::from_bytes::<PeerRequest>(bytes) {
                let _ = request.kind();
                postcard::to_stdvec(&request).expect("a decoded request encodes");
            }
        }
        _ => {
            if let Ok(response) = postcard::from_bytes::<PeerResponse>(bytes) {
                postcard::to_stdvec(&response).expect("a decoded response encodes");
            }
        }
    }
});
