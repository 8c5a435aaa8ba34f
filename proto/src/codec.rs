//! Framing: one postcard-encoded [`Envelope`] per QUIC stream direction.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Bumped on every incompatible change to [`crate::messages`].
pub const PROTOCOL_VERSION: u16 = 2;

/// Upper bound for one encoded message in either direction. A PutVectors part is at most 500
/// vectors of 4096 floats plus 40 KB metadata each (~28 MiB); responses are smaller.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub version: u16,
    /// The HTTP request id that caused this RPC, carried for log correlation.
    pub request_id: String,
    /// Absolute deadline in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
    pub body: T,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("{0} unexpected bytes after the envelope")]
    TrailingBytes(usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(envelope: &Envelope<T>) -> Result<Vec<u8>, CodecError> {
    let bytes = postcard::to_stdvec(envelope)?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>, CodecError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let (envelope, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        // One envelope per stream: trailing bytes mean the frame is not what it claims.
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(envelope)
}
