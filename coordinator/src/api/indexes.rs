//! CreateIndex, GetIndex, ListIndexes, DeleteIndex, UpdateIndexMode and
//! UpdateMetadataConfiguration.

use std::collections::BTreeMap;

use axum::response::Response;
use quiver_proto::{DistanceMetric, IndexUid};
use serde_json::json;

use super::json::{index_json, index_summary_json};
use super::model::{BucketAddressIn, CreateIndexIn, IndexAddressIn, IndexModeIn, ListIn};
use super::paging::Paging;
use super::validate::{self, BucketAddress};
use super::{now_epoch_seconds, ok_empty, ok_json, parse, resolve_bucket, resolve_index};
use super::{AppState, Ctx};
use crate::catalog::{BucketRecord, CatalogCommand, EncryptionConfig, NewIndex};
use crate::error::ApiError;
use crate::placement;

/// Names per ListIndexes page (and the default).
const MAX_LIST_INDEXES: i64 = 500;

/// CreateIndex: check the definition, authorize on the new index's ARN, find the bucket,
/// place the shards, then commit the index and create its shards.
pub(super) async fn create(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: CreateIndexIn = parse(body)?;
    let (definition, bucket_address) = IndexDefinition::from_input(input)?;
    let bucket = bucket_of_new_index(app, ctx, &bucket_address, &definition)?;
    let planned = plan_index(app, &bucket, definition)?;
    let arn = app.config.scope.index_arn(&planned.bucket, &planned.name);
    commit_index(app, ctx, planned).await?;
    Ok(ok_json(json!({ "indexArn": arn })))
}

/// A new index as the request defines it, fully validated.
struct IndexDefinition {
    name: String,
    dimension: u32,
    metric: DistanceMetric,
    non_filterable_keys: Option<Vec<String>>,
    encryption: Option<EncryptionConfig>,
    tags: BTreeMap<String, String>,
}

impl IndexDefinition {
    /// Validates every member of the request except the bucket's address, which comes back
    /// as it was given (it is checked when the bucket is looked up).
    fn from_input(input: CreateIndexIn) -> Result<(IndexDefinition, BucketAddressIn), ApiError> {
        let bucket = input.address();
        let name = validate::required(input.index_name, "/indexName")?;
        validate::index_name(&name)?;
        validate::index_data_type(input.data_type)?;
        let definition = IndexDefinition {
            name,
            dimension: validate::dimension(input.dimension)?,
            metric: validate::distance_metric(input.distance_metric)?,
            non_filterable_keys: validate::non_filterable_keys(input.metadata_configuration)?,
            encryption: validate::encryption(input.encryption_configuration)?,
            tags: validate::tags(input.tags)?,
        };
        Ok((definition, bucket))
    }
}

/// Authorizes creating the index on its own ARN (with the bucket's policy), then finds the
/// bucket, which must exist and must not hold an index of that name yet.
fn bucket_of_new_index(
    app: &AppState,
    ctx: &Ctx,
    address: &BucketAddressIn,
    index: &IndexDefinition,
) -> Result<BucketRecord, ApiError> {
    let actions = ctx.operation.iam_actions(!index.tags.is_empty());
    let bucket = match validate::bucket_address(&app.config.scope, address)? {
        BucketAddress::Name(bucket) => bucket,
        BucketAddress::Foreign => {
            let arn = address.vector_bucket_arn.as_deref().unwrap_or_default();
            app.authorize(ctx, &actions, arn, None)?;
            return Err(ApiError::bucket_not_found());
        }
    };
    let resource = app.config.scope.index_arn(&bucket, &index.name);
    app.authorize(ctx, &actions, &resource, Some(&bucket))?;
    let state = app.catalog.state();
    let bucket = state
        .bucket(&bucket)
        .cloned()
        .ok_or_else(ApiError::bucket_not_found)?;
    if state.index(&bucket.name, &index.name).is_some() {
        return Err(ApiError::Conflict(
            "An index with the specified name already exists".into(),
        ));
    }
    Ok(bucket)
}

/// The new index as the catalog takes it: a fresh uid, and its shards placed on live nodes (the
/// catalog numbers the replicas when it commits).
fn plan_index(
    app: &AppState,
    bucket: &BucketRecord,
    index: IndexDefinition,
) -> Result<NewIndex, ApiError> {
    let shard_count = app.config.shards_per_index.max(2);
    let shards = placement::new_shards(
        &app.catalog.state(),
        shard_count,
        app.config.replication_factor,
    )?;
    Ok(NewIndex {
        bucket: bucket.name.clone(),
        name: index.name,
        uid: IndexUid(rand::random()),
        creation_time: now_epoch_seconds(),
        dimension: index.dimension,
        metric: index.metric,
        non_filterable_keys: index.non_filterable_keys,
        encryption: index.encryption,
        tags: index.tags,
        index_mode: bucket.default_index_mode,
        shards,
    })
}

/// The catalog first, then the shards: a node drops shards the catalog does not name (see
/// `NodeService::reconcile`), and a node that misses the creation below gets the shard from
/// its next heartbeat. If the shards cannot be created, the index is removed again.
async fn commit_index(app: &AppState, ctx: &Ctx, planned: NewIndex) -> Result<(), ApiError> {
    let (bucket, name, uid) = (planned.bucket.clone(), planned.name.clone(), planned.uid);
    app.catalog
        .execute(&ctx.request_id, CatalogCommand::CreateIndex(planned))
        .await?;
    // The record as committed names the replica ids the catalog gave. It is missing (or another
    // incarnation) only if the index was deleted in between; then there is nothing to create.
    let committed = app.catalog.state().index(&bucket, &name).cloned();
    let Some(record) = committed.filter(|record| record.uid == uid) else {
        return Ok(());
    };
    let Err(error) = app.data.create_shards(&record, &ctx.request_id).await else {
        return Ok(());
    };
    let undo = app
        .catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::DeleteIndex {
                bucket: record.bucket.clone(),
                name: record.name.clone(),
            },
        )
        .await;
    if let Err(undo) = undo {
        tracing::warn!(index = %record.name, %undo, "could not remove an index whose shards failed; nodes will create them from their assignments");
    }
    app.data.drop_shards(&record, &ctx.request_id).await;
    Err(error)
}

pub(super) fn get(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: IndexAddressIn = parse(body)?;
    let index = resolve_index(app, ctx, &ctx.operation.iam_actions(false), &input)?;
    Ok(ok_json(
        json!({ "index": index_json(&app.config.scope, &index) }),
    ))
}

pub(super) fn list(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: ListIn = parse(body)?;
    let bucket = resolve_bucket(
        app,
        ctx,
        &ctx.operation.iam_actions(false),
        &input.address(),
    )?;
    let listing = format!("indexes/{}", bucket.name);
    let paging = Paging::new(app, &input, MAX_LIST_INDEXES, &listing)?;
    let indexes = app.catalog.state().indexes(&bucket.name);
    let scope = &app.config.scope;
    let indexes = indexes
        .iter()
        .map(|i| (i.name.as_str(), index_summary_json(scope, i)));
    let (items, next_token) = paging.page(app, indexes);
    let mut out = json!({ "indexes": items });
    if let Some(token) = next_token {
        out["nextToken"] = json!(token);
    }
    Ok(ok_json(out))
}

pub(super) async fn delete(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: IndexAddressIn = parse(body)?;
    let index = resolve_index(app, ctx, &ctx.operation.iam_actions(false), &input)?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::DeleteIndex {
                bucket: index.bucket.clone(),
                name: index.name.clone(),
            },
        )
        .await?;
    app.throttle.forget(index.uid);
    app.data.drop_shards(&index, &ctx.request_id).await;
    Ok(ok_empty())
}

pub(super) async fn update_mode(
    app: &AppState,
    ctx: &Ctx,
    body: &[u8],
) -> Result<Response, ApiError> {
    let input: IndexModeIn = parse(body)?;
    let index = resolve_index(
        app,
        ctx,
        &ctx.operation.iam_actions(false),
        &input.address(),
    )?;
    let bucket_created = app
        .catalog
        .state()
        .bucket(&index.bucket)
        .map(|bucket| bucket.creation_time)
        .ok_or_else(ApiError::index_not_found)?;
    let mode = validate::index_mode(input.index_mode, "/indexMode", bucket_created)?;
    app.catalog
        .execute(
            &ctx.request_id,
            CatalogCommand::SetIndexMode {
                bucket: index.bucket,
                index: index.name,
                mode,
            },
        )
        .await?;
    Ok(ok_empty())
}

pub(super) fn update_metadata_configuration(
    app: &AppState,
    ctx: &Ctx,
    body: &[u8],
) -> Result<Response, ApiError> {
    let input: IndexAddressIn = parse(body)?;
    resolve_index(app, ctx, &ctx.operation.iam_actions(false), &input)?;
    Err(ApiError::validation(
        "UpdateMetadataConfiguration (full-text search configuration) is not supported by this server yet",
    ))
}
