//! The real router and `AppState` over the fakes, driven with SigV4-signed HTTP requests through
//! `tower::ServiceExt::oneshot`; response checks (exact JSON shapes, S3 error types); snapshots
//! of everything a refused request must not change; the record of which operations succeeded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use axum::Router;
use parking_lot::Mutex;
use quiver_coordinator::api::{self, ApiConfig, AppState, ArnScope};
use quiver_coordinator::auth::{
    AuthConfig, Authenticator, UserConfig, DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY,
};
use quiver_coordinator::dataplane::DataPlane;
use quiver_coordinator::throttle::RateLimits;
use quiver_coordinator::tokens::TokenSigner;
use quiver_net::local::LocalTransport;
use quiver_net::tls::{Role, Roles};
use serde_json::Value;
use tower::ServiceExt;

use super::fakes::{CatalogView, FakeCluster, FakeNode, FakeShard, MemCatalog, NODE_ADDR};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";
const HOST: &str = "localhost:8277";

/// A second user: may list buckets, create buckets and indexes, list and query vectors, and
/// nothing else (in particular not GetVectors or TagResource, which some requests imply).
pub const LIMITED_KEY: &str = "limitedkey";
const LIMITED_SECRET: &str = "limited-secret-0123";
pub const LIMITED_ACTIONS: [&str; 5] = [
    "s3vectors:ListVectorBuckets",
    "s3vectors:CreateVectorBucket",
    "s3vectors:CreateIndex",
    "s3vectors:ListVectors",
    "s3vectors:QueryVectors",
];

/// `coordinator/tests/fixtures/s3vectors-operations.txt`: name, method, request URI.
const OPERATIONS: &str = include_str!("../fixtures/s3vectors-operations.txt");

pub fn model_operations() -> Vec<(String, Method, String)> {
    OPERATIONS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, method, uri] = fields.as_slice() else {
                panic!("fixture line {line:?}");
            };
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            ((*name).to_owned(), method, (*uri).to_owned())
        })
        .collect()
}

/// The model operation a request calls, by the fixture's routes.
fn operation_of(method: &Method, path: &str) -> Option<String> {
    model_operations()
        .into_iter()
        .find(|(_, m, uri)| {
            m == method
                && match uri.strip_suffix("{resourceArn}") {
                    Some(prefix) => path.strip_prefix(prefix).is_some_and(|l| !l.is_empty()),
                    None => uri == path,
                }
        })
        .map(|(name, _, _)| name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Dev,
    Limited,
}

impl Who {
    fn credentials(self) -> (&'static str, &'static str) {
        match self {
            Who::Dev => (DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY),
            Who::Limited => (LIMITED_KEY, LIMITED_SECRET),
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The `x-amzn-ErrorType` header.
    pub error_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A 200 with a JSON body.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        self.json()
    }

    /// A 200 with an empty body (the operations without output members).
    pub fn ok_empty(&self) {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert!(
            self.body.is_empty(),
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }

    /// An S3 error with this status and type, in the header and in `__type`; its message.
    pub fn error(&self, status: u16, error_type: &str) -> String {
        let body = String::from_utf8_lossy(&self.body);
        assert_eq!(
            (self.status, self.error_type.as_deref()),
            (status, Some(error_type)),
            "{body}"
        );
        let json = self.json();
        assert_eq!(json["__type"], error_type, "{body}");
        json["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {body}"))
            .to_owned()
    }
}

/// Everything a refused request must leave as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    catalog: CatalogView,
    executed: usize,
    shards: std::collections::BTreeMap<quiver_proto::ShardId, FakeShard>,
    node_requests: usize,
}

pub struct Harness {
    pub router: Router,
    pub catalog: Arc<MemCatalog>,
    pub node: Arc<FakeNode>,
    pub transport: Arc<LocalTransport>,
    pub scope: ArnScope,
    /// Operations answered 2xx.
    succeeded: Mutex<BTreeSet<String>>,
}

impl Harness {
    pub fn new() -> Harness {
        let catalog = MemCatalog::with_node();
        let node = Arc::new(FakeNode::default());
        let transport = LocalTransport::new(Roles::of(&[Role::Coordinator]));
        transport.serve(NODE_ADDR, node.clone());
        let scope = ArnScope::new(REGION, ACCOUNT).expect("scope");
        let mut auth = AuthConfig::documented_dev();
        auth.users.push(UserConfig {
            name: "limited".into(),
            access_key_id: LIMITED_KEY.into(),
            secret_access_key: LIMITED_SECRET.into(),
            policy: serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": LIMITED_ACTIONS, "Resource": "*"}],
            })
            .to_string(),
        });
        let state = AppState::new(
            ApiConfig {
                scope: scope.clone(),
                shards_per_index: 4,
                replication_factor: 1,
                max_concurrent_requests: 64,
            },
            catalog.clone(),
            Arc::new(FakeCluster),
            // A shard made unavailable on purpose answers 503 after a second, not fifteen.
            DataPlane::new(transport.clone(), catalog.clone())
                .with_failover_window(std::time::Duration::from_secs(1)),
            Authenticator::new(&auth, REGION, ACCOUNT).expect("authenticator"),
            TokenSigner::with_key([7; 32]),
            RateLimits {
                write_requests_per_second: 0,
                write_vectors_per_second: 0,
                read_requests_per_second: 0,
            },
        );
        Harness {
            router: api::router(Arc::new(state)),
            catalog,
            node,
            transport,
            scope,
            succeeded: Mutex::new(BTreeSet::new()),
        }
    }

    /// Sends a request as it arrives from the network; records the operation if it succeeded.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().expect("ascii").to_owned());
        if status != 200 {
            assert!(error_type.is_some(), "{status} without x-amzn-ErrorType");
        }
        assert!(response.headers().contains_key("x-amzn-requestid"));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec();
        if (200..300).contains(&status) {
            if let Some(operation) = operation_of(&method, &path) {
                self.succeeded.lock().insert(operation);
            }
        }
        Reply {
            status,
            error_type,
            body,
        }
    }

    /// `POST /{operation}` with a JSON body, signed as `who`.
    pub async fn call(&self, who: Who, operation: &str, body: Value) -> Reply {
        let body = serde_json::to_vec(&body).expect("json");
        self.send(signed(who, Method::POST, &format!("/{operation}"), body))
            .await
    }

    /// A request to `/tags/{arn}` (the ARN percent-encoded as SDKs send it), signed as `who`.
    pub async fn tags(
        &self,
        who: Who,
        method: Method,
        arn: &str,
        query: &str,
        body: Option<Value>,
    ) -> Reply {
        let label: String =
            percent_encoding::utf8_percent_encode(arn, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let path = if query.is_empty() {
            format!("/tags/{label}")
        } else {
            format!("/tags/{label}?{query}")
        };
        let body = body.map_or_else(Vec::new, |b| serde_json::to_vec(&b).expect("json"));
        self.send(signed(who, method, &path, body)).await
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            catalog: self.catalog.view(),
            executed: self.catalog.executed(),
            shards: self.node.shards(),
            node_requests: self.node.requests().len(),
        }
    }

    /// Nothing changed since `before`: the catalog as the API sees it, no catalog command
    /// applied, the node's data, and no request that writes reached the node.
    pub fn assert_unchanged(&self, before: &Snapshot) {
        let now = self.snapshot();
        assert_eq!(now.catalog, before.catalog, "the catalog changed");
        let applied: Vec<_> = self
            .catalog
            .commands_since(before.executed)
            .into_iter()
            .filter(|(_, result)| result.is_ok())
            .collect();
        assert!(
            applied.is_empty(),
            "catalog commands were applied: {applied:?}"
        );
        assert_eq!(now.shards, before.shards, "the node's data changed");
        let writes: Vec<_> = self.node.requests()[before.node_requests..]
            .iter()
            .filter(|kind| matches!(**kind, "write" | "create_shard" | "drop_shard"))
            .copied()
            .collect();
        assert!(writes.is_empty(), "writes reached the node: {writes:?}");
    }

    /// Sends `body` to `operation` as `who`, expects the error, and checks that nothing
    /// changed. Returns the message.
    pub async fn refused(
        &self,
        who: Who,
        operation: &str,
        body: Value,
        status: u16,
        error_type: &str,
    ) -> String {
        let before = self.snapshot();
        let message = self
            .call(who, operation, body)
            .await
            .error(status, error_type);
        self.assert_unchanged(&before);
        message
    }

    pub fn succeeded(&self) -> BTreeSet<String> {
        self.succeeded.lock().clone()
    }

    pub fn bucket_arn(&self, bucket: &str) -> String {
        self.scope.bucket_arn(bucket)
    }

    pub fn index_arn(&self, bucket: &str, index: &str) -> String {
        self.scope.index_arn(bucket, index)
    }

    /// Creates an index as the dev user, and its bucket unless it exists.
    pub async fn bucket_with_index(&self, bucket: &str, index: &str, dimension: u32, metric: &str) {
        if self.catalog.bucket(bucket).is_none() {
            let body = serde_json::json!({"vectorBucketName": bucket});
            self.call(Who::Dev, "CreateVectorBucket", body).await.ok();
        }
        let body = serde_json::json!({
            "vectorBucketName": bucket,
            "indexName": index,
            "dataType": "float32",
            "dimension": dimension,
            "distanceMetric": metric,
        });
        self.call(Who::Dev, "CreateIndex", body).await.ok();
    }
}

/// A request signed by AWS's own SigV4 signer, as an SDK sends it. `path_and_query` is already
/// percent-encoded.
pub fn signed(who: Who, method: Method, path_and_query: &str, body: Vec<u8>) -> Request<Body> {
    signed_at(
        who.credentials(),
        SystemTime::now(),
        method,
        path_and_query,
        body,
    )
}

pub fn signed_at(
    (access_key, secret): (&str, &str),
    time: SystemTime,
    method: Method,
    path_and_query: &str,
    body: Vec<u8>,
) -> Request<Body> {
    let identity: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(access_key, secret, None, None, "tests").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3vectors")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let url = format!("http://{HOST}{path_and_query}");
    let request = SignableRequest::new(
        method.as_str(),
        &url,
        [("host", HOST), ("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(&body),
    )
    .expect("signable request");
    let (instructions, _) = sign(request, &params).expect("sign").into_parts();
    let headers: Vec<(&str, &str)> = [("host", HOST), ("content-type", "application/json")]
        .into_iter()
        .chain(instructions.headers())
        .collect();
    record_seed(&method, path_and_query, &headers, &body);
    let mut builder = unsigned(method, path_and_query);
    for (name, value) in instructions.headers() {
        builder = builder.header(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    builder.body(Body::from(body)).expect("request")
}

/// With `QUIVER_FUZZ_SEEDS=DIR`, every signed request the tests send becomes a seed of the fuzz
/// targets (`fuzz/`): `DIR/api_request/` (operation index, then the body) and `DIR/http_raw/`
/// (method index, path, header lines, empty line, body). `make fuzz` collects them.
pub fn record_seed(method: &Method, path_and_query: &str, headers: &[(&str, &str)], body: &[u8]) {
    let Some(dir) = std::env::var_os("QUIVER_FUZZ_SEEDS") else {
        return;
    };
    // The fuzzers' inputs stay small (the size-limit test sends 20 MiB).
    if body.len() > 1 << 20 {
        return;
    }
    let dir = std::path::PathBuf::from(dir);
    let path = path_and_query.split('?').next().unwrap_or_default();
    if let Some(index) = model_operations().iter().position(|(_, m, uri)| {
        m == method
            && match uri.strip_suffix("{resourceArn}") {
                Some(prefix) => path.starts_with(prefix),
                None => uri == path,
            }
    }) {
        let mut seed = vec![u8::try_from(index).unwrap_or(0)];
        seed.extend_from_slice(body);
        write_seed(&dir.join("api_request"), &seed);
    }
    // The method indexes of fuzz/fuzz_targets/http_raw.rs.
    let methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"];
    let pick = methods
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(0);
    let mut raw = vec![u8::try_from(pick).unwrap_or(0)];
    raw.extend_from_slice(path_and_query.as_bytes());
    raw.push(b'\n');
    for (name, value) in headers {
        raw.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    raw.push(b'\n');
    raw.extend_from_slice(body);
    write_seed(&dir.join("http_raw"), &raw);
}

/// Writes `seed` under `dir`, named by its content (the same seed twice is one file).
pub fn write_seed(dir: &std::path::Path, seed: &[u8]) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut hasher);
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(dir.join(format!("{:016x}", hasher.finish())), seed);
}

/// A request with the ordinary headers and no signature.
pub fn unsigned(method: Method, path_and_query: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", HOST)
        .header("content-type", "application/json")
}

/// Checks that `value` has exactly the members of `shape` with their types. A shape is a type
/// name (`"string"`, `"number"`, `"integer"`, `"boolean"`, `"object"`,
/// `"map<string>"`), an object of
/// shapes (a member whose name ends in `?` may be absent), or a one-element array (every
/// element has that shape).
#[track_caller]
pub fn assert_shape(value: &Value, shape: &Value) {
    check_shape(value, shape, "$");
}

#[track_caller]
fn check_shape(value: &Value, shape: &Value, at: &str) {
    match shape {
        Value::String(kind) => {
            let ok = match kind.as_str() {
                "string" => value.is_string(),
                "number" => value.is_number(),
                "integer" => value.is_i64() || value.is_u64(),
                "boolean" => value.is_boolean(),
                "object" => value.is_object(),
                "map<string>" => value
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string)),
                other => panic!("unknown shape {other}"),
            };
            assert!(ok, "{at}: expected {kind}, got {value}");
        }
        Value::Array(element) => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: expected an array, got {value}"));
            for (i, item) in items.iter().enumerate() {
                check_shape(item, &element[0], &format!("{at}[{i}]"));
            }
        }
        Value::Object(members) => {
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: expected an object, got {value}"));
            let mut expected = BTreeSet::new();
            for (name, member) in members {
                let (name, optional) = match name.strip_suffix('?') {
                    Some(name) => (name, true),
                    None => (name.as_str(), false),
                };
                expected.insert(name);
                match object.get(name) {
                    Some(v) => check_shape(v, member, &format!("{at}.{name}")),
                    None => assert!(optional, "{at}: member {name} missing in {value}"),
                }
            }
            let extra: Vec<_> = object
                .keys()
                .filter(|k| !expected.contains(k.as_str()))
                .collect();
            assert!(
                extra.is_empty(),
                "{at}: unexpected members {extra:?} in {value}"
            );
        }
        other => panic!("bad shape {other}"),
    }
}
