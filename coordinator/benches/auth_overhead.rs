//! What SigV4 verification costs per request, next to what the server does with the body anyway.
//!
//! For two realistic requests, signed with the `aws-sigv4` crate exactly as an SDK would:
//! * PutVectors with 500 vectors × 128 float32 (random doubles printed the way botocore writes
//!   them, plus a little metadata) — about 1.3 MB of JSON;
//! * QueryVectors with one 128-float query vector (topK 10, returnDistance) — about 2.5 KB;
//!
//! it measures, single-threaded, requests per second of
//! * `verify`: `Verifier::verify` (parse Authorization, canonical request, SHA-256 of the body,
//!   the signing key (derived on the first request of the day, then cached, as in the server),
//!   HMAC, constant-time compare);
//! * `sha256`: only the SHA-256 of the body (the part of `verify` that grows with the body);
//! * `parse`: only `serde_json` into the request type the handler deserializes into
//!   (`api::model`).
//!
//! Run: `cargo bench -p quiver-coordinator --bench auth_overhead` (about 15 s).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use quiver_coordinator::api::model::{PutVectorsIn, QueryIn};
use quiver_coordinator::auth::sigv4::{SigningKeys, Verifier, DEFAULT_CLOCK_SKEW};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const HOST: &str = "127.0.0.1:8277";
const ACCESS_KEY: &str = "AKIAQUIVERBENCH0001";
const SECRET: &str = "bench-secret-access-key-0123456789";
const REGION: &str = "us-east-1";
const WARMUP: Duration = Duration::from_millis(300);
const MEASURE: Duration = Duration::from_millis(1800);

/// Random doubles in [-1, 1), printed like Python's repr (shortest round-trip, ~17 digits).
fn random_vector(rng: &mut impl Rng, dimension: usize) -> Vec<f64> {
    (0..dimension).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn put_vectors_body(rng: &mut impl Rng) -> Vec<u8> {
    let vectors: Vec<serde_json::Value> = (0..500)
        .map(|i| {
            let genre = ["drama", "comedy", "news"][i % 3];
            serde_json::json!({
                "key": format!("doc-{i:06}"),
                "data": {"float32": random_vector(rng, 128)},
                "metadata": {"genre": genre, "year": 1990 + (i % 35)},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "vectorBucketName": "media",
        "indexName": "movies",
        "vectors": vectors,
    }))
    .expect("serializable")
}

fn query_body(rng: &mut impl Rng) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "vectorBucketName": "media",
        "indexName": "movies",
        "topK": 10,
        "queryVector": {"float32": random_vector(rng, 128)},
        "returnDistance": true,
    }))
    .expect("serializable")
}

/// A request as the server receives it: method, URI, headers (signed by aws-sigv4), body.
struct Signed {
    name: &'static str,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn signed(name: &'static str, operation: &str, body: Vec<u8>, now: SystemTime) -> Signed {
    let identity: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(ACCESS_KEY, SECRET, None, None, "bench").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3vectors")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let url = format!("http://{HOST}/{operation}");
    let request = SignableRequest::new(
        "POST",
        &url,
        [("host", HOST), ("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(&body),
    )
    .expect("signable request");
    let (instructions, _) = sign(request, &params).expect("sign").into_parts();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static(HOST));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "content-length",
        HeaderValue::from_str(&body.len().to_string()).expect("header"),
    );
    for (name, value) in instructions.headers() {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    Signed {
        name,
        uri: format!("/{operation}").parse().expect("uri"),
        headers,
        body,
    }
}

/// Runs `f` repeatedly for [`MEASURE`] (after [`WARMUP`]) and returns calls per second.
fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    while start.elapsed() < WARMUP {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u64;
    let mut batch = 1u64;
    loop {
        for _ in 0..batch {
            f();
        }
        calls += batch;
        let elapsed = start.elapsed();
        if elapsed >= MEASURE {
            return calls as f64 / elapsed.as_secs_f64();
        }
        // Check the clock about every millisecond at most.
        if elapsed < Duration::from_millis(1) {
            batch *= 2;
        }
    }
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

fn main() {
    let now = UNIX_EPOCH + Duration::from_secs(1_752_582_896);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let requests = [
        signed(
            "PutVectors 500x128",
            "PutVectors",
            put_vectors_body(&mut rng),
            now,
        ),
        signed(
            "QueryVectors 128-d",
            "QueryVectors",
            query_body(&mut rng),
            now,
        ),
    ];
    let verifier = Verifier {
        region: REGION,
        clock_skew: DEFAULT_CLOCK_SKEW,
        keys: &SigningKeys::default(),
    };
    let secrets: HashMap<String, String> = [(ACCESS_KEY.to_owned(), SECRET.to_owned())].into();
    let secret_for = |key: &str| secrets.get(key).cloned();

    println!(
        "\n{:<20} {:>10} {:>14} {:>14} {:>14} {:>13}",
        "request", "body", "verify req/s", "sha256 req/s", "parse req/s", "verify/parse"
    );
    for request in &requests {
        // Sanity: the signature verifies, and the body parses, before anything is timed.
        let verified = verifier
            .verify(
                &Method::POST,
                &request.uri,
                &request.headers,
                &request.body,
                now,
                secret_for,
            )
            .expect("the signed request verifies");
        assert_eq!(verified.access_key_id, ACCESS_KEY);
        let parse = |body: &[u8]| -> usize {
            if request.name.starts_with("Put") {
                let input: PutVectorsIn = serde_json::from_slice(body).expect("parses");
                input.vectors.map_or(0, |v| v.len())
            } else {
                let input: QueryIn = serde_json::from_slice(body).expect("parses");
                input
                    .query_vector
                    .and_then(|v| v.float32)
                    .map_or(0, |v| v.len())
            }
        };
        assert!(parse(&request.body) > 0);

        let verify_rate = rate(|| {
            let result = verifier.verify(
                black_box(&Method::POST),
                black_box(&request.uri),
                black_box(&request.headers),
                black_box(&request.body),
                now,
                secret_for,
            );
            assert!(result.is_ok());
            black_box(result.ok());
        });
        let sha_rate = rate(|| {
            black_box(Sha256::digest(black_box(&request.body)));
        });
        let parse_rate = rate(|| {
            black_box(parse(black_box(&request.body)));
        });
        println!(
            "{:<20} {:>10} {:>14.0} {:>14.0} {:>14.0} {:>12.3}x",
            request.name,
            human_bytes(request.body.len()),
            verify_rate,
            sha_rate,
            parse_rate,
            // Time per verify over time per parse.
            parse_rate / verify_rate,
        );
    }
    println!("\nverify/parse = time of one Verifier::verify / time of one serde_json parse of the body (single thread).");
}
