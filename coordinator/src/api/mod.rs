//! The S3 Vectors HTTP API: the router and its middleware, the one [`dispatch`] of every
//! operation, and the address resolution the operations share. The operations themselves live
//! one group per file (`buckets`, `indexes`, `vectors`, `query`, `policies`, `tags`).
//!
//! This is the only module that knows S3 Vectors JSON names. A request is parsed into an
//! [`Operation`] before anything else; each handler parses the body into its typed request
//! (`model`), validates all of it (`validate`), authorizes, and only then touches the catalog
//! or the data plane.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::auth::{Authenticator, Principal};
use crate::catalog::{BucketRecord, Catalog, IndexRecord};
use crate::dataplane::DataPlane;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::throttle::{RateLimits, Throttle};
use crate::tokens::{CursorCache, TokenSigner};

mod buckets;
mod indexes;
mod json;
#[doc(hidden)]
pub mod model;
mod operation;
mod paging;
mod policies;
mod query;
mod tags;
mod validate;
mod vectors;

use model::{BucketAddressIn, IndexAddressIn};
use operation::{Operation, ReadKind};
pub use validate::ArnScope;
use validate::{BucketAddress, IndexAddress};

/// Settings of the API layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub scope: ArnScope,
    /// Shards per new index (at least 2 so fan-out and merge always run).
    pub shards_per_index: u32,
    /// Replicas of each shard of a new index (each on its own node; at least 1).
    pub replication_factor: usize,
    /// API requests executing at once; more wait up to [`ADMISSION_WAIT`], then get 429.
    pub max_concurrent_requests: usize,
}

/// How long a request may wait for an execution slot before it is throttled.
pub const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the API needs of the cluster besides the catalog: whether it can serve, and the
/// cluster's gauges for `/metrics`. The control plane implements it (`cluster/`); a test can
/// build an [`AppState`] over a fake.
pub trait ClusterView: Send + Sync {
    /// Whether this coordinator can serve requests (it knows a control-plane leader).
    fn ready(&self) -> bool;
    /// The Prometheus exposition of `metrics`, with the cluster's gauges read now.
    fn render_metrics(&self, metrics: &Metrics) -> String;
}

/// Everything the API handlers share.
pub struct AppState {
    config: ApiConfig,
    catalog: Arc<dyn Catalog>,
    cluster: Arc<dyn ClusterView>,
    metrics: Metrics,
    data: DataPlane,
    auth: Authenticator,
    tokens: TokenSigner,
    cursors: CursorCache,
    throttle: Throttle,
    /// Execution slots (see [`ApiConfig::max_concurrent_requests`]).
    admission: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The API over a catalog, a view of the cluster (usually the same control plane) and the
    /// data plane; metrics, query cursors, throttles and execution slots start empty.
    pub fn new(
        config: ApiConfig,
        catalog: Arc<dyn Catalog>,
        cluster: Arc<dyn ClusterView>,
        data: DataPlane,
        auth: Authenticator,
        tokens: TokenSigner,
        limits: RateLimits,
    ) -> AppState {
        let admission = Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_requests.max(1),
        ));
        AppState {
            config,
            catalog,
            cluster,
            metrics: Metrics::default(),
            data,
            auth,
            tokens,
            cursors: CursorCache::default(),
            throttle: Throttle::new(limits),
            admission,
        }
    }

    /// The HTTP server's connection counters, exposed at `/metrics`.
    pub fn connection_metrics(&self) -> crate::metrics::ConnectionMetrics {
        self.metrics.connections.clone()
    }
}

/// One authenticated request.
struct Ctx {
    request_id: String,
    principal: Principal,
    operation: Operation,
}

/// What an operation reads from its HTTP request besides the headers.
struct Input<'a> {
    /// The route's path label, percent-decoded: the operation name, or the ARN of a tag route.
    label: &'a str,
    query: Option<&'a str>,
    body: &'a [u8],
}

impl AppState {
    /// Authorizes `actions` on `resource`, including the bucket policy of `bucket` if it has one.
    fn authorize(
        &self,
        ctx: &Ctx,
        actions: &[&str],
        resource: &str,
        bucket: Option<&str>,
    ) -> Result<(), ApiError> {
        let policy = bucket.and_then(|b| {
            self.catalog
                .state()
                .bucket(b)
                .and_then(|r| r.policy.clone())
        });
        self.auth
            .authorize(&ctx.principal, actions, resource, policy.as_deref())
    }
}

type App = Arc<AppState>;

#[derive(Clone)]
pub struct RequestId(pub String);

pub fn router(state: App) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/{operation}", post(dispatch))
        .route("/tags/{arn}", get(dispatch).post(dispatch).delete(dispatch))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admission,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::middleware::from_fn(request_context))
        .layer(DefaultBodyLimit::max(validate::MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Ready once this coordinator knows a Raft leader (it can serve reads and forward writes).
async fn ready(State(app): State<App>) -> Response {
    if app.cluster.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no control-plane leader yet",
        )
            .into_response()
    }
}

async fn metrics(State(app): State<App>) -> Response {
    crate::metrics::exposition(app.cluster.render_metrics(&app.metrics))
}

/// Gives every request an id (the `x-amzn-RequestId` header) and a tracing span carrying it.
async fn request_context(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

/// Anything that is not an S3 Vectors route gets an AWS-shaped error, not a bare status.
async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::UnknownOperation(format!(
        "No S3 Vectors operation matches {method} {}",
        uri.path()
    ))
    .into_response()
}

/// Bounds the requests executing at once: a request waits up to [`ADMISSION_WAIT`] for a slot,
/// then gets a retryable 429, so overload turns into throttling instead of unbounded queues.
async fn admission(State(app): State<App>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/ready" || path == "/metrics" {
        return next.run(request).await;
    }
    let slot = tokio::time::timeout(ADMISSION_WAIT, app.admission.clone().acquire_owned()).await;
    let Ok(Ok(_permit)) = slot else {
        return ApiError::TooManyRequests(
            "Too many concurrent requests; slow down and retry".into(),
        )
        .into_response();
    };
    next.run(request).await
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    let error = match serde_path_to_error::deserialize(&mut json) {
        Ok(value) => match json.end() {
            Ok(()) => return Ok(value),
            Err(e) => return Err(ApiError::validation(format!("Invalid request body: {e}"))),
        },
        Err(error) => error,
    };
    // A member of the wrong JSON type is named by its path.
    let path = json_pointer(error.path());
    let error = error.into_inner();
    Err(ApiError::validation(match path {
        Some(path) => format!("Invalid request body at '{path}': {error}"),
        None => format!("Invalid request body: {error}"),
    }))
}

/// A deserialization path as the service writes member paths (`/vectors/0/data`); `None` for
/// the document itself.
fn json_pointer(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let pointer: String = path
        .iter()
        .map(|segment| match segment {
            Segment::Seq { index } => format!("/{index}"),
            Segment::Map { key } => format!("/{key}"),
            Segment::Enum { variant } => format!("/{variant}"),
            Segment::Unknown => "/?".to_owned(),
        })
        .collect();
    (!pointer.is_empty()).then_some(pointer)
}

fn ok_json(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

/// A body that could not be read: too large (413), or it stopped arriving (the front door's
/// minimum rate, a client gone) — 408.
fn body_rejected(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    let message = format!("Request body rejected: {}", rejection.body_text());
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(message)
    } else {
        ApiError::RequestTimeout(message)
    }
}

/// Runs one S3 Vectors request, for both routes (`POST /{operation}` and
/// `GET|POST|DELETE /tags/{arn}`; `label` is the route's one path label, percent-decoded):
/// body limit, authentication, the operation, its read barrier. The one place that logs a
/// failed request.
async fn dispatch(
    State(app): State<App>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    label: Result<Path<String>, axum::extract::rejection::PathRejection>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // A path label that does not percent-decode to UTF-8.
    let label = match label {
        Ok(Path(label)) => label,
        Err(rejection) => {
            return ApiError::validation(format!("Invalid request path: {}", rejection.body_text()))
                .into_response()
        }
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_rejected(rejection).into_response(),
    };
    let principal = match app.auth.authenticate(&method, &uri, &headers, &body) {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let Some(operation) = Operation::from_request(&method, uri.path()) else {
        let error = ApiError::UnknownOperation(format!("Unknown operation: {label}"));
        tracing::debug!(%request_id, %error, "request rejected");
        return error.into_response();
    };
    let ctx = Ctx {
        request_id,
        principal,
        operation,
    };
    let input = Input {
        label: &label,
        query: uri.query(),
        body: &body,
    };
    match run(&app, &ctx, &input).await {
        Ok(response) => response,
        Err(error) => {
            let (status, _) = error.status_and_type();
            let operation = operation.name();
            let request_id = &ctx.request_id;
            if status.is_server_error() {
                tracing::warn!(operation, %request_id, %error, "request failed");
            } else {
                tracing::debug!(operation, %request_id, %error, "request rejected");
            }
            error.into_response()
        }
    }
}

/// Runs the operation so that it sees every change committed (through any coordinator)
/// before this request started. A control read passes a linearizable read barrier first.
/// Any other operation runs on the local state, and once more after the barrier if it
/// answered NotFound (this coordinator may not yet have applied a change committed
/// elsewhere) and [`Operation::retries_on_not_found`] declares that safe.
async fn run(app: &AppState, ctx: &Ctx, input: &Input<'_>) -> Result<Response, ApiError> {
    if ctx.operation.read_kind() == ReadKind::ControlRead {
        app.catalog.sync().await?;
        return operate(app, ctx, input).await;
    }
    let result = operate(app, ctx, input).await;
    let not_found = result.as_ref().is_err_and(ApiError::is_not_found);
    if !(not_found && ctx.operation.retries_on_not_found()) {
        return result;
    }
    app.catalog.sync().await?;
    operate(app, ctx, input).await
}

/// Counts every API request by operation and status, with its latency.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/ready" || path == "/metrics" {
        return next.run(request).await;
    }
    // Anything else counts as "unknown", so arbitrary paths cannot grow the metric families.
    let operation =
        Operation::from_request(request.method(), path).map_or("unknown", Operation::name);
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    app.metrics
        .record(operation, response.status().as_u16(), started.elapsed());
    response
}

/// Runs one S3 Vectors operation.
async fn operate(app: &AppState, ctx: &Ctx, input: &Input<'_>) -> Result<Response, ApiError> {
    let body = input.body;
    match ctx.operation {
        Operation::CreateVectorBucket => buckets::create(app, ctx, body).await,
        Operation::GetVectorBucket => buckets::get(app, ctx, body),
        Operation::ListVectorBuckets => buckets::list(app, ctx, body),
        Operation::DeleteVectorBucket => buckets::delete(app, ctx, body).await,
        Operation::PutVectorBucketDefaultIndexMode => {
            buckets::put_default_index_mode(app, ctx, body).await
        }
        Operation::PutVectorBucketPolicy => policies::put(app, ctx, body).await,
        Operation::GetVectorBucketPolicy => policies::get(app, ctx, body),
        Operation::DeleteVectorBucketPolicy => policies::delete(app, ctx, body).await,
        Operation::CreateIndex => indexes::create(app, ctx, body).await,
        Operation::GetIndex => indexes::get(app, ctx, body),
        Operation::ListIndexes => indexes::list(app, ctx, body),
        Operation::DeleteIndex => indexes::delete(app, ctx, body).await,
        Operation::UpdateIndexMode => indexes::update_mode(app, ctx, body).await,
        Operation::UpdateMetadataConfiguration => {
            indexes::update_metadata_configuration(app, ctx, body)
        }
        Operation::PutVectors => vectors::put(app, ctx, body).await,
        Operation::GetVectors => vectors::get(app, ctx, body).await,
        Operation::ListVectors => vectors::list(app, ctx, body).await,
        Operation::DeleteVectors => vectors::delete(app, ctx, body).await,
        Operation::QueryVectors => query::query_vectors(app, ctx, body).await,
        Operation::TagResource => tags::tag(app, ctx, input.label, body).await,
        Operation::UntagResource => tags::untag(app, ctx, input.label, input.query).await,
        Operation::ListTagsForResource => tags::list(app, ctx, input.label),
    }
}

fn now_epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// Authorizes `actions` on the addressed bucket, then resolves it to a bucket that exists.
/// Authorization comes first, so a caller without access cannot probe which buckets exist.
fn resolve_bucket(
    app: &AppState,
    ctx: &Ctx,
    actions: &[&str],
    address: &BucketAddressIn,
) -> Result<BucketRecord, ApiError> {
    match validate::bucket_address(&app.config.scope, address)? {
        BucketAddress::Foreign => {
            let arn = address.vector_bucket_arn.as_deref().unwrap_or_default();
            app.authorize(ctx, actions, arn, None)?;
            Err(ApiError::bucket_not_found())
        }
        BucketAddress::Name(name) => {
            app.authorize(
                ctx,
                actions,
                &app.config.scope.bucket_arn(&name),
                Some(&name),
            )?;
            app.catalog
                .state()
                .bucket(&name)
                .cloned()
                .ok_or_else(ApiError::bucket_not_found)
        }
    }
}

/// Authorizes `actions` on the addressed index, then resolves it to an existing index.
fn resolve_index(
    app: &AppState,
    ctx: &Ctx,
    actions: &[&str],
    address: &IndexAddressIn,
) -> Result<IndexRecord, ApiError> {
    match validate::index_address(&app.config.scope, address)? {
        IndexAddress::Foreign => {
            let arn = address.index_arn.as_deref().unwrap_or_default();
            app.authorize(ctx, actions, arn, None)?;
            Err(ApiError::index_not_found())
        }
        IndexAddress::Name { bucket, index } => {
            let resource = app.config.scope.index_arn(&bucket, &index);
            app.authorize(ctx, actions, &resource, Some(&bucket))?;
            app.catalog
                .state()
                .index(&bucket, &index)
                .cloned()
                .ok_or_else(ApiError::index_not_found)
        }
    }
}
