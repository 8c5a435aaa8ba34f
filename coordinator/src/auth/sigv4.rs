//! AWS Signature Version 4 verification (header form), as AWS services do it for `s3vectors`.
//!
//! We rebuild the canonical request from what arrived (method, path encoded once more — the
//! non-S3 rule —, sorted query, the headers the client listed as signed, the SHA-256 of the body),
//! derive the signing key with `aws-sigv4`, and compare signatures in constant time. The request
//! time must be within the clock-skew window, and the credential scope must name our region and
//! service.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const SERVICE: &str = "s3vectors";
/// Default accepted difference between the request time and ours.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request failed authentication. Messages are for honest clients; none reveals a secret
/// or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Malformed(String),
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error("Signature expired: {request_time} is now earlier than {earliest} ({now} - {skew_minutes} min.)")]
    Expired {
        request_time: String,
        earliest: String,
        now: String,
        skew_minutes: u64,
    },
    #[error("Signature not yet current: {request_time} is still later than {latest} ({now} + {skew_minutes} min.)")]
    NotYetValid {
        request_time: String,
        latest: String,
        now: String,
        skew_minutes: u64,
    },
    #[error("Credential should be scoped to a valid region, not '{0}'.")]
    WrongRegion(String),
    #[error("Credential should be scoped to correct service: '{SERVICE}'.")]
    WrongService,
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    SignatureMismatch,
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

fn malformed(message: impl Into<String>) -> AuthError {
    AuthError::Malformed(message.into())
}

pub fn parse_authorization(value: &str) -> Result<Authorization, AuthError> {
    let rest = value.strip_prefix(ALGORITHM).ok_or_else(|| {
        malformed(format!(
            "Unsupported authorization type; only {ALGORITHM} is accepted"
        ))
    })?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        } else if !part.is_empty() {
            return Err(malformed("Authorization header has an unknown component"));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(malformed(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope.as_slice() else {
        return Err(malformed(
            "Credential must be <key>/<date>/<region>/<service>/aws4_request",
        ));
    };
    if *terminator != "aws4_request" || access_key_id.is_empty() {
        return Err(malformed(
            "Credential must be <key>/<date>/<region>/<service>/aws4_request",
        ));
    }
    let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
    {
        return Err(malformed(
            "SignedHeaders must be lowercase names separated by ';'",
        ));
    }
    if signature.len() != 64 || !signature.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(malformed("Signature must be 64 hexadecimal characters"));
    }
    Ok(Authorization {
        access_key_id: (*access_key_id).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYYMMDDTHHMMSSZ` into seconds since the Unix epoch.
pub fn parse_amz_date(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = value.get(range)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn format_amz_date(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// Characters AWS leaves unencoded: A-Z a-z 0-9 - _ . ~
const AWS_URI: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, AWS_URI).to_string()
}

/// The canonical URI of a non-S3 service: every segment of the path as received (already
/// percent-encoded by the client) is encoded once more.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

pub fn canonical_query(query: Option<&str>) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', "%20"))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a verified request proved: who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
}

/// Most signing keys a [`SigningKeys`] holds; when full it starts again empty. Only keys of
/// known access keys are kept, at most two dates each inside the clock-skew window, so this is
/// reached only with thousands of users.
const MAX_SIGNING_KEYS: usize = 4096;

/// Signing keys already derived. A key depends only on the secret, the credential date, the
/// region and the service, so one derivation (four HMAC-SHA256s, about a third of verifying a
/// small request) serves every request of that access key and day.
#[derive(Default)]
pub struct SigningKeys {
    /// `access key id/date/region` → the secret the key was derived from, and the key.
    keys: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

impl SigningKeys {
    /// The signing key for this scope, derived once per secret.
    fn get(&self, auth: &Authorization, secret: &str, signing_time: SystemTime) -> Vec<u8> {
        let scope = format!("{}/{}/{}", auth.access_key_id, auth.date, auth.region);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_secret, key)) = keys.get(&scope) {
            if cached_secret == secret {
                return key.clone();
            }
        }
        let key =
            aws_sigv4::sign::v4::generate_signing_key(secret, signing_time, &auth.region, SERVICE)
                .as_ref()
                .to_vec();
        if keys.len() >= MAX_SIGNING_KEYS {
            keys.clear();
        }
        keys.insert(scope, (secret.to_owned(), key.clone()));
        key
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

pub struct Verifier<'a> {
    pub region: &'a str,
    pub clock_skew: Duration,
    pub keys: &'a SigningKeys,
}

impl Verifier<'_> {
    /// Verifies a request. `secret_for` looks up the secret of an access key id.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
        secret_for: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Verified, AuthError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| malformed("Authorization header is not ASCII"))?;
        let auth = parse_authorization(header)?;
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| malformed("Authorization requires an X-Amz-Date header"))?;
        let request_time = parse_amz_date(amz_date)
            .ok_or_else(|| malformed("X-Amz-Date must be in the form YYYYMMDD'T'HHMMSS'Z'"))?;
        if amz_date.get(..8) != Some(auth.date.as_str()) {
            return Err(malformed("Credential date does not match X-Amz-Date"));
        }
        if auth.service != SERVICE {
            return Err(AuthError::WrongService);
        }
        if auth.region != self.region {
            return Err(AuthError::WrongRegion(auth.region));
        }
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let skew = self.clock_skew.as_secs() as i64;
        if request_time < now_secs - skew {
            return Err(AuthError::Expired {
                request_time: amz_date.to_owned(),
                earliest: format_amz_date(now_secs - skew),
                now: format_amz_date(now_secs),
                skew_minutes: (skew / 60) as u64,
            });
        }
        if request_time > now_secs + skew {
            return Err(AuthError::NotYetValid {
                request_time: amz_date.to_owned(),
                latest: format_amz_date(now_secs + skew),
                now: format_amz_date(now_secs),
                skew_minutes: (skew / 60) as u64,
            });
        }
        for required in ["host", "x-amz-date"] {
            if !auth.signed_headers.iter().any(|h| h == required) {
                return Err(malformed(format!("'{required}' must be a signed header")));
            }
        }
        let body_hash = hex::encode(Sha256::digest(body));
        if let Some(claimed) = headers.get("x-amz-content-sha256") {
            // A claimed payload hash must be the real one; unsigned payloads are not accepted.
            if claimed.as_bytes() != body_hash.as_bytes() {
                return Err(AuthError::SignatureMismatch);
            }
        }
        let mut canonical_headers = String::new();
        let mut sorted = auth.signed_headers.clone();
        sorted.sort();
        sorted.dedup();
        for name in &sorted {
            let values: Vec<&str> = headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if values.is_empty() {
                return Err(malformed(format!("Signed header '{name}' is missing")));
            }
            let joined = values
                .iter()
                .map(|v| canonical_header_value(v))
                .collect::<Vec<_>>()
                .join(",");
            canonical_headers.push_str(&format!("{name}:{joined}\n"));
        }
        let signed_headers = sorted.join(";");
        let canonical_request = format!(
            "{method}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{body_hash}",
            canonical_uri(uri.path()),
            canonical_query(uri.query()),
        );
        let scope = format!("{}/{}/{SERVICE}/aws4_request", auth.date, auth.region);
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let secret = secret_for(&auth.access_key_id).ok_or(AuthError::UnknownAccessKey)?;
        let signing_time = UNIX_EPOCH + Duration::from_secs(request_time.max(0) as u64);
        let key = self.keys.get(&auth, &secret, signing_time);
        let expected = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(Verified {
                access_key_id: auth.access_key_id,
            })
        } else {
            Err(AuthError::SignatureMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for s in [
            "19700101T000000Z",
            "20250715T123456Z",
            "20240229T235959Z",
            "21000301T000000Z",
        ] {
            let epoch = parse_amz_date(s).expect(s);
            assert_eq!(format_amz_date(epoch), s);
        }
        assert_eq!(parse_amz_date("20250715T123456Z"), Some(1_752_582_896));
        assert_eq!(parse_amz_date("2025-07-15T12:34:56Z"), None);
        assert_eq!(parse_amz_date("20251315T123456Z"), None);
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_uri("/PutVectors"), "/PutVectors");
        assert_eq!(
            canonical_uri("/tags/arn%3Aaws%3As3vectors%3Aus-east-1%3A123456789012%3Abucket%2Fb"),
            "/tags/arn%253Aaws%253As3vectors%253Aus-east-1%253A123456789012%253Abucket%252Fb"
        );
        assert_eq!(
            canonical_query(Some("tagKeys=b&tagKeys=a&x=%20y")),
            "tagKeys=a&tagKeys=b&x=%20y"
        );
        assert_eq!(canonical_query(None), "");
    }

    /// The AWS SigV4 test suite's "get-vanilla" case, with our service name swapped in, signed
    /// by an independent implementation (the `aws-sigv4` crate's request signer).
    #[test]
    fn verifies_what_the_aws_signer_produces_and_rejects_tampering() {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        use aws_sigv4::sign::v4::SigningParams;

        let now = UNIX_EPOCH + Duration::from_secs(1_752_582_896);
        let identity = aws_credential_identity();
        let body = br#"{"vectorBucketName":"b1"}"#;
        let settings = SigningSettings::default();
        let params = SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3vectors")
            .time(now)
            .settings(settings)
            .build()
            .expect("params")
            .into();
        let request = SignableRequest::new(
            "POST",
            "http://127.0.0.1:8277/GetVectorBucket",
            [
                ("host", "127.0.0.1:8277"),
                ("content-type", "application/json"),
            ]
            .into_iter(),
            SignableBody::Bytes(body),
        )
        .expect("signable");
        let (instructions, _) = sign(request, &params).expect("sign").into_parts();
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:8277".parse().expect("h"));
        headers.insert("content-type", "application/json".parse().expect("h"));
        for (name, value) in instructions.headers() {
            headers.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        let uri: Uri = "/GetVectorBucket".parse().expect("uri");
        let verifier = Verifier {
            region: "us-east-1",
            clock_skew: DEFAULT_CLOCK_SKEW,
            keys: &SigningKeys::default(),
        };
        let secret = |key: &str| (key == "AKIDEXAMPLE").then(|| "secret".to_owned());
        verifier
            .verify(&Method::POST, &uri, &headers, body, now, secret)
            .expect("valid signature");
        // Tampered body, path, method, header, time, key, secret: all rejected.
        assert_eq!(
            verifier.verify(&Method::POST, &uri, &headers, b"{}", now, secret),
            Err(AuthError::SignatureMismatch)
        );
        let other: Uri = "/DeleteVectorBucket".parse().expect("uri");
        assert!(verifier
            .verify(&Method::POST, &other, &headers, body, now, secret)
            .is_err());
        assert!(verifier
            .verify(&Method::PUT, &uri, &headers, body, now, secret)
            .is_err());
        let mut changed = headers.clone();
        changed.insert("content-type", "text/plain".parse().expect("h"));
        assert!(verifier
            .verify(&Method::POST, &uri, &changed, body, now, secret)
            .is_err());
        let later = now + Duration::from_secs(16 * 60);
        assert!(matches!(
            verifier.verify(&Method::POST, &uri, &headers, body, later, secret),
            Err(AuthError::Expired { .. })
        ));
        assert_eq!(
            verifier.verify(&Method::POST, &uri, &headers, body, now, |_| None),
            Err(AuthError::UnknownAccessKey)
        );
        assert_eq!(
            verifier.verify(&Method::POST, &uri, &headers, body, now, |_| Some(
                "wrong".into()
            )),
            Err(AuthError::SignatureMismatch)
        );
        let west = Verifier {
            region: "us-west-2",
            clock_skew: DEFAULT_CLOCK_SKEW,
            keys: &SigningKeys::default(),
        };
        assert!(matches!(
            west.verify(&Method::POST, &uri, &headers, body, now, secret),
            Err(AuthError::WrongRegion(_))
        ));
        let mut unsigned = headers.clone();
        unsigned.remove(axum::http::header::AUTHORIZATION);
        assert_eq!(
            verifier.verify(&Method::POST, &uri, &unsigned, body, now, secret),
            Err(AuthError::Missing)
        );
    }

    fn is_leap(year: i64) -> bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    fn days_in_month(year: i64, month: i64) -> i64 {
        match month {
            2 if is_leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Every calendar day from 1970 to 2369 in order, counted one by one: the oracle for the
    /// closed-form conversions (the span covers every leap rule: 2000 is a leap year, 2100,
    /// 2200 and 2300 are not).
    #[test]
    fn every_day_of_four_centuries_converts_both_ways() {
        let mut days_since_epoch = 0;
        for year in 1970..2370 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    let text = format!("{year:04}{month:02}{day:02}T000000Z");
                    let epoch = parse_amz_date(&text).expect("a valid date");
                    assert_eq!(epoch, days_since_epoch * 86_400, "{text}");
                    assert_eq!(format_amz_date(epoch), text);
                    days_since_epoch += 1;
                }
            }
        }
    }

    #[test]
    fn every_second_of_a_day_converts_both_ways() {
        let base = parse_amz_date("20241231T000000Z").expect("valid");
        for second in (0..86_400).step_by(7).chain([86_399]) {
            let (h, m, s) = (second / 3600, second % 3600 / 60, second % 60);
            let text = format!("20241231T{h:02}{m:02}{s:02}Z");
            assert_eq!(parse_amz_date(&text), Some(base + second), "{text}");
            assert_eq!(format_amz_date(base + second), text);
        }
        assert_eq!(format_amz_date(base + 86_400), "20250101T000000Z");
        assert_eq!(format_amz_date(base - 1), "20241230T235959Z");
    }

    #[test]
    fn amz_dates_out_of_range_or_shape_are_refused() {
        assert!(
            parse_amz_date("20250715T235960Z").is_some(),
            "a leap second"
        );
        for bad in [
            "20250015T123456Z", // month 0
            "20251315T123456Z", // month 13
            "20250700T123456Z", // day 0
            "20250732T123456Z", // day 32
            "20250715T243456Z", // hour 24
            "20250715T126056Z", // minute 60
            "20250715T123461Z", // second 61
            "20250715 123456Z",
            "20250715T123456 ",
            "20250715T123456",
            "20250715T123456ZZ",
            "2025071+T123456Z",
            "+0250715T123456Z",
            "20250715T+23456Z",
            "2025-715T123456Z",
            "",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad:?}");
        }
    }

    const GOOD_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKID/20250715/us-east-1/s3vectors/aws4_request, SignedHeaders=host;x-amz-date, Signature=";

    fn signature_hex() -> String {
        "0123456789abcdef".repeat(4)
    }

    #[test]
    fn an_authorization_header_is_parsed_into_its_parts() {
        let header = format!("{GOOD_AUTH}{}", signature_hex().to_uppercase());
        let auth = parse_authorization(&header).expect("valid");
        assert_eq!(
            auth,
            Authorization {
                access_key_id: "AKID".into(),
                date: "20250715".into(),
                region: "us-east-1".into(),
                service: "s3vectors".into(),
                signed_headers: vec!["host".into(), "x-amz-date".into()],
                signature: signature_hex(),
            }
        );
        // Components in any order, without spaces, a trailing comma.
        let reordered = format!(
            "AWS4-HMAC-SHA256 Signature={},SignedHeaders=host,Credential=K/d/r/s/aws4_request,",
            signature_hex()
        );
        let auth = parse_authorization(&reordered).expect("valid");
        assert_eq!(auth.access_key_id, "K");
        assert_eq!(auth.signed_headers, vec!["host".to_owned()]);
    }

    #[test]
    fn each_malformed_authorization_header_is_refused_with_its_reason() {
        let sig = signature_hex();
        let cases = [
            (format!("AWS4-HMAC-SHA512 Credential=K/d/r/s/aws4_request, SignedHeaders=host, Signature={sig}"), "Unsupported authorization type"),
            (format!("{GOOD_AUTH}{sig}, Extra=1"), "unknown component"),
            ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=x".to_owned(), "requires 'Credential'"),
            (format!("AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, Signature={sig}"), "requires 'Credential'"),
            ("AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host".to_owned(), "requires 'Credential'"),
            (format!("AWS4-HMAC-SHA256 Credential=K/d/r/s, SignedHeaders=host, Signature={sig}"), "Credential must be"),
            (format!("AWS4-HMAC-SHA256 Credential=K/d/r/s/x/aws4_request, SignedHeaders=host, Signature={sig}"), "Credential must be"),
            (format!("AWS4-HMAC-SHA256 Credential=K/d/r/s/aws5_request, SignedHeaders=host, Signature={sig}"), "Credential must be"),
            (format!("AWS4-HMAC-SHA256 Credential=/d/r/s/aws4_request, SignedHeaders=host, Signature={sig}"), "Credential must be"),
            (format!("AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=Host, Signature={sig}"), "SignedHeaders must be"),
            (format!("AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host;;x, Signature={sig}"), "SignedHeaders must be"),
            ("AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host, Signature=abc".to_owned(), "64 hexadecimal"),
            (format!("AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host, Signature={sig}0"), "64 hexadecimal"),
            (format!("AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host, Signature=g{}", &sig[1..]), "64 hexadecimal"),
        ];
        for (header, reason) in cases {
            match parse_authorization(&header) {
                Err(AuthError::Malformed(message)) => {
                    assert!(message.contains(reason), "{header}: {message}")
                }
                other => panic!("{header}: {other:?}"),
            }
        }
    }

    #[test]
    fn canonical_uri_and_query_edge_cases() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a b/c~d"), "/a%20b/c~d");
        assert_eq!(canonical_query(Some("")), "");
        // A member without '=' has an empty value; '+' is a space; empty pairs are dropped;
        // pairs sort by name, then value.
        assert_eq!(
            canonical_query(Some("b=2&&a&c=x+y&b=1")),
            "a=&b=1&b=2&c=x%20y"
        );
        assert_eq!(canonical_query(Some("k=%7e%2F")), "k=~%2F");
        assert_eq!(canonical_header_value("  a   b\t c  "), "a b c");
    }

    /// A request signed by the `aws-sigv4` crate at `time` with `extra` headers besides host:
    /// its headers and URI.
    fn signed_request(time: SystemTime, extra: &[(&str, &str)], body: &[u8]) -> HeaderMap {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        use aws_sigv4::sign::v4::SigningParams;

        let identity = aws_credential_identity();
        let params = SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3vectors")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .expect("params")
            .into();
        let mut pairs = vec![("host", "127.0.0.1:8277")];
        pairs.extend_from_slice(extra);
        let request = SignableRequest::new(
            "POST",
            "http://127.0.0.1:8277/ListIndexes?b=2&a=1",
            pairs.iter().copied(),
            SignableBody::Bytes(body),
        )
        .expect("signable");
        let (instructions, _) = sign(request, &params).expect("sign").into_parts();
        let mut headers = HeaderMap::new();
        for (name, value) in pairs.iter().copied().chain(instructions.headers()) {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        headers
    }

    #[test]
    fn signing_keys_are_derived_once_per_scope_and_secret() {
        let auth = |id: &str, date: &str| Authorization {
            access_key_id: id.to_owned(),
            date: date.to_owned(),
            region: "us-east-1".to_owned(),
            service: SERVICE.to_owned(),
            signed_headers: Vec::new(),
            signature: String::new(),
        };
        let derive = |secret: &str, time: SystemTime| {
            aws_sigv4::sign::v4::generate_signing_key(secret, time, "us-east-1", SERVICE)
                .as_ref()
                .to_vec()
        };
        let day = UNIX_EPOCH + Duration::from_secs(1_752_582_896); // 2025-07-15T12:34:56Z
        let next_day = day + Duration::from_secs(86_400);
        let keys = SigningKeys::default();
        let today = auth("AKID", "20250715");
        assert_eq!(keys.get(&today, "s1", day), derive("s1", day));
        assert_eq!(keys.get(&today, "s1", day), derive("s1", day));
        assert_eq!(keys.len(), 1);
        // A new secret for the same access key and day is not served the old key.
        assert_eq!(keys.get(&today, "s2", day), derive("s2", day));
        assert_eq!(keys.len(), 1);
        let tomorrow = auth("AKID", "20250716");
        assert_eq!(keys.get(&tomorrow, "s2", next_day), derive("s2", next_day));
        assert_ne!(derive("s2", day), derive("s2", next_day));
        assert_eq!(keys.len(), 2);

        // Bounded: full at MAX_SIGNING_KEYS, the next one starts it again.
        let keys = SigningKeys::default();
        for i in 0..MAX_SIGNING_KEYS {
            keys.get(&auth(&format!("K{i}"), "20250715"), "s", day);
        }
        assert_eq!(keys.len(), MAX_SIGNING_KEYS);
        assert_eq!(keys.get(&today, "s1", day), derive("s1", day));
        assert_eq!(keys.len(), 1);
    }

    fn verify_at(headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<Verified, AuthError> {
        let uri: Uri = "/ListIndexes?a=1&b=2".parse().expect("uri");
        Verifier {
            region: "us-east-1",
            clock_skew: DEFAULT_CLOCK_SKEW,
            keys: &SigningKeys::default(),
        }
        .verify(&Method::POST, &uri, headers, body, now, |key| {
            (key == "AKIDEXAMPLE").then(|| "secret".to_owned())
        })
    }

    fn with_authorization(headers: &HeaderMap, edit: impl Fn(&str) -> String) -> HeaderMap {
        let mut headers = headers.clone();
        let old = headers[axum::http::header::AUTHORIZATION]
            .to_str()
            .expect("ascii")
            .to_owned();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            edit(&old).parse().expect("value"),
        );
        headers
    }

    #[test]
    fn the_clock_skew_window_is_inclusive_at_both_ends() {
        let signed_at = UNIX_EPOCH + Duration::from_secs(1_752_582_896);
        let headers = signed_request(signed_at, &[], b"{}");
        let skew = DEFAULT_CLOCK_SKEW;
        let second = Duration::from_secs(1);
        assert!(verify_at(&headers, b"{}", signed_at + skew).is_ok());
        assert!(verify_at(&headers, b"{}", signed_at - skew).is_ok());
        assert_eq!(
            verify_at(&headers, b"{}", signed_at + skew + second),
            Err(AuthError::Expired {
                request_time: "20250715T123456Z".into(),
                earliest: "20250715T123457Z".into(),
                now: "20250715T124957Z".into(),
                skew_minutes: 15,
            })
        );
        assert_eq!(
            verify_at(&headers, b"{}", signed_at - skew - second),
            Err(AuthError::NotYetValid {
                request_time: "20250715T123456Z".into(),
                latest: "20250715T123455Z".into(),
                now: "20250715T121955Z".into(),
                skew_minutes: 15,
            })
        );
    }

    #[test]
    fn header_values_are_canonicalised_as_the_signer_does() {
        let now = UNIX_EPOCH + Duration::from_secs(1_752_582_896);
        // Runs of spaces folded, a repeated header's values joined with commas.
        let extra = [
            ("x-amz-meta", "a   b  c"),
            ("x-amz-multi", "one"),
            ("x-amz-multi", "two"),
        ];
        let headers = signed_request(now, &extra, b"{}");
        assert!(verify_at(&headers, b"{}", now).is_ok());
        let mut one_dropped = headers.clone();
        one_dropped.remove("x-amz-multi");
        one_dropped.insert("x-amz-multi", "one".parse().expect("value"));
        assert_eq!(
            verify_at(&one_dropped, b"{}", now),
            Err(AuthError::SignatureMismatch)
        );
        // SignedHeaders in another order, or naming a header twice, is the same set.
        let reordered = with_authorization(&headers, |auth| {
            auth.replace("host;", "x-amz-multi;host;host;")
        });
        assert!(verify_at(&reordered, b"{}", now).is_ok());
    }

    #[test]
    fn what_is_checked_before_the_signature() {
        let now = UNIX_EPOCH + Duration::from_secs(1_752_582_896);
        let headers = signed_request(now, &[], b"{}");
        let malformed_with =
            |headers: &HeaderMap, reason: &str| match verify_at(headers, b"{}", now) {
                Err(AuthError::Malformed(message)) => {
                    assert!(message.contains(reason), "{message}")
                }
                other => panic!("{reason}: {other:?}"),
            };
        let mut no_date = headers.clone();
        no_date.remove("x-amz-date");
        malformed_with(&no_date, "requires an X-Amz-Date header");
        let mut bad_date = headers.clone();
        bad_date.insert("x-amz-date", "2025-07-15".parse().expect("value"));
        malformed_with(&bad_date, "X-Amz-Date must be in the form");
        let other_day =
            with_authorization(&headers, |auth| auth.replace("/20250715/", "/20250716/"));
        malformed_with(&other_day, "Credential date does not match X-Amz-Date");
        let host_unsigned = with_authorization(&headers, |auth| auth.replace("host;", ""));
        malformed_with(&host_unsigned, "'host' must be a signed header");
        let date_unsigned = with_authorization(&headers, |auth| auth.replace(";x-amz-date", ""));
        malformed_with(&date_unsigned, "'x-amz-date' must be a signed header");
        let phantom = with_authorization(&headers, |auth| {
            auth.replace("SignedHeaders=", "SignedHeaders=content-type;")
        });
        malformed_with(&phantom, "Signed header 'content-type' is missing");
        let service = with_authorization(&headers, |auth| auth.replace("/s3vectors/", "/s3/"));
        assert_eq!(
            verify_at(&service, b"{}", now),
            Err(AuthError::WrongService)
        );
        let region =
            with_authorization(&headers, |auth| auth.replace("/us-east-1/", "/eu-west-1/"));
        assert_eq!(
            verify_at(&region, b"{}", now),
            Err(AuthError::WrongRegion("eu-west-1".into()))
        );
    }

    #[test]
    fn a_claimed_payload_hash_must_be_the_bodys() {
        let now = UNIX_EPOCH + Duration::from_secs(1_752_582_896);
        let body = br#"{"vectorBucketName":"b"}"#;
        let headers = signed_request(now, &[], body);
        // The claim is checked even when it is not a signed header.
        let mut honest = headers.clone();
        honest.insert(
            "x-amz-content-sha256",
            hex::encode(Sha256::digest(body)).parse().expect("value"),
        );
        assert!(verify_at(&honest, body, now).is_ok());
        let mut lying = headers.clone();
        lying.insert(
            "x-amz-content-sha256",
            "UNSIGNED-PAYLOAD".parse().expect("value"),
        );
        assert_eq!(
            verify_at(&lying, body, now),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            verify_at(&headers, body, now).map(|v| v.access_key_id),
            Ok("AKIDEXAMPLE".to_owned())
        );
    }

    fn aws_credential_identity() -> aws_smithy_runtime_api::client::identity::Identity {
        aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test").into()
    }
}
