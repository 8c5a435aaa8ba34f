//! PutVectorBucketPolicy, GetVectorBucketPolicy and DeleteVectorBucketPolicy.

use axum::response::Response;
use serde_json::json;

use super::model::{BucketAddressIn, BucketPolicyIn};
use super::{ok_empty, ok_json, parse, resolve_bucket, validate, AppState, Ctx};
use crate::auth::policy::Policy;
use crate::catalog::CatalogCommand;
use crate::error::ApiError;

pub(super) async fn put(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: BucketPolicyIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &ctx.operation.iam_actions(false),
        &input.address(),
    )?;
    let policy = validate::required(input.policy, "/policy")?;
    Policy::parse(&policy, true)
        .map_err(|e| ApiError::validation(format!("Invalid policy: {e}")))?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetBucketPolicy {
                bucket: bucket.name,
                policy: Some(policy),
            },
        )
        .await?;
    Ok(ok_empty())
}

pub(super) fn get(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: BucketAddressIn = parse(body)?;
    let bucket = resolve_bucket(app, ctx, &ctx.operation.iam_actions(false), &input)?;
    match bucket.policy {
        Some(policy) => Ok(ok_json(json!({ "policy": policy }))),
        None => Err(ApiError::NotFound(
            "The specified vector bucket policy could not be found".into(),
        )),
    }
}

pub(super) async fn delete(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: BucketAddressIn = parse(body)?;
    let bucket = resolve_bucket(app, ctx, &ctx.operation.iam_actions(false), &input)?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetBucketPolicy {
                bucket: bucket.name,
                policy: None,
            },
        )
        .await?;
    Ok(ok_empty())
}
