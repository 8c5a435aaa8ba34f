//! Arbitrary HTTP requests as they could reach the router from the network: method, path and
//! query, headers (a forged or mangled `Authorization` among them) and body, unsigned.
//!
//! Input: byte 0 picks the method, then the path up to `\n`, then `name: value` header lines up
//! to an empty line, then the body. Requests hyper itself would refuse (an invalid URI or
//! header) are skipped. Oracles: no panic, no 5xx, nothing but `/health`, `/ready` and
//! `/metrics` succeeds without a signature, and a refused request changes nothing.

#![no_main]

use std::sync::Mutex;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;
use quiver_fuzz::{runtime, seeded_harness, Harness};

const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::PATCH,
];

static STATE: Mutex<Option<Harness>> = Mutex::new(None);

fn request(data: &[u8]) -> Option<Request<Body>> {
    let (&pick, rest) = data.split_first()?;
    let mut lines = rest.splitn(2, |&b| b == b'\n');
    let path = lines.next()?;
    let mut rest = lines.next().unwrap_or_default();
    let mut path = String::from_utf8_lossy(path).into_owned();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let mut builder = Request::builder()
        .method(METHODS[usize::from(pick) % METHODS.len()].clone())
        .uri(path);
    loop {
        let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &[][..]),
        };
        rest = tail;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            builder = builder.header(name, value);
        }
    }
    builder.body(Body::from(rest.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else {
        return;
    };
    let path = request.uri().path().to_owned();
    // Seeds come from the test suites' signed requests; a replayed signature (within its 15
    // minutes) may succeed, a request without one never may.
    let signed = request.headers().contains_key("authorization")
        || request
            .uri()
            .query()
            .is_some_and(|q| q.contains("X-Amz-Signature"));
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        if state.is_none() {
            *state = Some(seeded_harness().await);
        }
        let Some(harness) = state.as_ref() else {
            return;
        };
        let before = harness.snapshot();
        let reply = harness.send(request).await;
        assert!(reply.status < 500, "{path}: {}", reply.status);
        if (200..300).contains(&reply.status) {
            assert!(
                signed || matches!(path.as_str(), "/health" | "/ready" | "/metrics"),
                "{path} answered {} without a signature",
                reply.status
            );
        } else {
            harness.assert_unchanged(&before);
        }
    });
});
