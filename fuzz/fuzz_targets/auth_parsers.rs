//! The text parsers of the request path that take attacker-controlled strings: the SigV4
//! `Authorization` header and `X-Amz-Date`, IAM policy documents (PutVectorBucketPolicy and the
//! users file), and signed pagination tokens.
//!
//! Oracles: no panic; a parsed policy parses again from its own JSON; a token verifies only if
//! it is exactly what the signer signed (a forged or mangled token never verifies).

#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_coordinator::auth::policy::Policy;
use quiver_coordinator::auth::sigv4::{parse_amz_date, parse_authorization};
use quiver_coordinator::tokens::TokenSigner;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    match which % 4 {
        0 => {
            let _ = parse_authorization(&text);
        }
        1 => {
            let _ = parse_amz_date(&text);
        }
        2 => {
            let _ = Policy::parse(&text, which & 0x80 != 0);
        }
        _ => {
            let signer = TokenSigner::with_key([7; 32]);
            if let Ok(value) = signer.verify::<serde_json::Value>(&text) {
                // Only the signer's own tokens verify: the same payload signs to the same token.
                assert_eq!(signer.sign(&value), text, "a token nobody signed verified");
            }
        }
    }
});
