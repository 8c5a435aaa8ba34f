//! TagResource, UntagResource and ListTagsForResource (`/tags/{resourceArn}`).

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::json;

use super::model::TagResourceIn;
use super::{ok_empty, ok_json, parse, validate, AppState, Ctx};
use crate::catalog::CatalogCommand;
use crate::error::ApiError;

/// The longest resource ARN of the model.
const MAX_ARN_CHARS: usize = 1011;

/// A bucket or index that was authorized and found, with its current tags.
struct Tagged {
    bucket: String,
    /// `None` for the bucket itself.
    index: Option<String>,
    tags: BTreeMap<String, String>,
}

/// Authorizes the operation on the resource `arn`, then finds the resource.
fn tagged_resource(app: &AppState, ctx: &Ctx, arn: &str) -> Result<Tagged, ApiError> {
    let len = arn.chars().count();
    if len > MAX_ARN_CHARS {
        return Err(ApiError::length("/resourceArn", len, 0, MAX_ARN_CHARS));
    }
    let parsed = app.config.scope.parse_arn(arn, "/resourceArn")?;
    let bucket_name = parsed.as_ref().map(|(b, _)| b.clone());
    app.authorize(
        ctx,
        &ctx.operation.iam_actions(false),
        arn,
        bucket_name.as_deref(),
    )?;
    let Some((bucket, index)) = parsed else {
        return Err(ApiError::NotFound(
            "The specified resource could not be found".into(),
        ));
    };
    let state = app.catalog.state();
    let tags = match &index {
        None => state
            .bucket(&bucket)
            .map(|b| b.tags.clone())
            .ok_or_else(ApiError::bucket_not_found)?,
        Some(index) => state
            .index(&bucket, index)
            .map(|i| i.tags.clone())
            .ok_or_else(ApiError::index_not_found)?,
    };
    Ok(Tagged {
        bucket,
        index,
        tags,
    })
}

async fn set_tags(app: &AppState, ctx: &Ctx, resource: Tagged) -> Result<Response, ApiError> {
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetTags {
                bucket: resource.bucket,
                index: resource.index,
                tags: resource.tags,
            },
        )
        .await?;
    Ok(ok_empty())
}

pub(super) fn list(app: &AppState, ctx: &Ctx, arn: &str) -> Result<Response, ApiError> {
    let resource = tagged_resource(app, ctx, arn)?;
    Ok(ok_json(json!({ "tags": resource.tags })))
}

pub(super) async fn tag(
    app: &AppState,
    ctx: &Ctx,
    arn: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut resource = tagged_resource(app, ctx, arn)?;
    let input: TagResourceIn = parse(body)?;
    let tags = validate::required(input.tags, "/tags")?;
    validate::check_tags(&tags)?;
    resource.tags.extend(tags);
    validate::check_tags(&resource.tags)?;
    set_tags(app, ctx, resource).await
}

pub(super) async fn untag(
    app: &AppState,
    ctx: &Ctx,
    arn: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let mut resource = tagged_resource(app, ctx, arn)?;
    for key in validate::tag_keys(query)? {
        resource.tags.remove(&key);
    }
    set_tags(app, ctx, resource).await
}
