//! Opaque, tamper-proof pagination tokens and the QueryVectors cursor cache.
//!
//! A token is `base64url(json payload) "." base64url(hmac-sha256(key, payload))`. The payload says
//! which listing it continues (kind and scope), so a token from one listing cannot be replayed on
//! another, and a forged or edited token fails the MAC check. QueryVectors pages are served from a
//! bounded in-memory cursor cache: the full top-K is computed once, so later pages are stable
//! against writes made between fetches; cursors expire.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_lot::Mutex;
use quiver_proto::Hit;
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// How long a QueryVectors cursor stays valid.
pub const CURSOR_TTL: Duration = Duration::from_secs(5 * 60);
/// Most cursors kept at once; the oldest is evicted beyond this.
pub const MAX_CURSORS: usize = 256;

pub fn invalid_token() -> ApiError {
    ApiError::validation("The provided nextToken is not valid")
}

pub struct TokenSigner {
    key: [u8; 32],
}

type HmacSha256 = hmac::Hmac<Sha256>;

impl TokenSigner {
    /// A key derived from a secret every coordinator of a cluster shares (the join token), so a
    /// token issued by one coordinator is accepted by the others.
    pub fn from_shared_secret(secret: &str) -> TokenSigner {
        use hmac::Mac;
        let mut mac = <HmacSha256 as Mac>::new_from_slice(b"quiver pagination token key")
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(secret.as_bytes());
        TokenSigner {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// Loads the token key from `path`, creating it on first start (tokens then survive
    /// restarts).
    pub fn load_or_create(path: &Path) -> std::io::Result<TokenSigner> {
        if let Ok(bytes) = std::fs::read(path) {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(TokenSigner { key });
            }
        }
        let key: [u8; 32] = rand::random();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, key)?;
        std::fs::rename(&tmp, path)?;
        Ok(TokenSigner { key })
    }

    pub fn with_key(key: [u8; 32]) -> TokenSigner {
        TokenSigner { key }
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        use hmac::Mac;
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }

    pub fn sign<T: Serialize>(&self, payload: &T) -> String {
        let json = serde_json::to_vec(payload).unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(self.mac(&json))
        )
    }

    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, ApiError> {
        let (payload, mac) = token.split_once('.').ok_or_else(invalid_token)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| invalid_token())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| invalid_token())?;
        if !bool::from(self.mac(&payload).ct_eq(&mac)) {
            return Err(invalid_token());
        }
        serde_json::from_slice(&payload).map_err(|_| invalid_token())
    }
}

/// A computed QueryVectors result being paged through.
pub struct Cursor {
    pub fingerprint: u64,
    pub hits: Arc<Vec<Hit>>,
    pub with_metadata: bool,
    expires: Instant,
}

#[derive(Default)]
pub struct CursorCache {
    cursors: Mutex<HashMap<u64, Cursor>>,
}

impl CursorCache {
    /// Stores a result and returns its cursor id.
    pub fn insert(&self, fingerprint: u64, hits: Arc<Vec<Hit>>, with_metadata: bool) -> u64 {
        let now = Instant::now();
        let mut cursors = self.cursors.lock();
        cursors.retain(|_, c| c.expires > now);
        while cursors.len() >= MAX_CURSORS {
            let Some(oldest) = cursors
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(id, _)| *id)
            else {
                break;
            };
            cursors.remove(&oldest);
        }
        let id: u64 = rand::random();
        cursors.insert(
            id,
            Cursor {
                fingerprint,
                hits,
                with_metadata,
                expires: now + CURSOR_TTL,
            },
        );
        id
    }

    /// The live cursor `id`, if it has not expired or been evicted.
    pub fn get(&self, id: u64) -> Option<(u64, Arc<Vec<Hit>>, bool)> {
        let cursors = self.cursors.lock();
        cursors
            .get(&id)
            .filter(|c| c.expires > Instant::now())
            .map(|c| (c.fingerprint, c.hits.clone(), c.with_metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Payload {
        after: String,
    }

    #[test]
    fn tokens_round_trip_and_reject_forgery() {
        let signer = TokenSigner::with_key([7; 32]);
        let token = signer.sign(&Payload { after: "k1".into() });
        assert_eq!(
            signer.verify::<Payload>(&token).expect("valid"),
            Payload { after: "k1".into() }
        );
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"after":"k9"}"#);
        let mac = token.split_once('.').expect("dot").1;
        assert!(signer
            .verify::<Payload>(&format!("{forged_payload}.{mac}"))
            .is_err());
        assert!(signer.verify::<Payload>("garbage").is_err());
        assert!(TokenSigner::with_key([8; 32])
            .verify::<Payload>(&token)
            .is_err());
    }

    #[test]
    fn cursor_cache_is_bounded() {
        let cache = CursorCache::default();
        let ids: Vec<u64> = (0..MAX_CURSORS + 10)
            .map(|i| cache.insert(i as u64, Arc::new(Vec::new()), false))
            .collect();
        assert!(cache.cursors.lock().len() <= MAX_CURSORS);
        assert!(cache.get(*ids.last().expect("some")).is_some());
        // Only the oldest go: every cursor of the last MAX_CURSORS - 1 inserts is still there.
        for (i, id) in ids.iter().enumerate().skip(ids.len() + 1 - MAX_CURSORS) {
            assert_eq!(cache.get(*id).map(|c| c.0), Some(i as u64), "cursor {i}");
        }
    }

    #[test]
    fn a_cursor_gives_back_what_was_stored_under_it() {
        let cache = CursorCache::default();
        let hit = |key: &str| Hit {
            key: key.into(),
            distance: 0.5,
            metadata: None,
        };
        let a = cache.insert(41, Arc::new(vec![hit("a")]), true);
        let b = cache.insert(42, Arc::new(vec![hit("b"), hit("c")]), false);
        let (fingerprint, hits, with_metadata) = cache.get(a).expect("a");
        assert_eq!((fingerprint, with_metadata), (41, true));
        assert_eq!(
            hits.iter().map(|h| h.key.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        let (fingerprint, hits, with_metadata) = cache.get(b).expect("b");
        assert_eq!((fingerprint, with_metadata), (42, false));
        assert_eq!(hits.len(), 2);
        let unknown = (0u64..3)
            .find(|x| *x != a && *x != b)
            .expect("one of three");
        assert!(cache.get(unknown).is_none());
        // The README promises pages for five minutes.
        assert_eq!(CURSOR_TTL, Duration::from_secs(300));
    }
}
