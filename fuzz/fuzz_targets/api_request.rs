//! A signed request to any S3 Vectors operation with an arbitrary body, through the real router.
//!
//! Input: one byte picks the operation (of the botocore model's list), the rest is the body.
//! Oracles (besides not panicking): every non-200 carries `x-amzn-ErrorType` and a request id
//! (checked by the harness), a 5xx never answers a request the fakes can serve, and a refused
//! request (4xx) changes nothing: catalog, applied commands, node data, writes sent to the node.

#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use quiver_fuzz::harness::{model_operations, signed};
use quiver_fuzz::{runtime, seeded_harness, Harness};

/// Requests before the harness is rebuilt (successful creates make its state grow).
const REBUILD_EVERY: u32 = 5_000;

static STATE: Mutex<Option<(Harness, u32)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let operations = model_operations();
    let (name, method, uri) = &operations[usize::from(pick) % operations.len()];
    let path = match uri.strip_suffix("{resourceArn}") {
        // Tag routes: the ARN of the seeded index, percent-encoded as SDKs send it.
        Some(prefix) => format!(
            "{prefix}{}",
            percent_encoding::utf8_percent_encode(
                &format!(
                    "arn:aws:s3vectors:us-east-1:123456789012:bucket/{}/index/{}",
                    quiver_fuzz::BUCKET,
                    quiver_fuzz::INDEX
                ),
                percent_encoding::NON_ALPHANUMERIC
            )
        ),
        None => uri.clone(),
    };
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        if state.as_ref().is_none_or(|(_, n)| *n >= REBUILD_EVERY) {
            *state = Some((seeded_harness().await, 0));
        }
        let Some((harness, count)) = state.as_mut() else {
            return;
        };
        *count += 1;
        let before = harness.snapshot();
        let reply = harness
            .send(signed(
                quiver_fuzz::Who::Dev,
                method.clone(),
                &path,
                body.to_vec(),
            ))
            .await;
        assert!(
            reply.status < 500,
            "{name}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        if reply.status >= 400 {
            harness.assert_unchanged(&before);
        }
    });
});
