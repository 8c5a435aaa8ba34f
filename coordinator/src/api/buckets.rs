//! CreateVectorBucket, GetVectorBucket, ListVectorBuckets, DeleteVectorBucket and
//! PutVectorBucketDefaultIndexMode.

use axum::response::Response;
use serde_json::json;

use super::json::{bucket_json, bucket_summary_json};
use super::model::{BucketAddressIn, CreateBucketIn, DefaultIndexModeIn, ListIn};
use super::paging::Paging;
use super::{now_epoch_seconds, ok_empty, ok_json, parse, resolve_bucket, validate};
use super::{AppState, Ctx};
use crate::catalog::{BucketRecord, CatalogCommand, IndexMode};
use crate::error::ApiError;

/// Names per ListVectorBuckets page (and the default).
const MAX_LIST_BUCKETS: i64 = 500;

pub(super) async fn create(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: CreateBucketIn = parse(body)?;
    let name = validate::required(input.vector_bucket_name, "/vectorBucketName")?;
    validate::bucket_name(&name)?;
    let tags = validate::tags(input.tags)?;
    app.authorize(
        ctx,
        &ctx.operation.iam_actions(!tags.is_empty()),
        &app.config.scope.bucket_arn(&name),
        None,
    )?;
    let record = BucketRecord {
        name: name.clone(),
        creation_time: now_epoch_seconds(),
        encryption: validate::encryption(input.encryption_configuration)?.unwrap_or_default(),
        tags,
        default_index_mode: IndexMode::Enhanced,
        policy: None,
    };
    app.catalog
        .execute(&ctx.request_id, CatalogCommand::CreateBucket(record))
        .await?;
    Ok(ok_json(
        json!({ "vectorBucketArn": app.config.scope.bucket_arn(&name) }),
    ))
}

pub(super) fn get(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: BucketAddressIn = parse(body)?;
    let bucket = resolve_bucket(app, ctx, &ctx.operation.iam_actions(false), &input)?;
    Ok(ok_json(json!({
        "vectorBucket": bucket_json(&app.config.scope, &bucket)
    })))
}

pub(super) fn list(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: ListIn = parse(body)?;
    app.authorize(ctx, &ctx.operation.iam_actions(false), "*", None)?;
    let paging = Paging::new(app, &input, MAX_LIST_BUCKETS, "buckets")?;
    let state = app.catalog.state();
    let scope = &app.config.scope;
    let buckets = state
        .buckets()
        .map(|b| (b.name.as_str(), bucket_summary_json(scope, b)));
    let (items, next_token) = paging.page(app, buckets);
    let mut out = json!({ "vectorBuckets": items });
    if let Some(token) = next_token {
        out["nextToken"] = json!(token);
    }
    Ok(ok_json(out))
}

pub(super) async fn delete(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: BucketAddressIn = parse(body)?;
    let bucket = resolve_bucket(app, ctx, &ctx.operation.iam_actions(false), &input)?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::DeleteBucket { name: bucket.name },
        )
        .await?;
    Ok(ok_empty())
}

pub(super) async fn put_default_index_mode(
    app: &AppState,
    ctx: &Ctx,
    body: &[u8],
) -> Result<Response, ApiError> {
    let input: DefaultIndexModeIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &ctx.operation.iam_actions(false),
        &input.address(),
    )?;
    let mode = validate::index_mode(
        input.default_index_mode,
        "/defaultIndexMode",
        bucket.creation_time,
    )?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetBucketDefaultIndexMode {
                bucket: bucket.name,
                mode,
            },
        )
        .await?;
    Ok(ok_empty())
}
