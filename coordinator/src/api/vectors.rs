//! PutVectors, GetVectors, ListVectors and DeleteVectors.

use axum::response::Response;
use quiver_proto::{DistanceMetric, VectorRecord, WriteOp};
use serde_json::{json, Value};

use super::json::record_json;
use super::model::{KeysIn, ListVectorsIn, PutVectorIn, PutVectorsIn};
use super::{ok_empty, ok_json, parse, resolve_index, validate};
use super::{AppState, Ctx};
use crate::catalog::IndexRecord;
use crate::error::ApiError;

/// A ListVectors page ends once its JSON reaches about this size.
const LIST_PAGE_BYTES: usize = 1024 * 1024;

/// ListVectors page size: the default and the most a request may ask for.
const DEFAULT_LIST_VECTORS: i64 = 500;
const MAX_LIST_VECTORS: i64 = 1000;

pub(super) async fn put(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: PutVectorsIn = parse(body)?;
    let address = input.address();
    let vectors = validate::required(input.vectors, "/vectors")?;
    validate::count_limit("/vectors", vectors.len(), validate::MAX_PUT_VECTORS)?;
    let index = resolve_index(app, ctx, &ctx.operation.iam_actions(false), &address)?;
    let ops = write_ops(vectors, &index)?;
    app.throttle.write(index.uid, ops.len())?;
    app.data.write(&index, &ctx.request_id, ops).await?;
    Ok(ok_empty())
}

/// Checks every vector of a PutVectors batch against its index (key, data, metadata) and turns
/// the batch into writes; one bad vector rejects the whole batch.
fn write_ops(vectors: Vec<PutVectorIn>, index: &IndexRecord) -> Result<Vec<WriteOp>, ApiError> {
    let non_filterable = index.non_filterable_keys.clone().unwrap_or_default();
    let cosine = index.metric == DistanceMetric::Cosine;
    let mut ops = Vec::with_capacity(vectors.len());
    for (i, vector) in vectors.into_iter().enumerate() {
        let key = validate::required(vector.key, &format!("/vectors/{i}/key"))?;
        validate::vector_key(&format!("/vectors/{i}/key"), &key)?;
        let record = format!("Invalid record for key '{key}': ");
        let data = validate::required(vector.data, &format!("/vectors/{i}/data"))?;
        let data = data.float32.ok_or_else(|| {
            ApiError::field(
                &format!("/vectors/{i}/data"),
                "Member must have its one member, float32, set",
            )
        })?;
        validate::vector(&data, index.dimension, cosine, &record)?;
        let metadata = match &vector.metadata {
            None => Default::default(),
            Some(value) => validate::metadata(value, &non_filterable, &record)?,
        };
        ops.push(WriteOp::Put {
            key,
            vector: data,
            metadata,
        });
    }
    Ok(ops)
}

pub(super) async fn get(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: KeysIn = parse(body)?;
    let address = input.address();
    let keys = validate::keys(input.keys, validate::MAX_GET_KEYS)?;
    let index = resolve_index(app, ctx, &ctx.operation.iam_actions(false), &address)?;
    app.throttle.read(index.uid)?;
    let mut unique = Vec::with_capacity(keys.len());
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        if seen.insert(key.clone()) {
            unique.push(key);
        }
    }
    let records = app
        .data
        .get(
            &index,
            &ctx.request_id,
            unique,
            input.return_data.unwrap_or(false),
            input.return_metadata.unwrap_or(false),
        )
        .await?;
    let vectors: Vec<Value> = records.into_iter().map(record_json).collect();
    Ok(ok_json(json!({ "vectors": vectors })))
}

pub(super) async fn delete(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: KeysIn = parse(body)?;
    let address = input.address();
    let keys = validate::keys(input.keys, validate::MAX_DELETE_KEYS)?;
    let index = resolve_index(app, ctx, &ctx.operation.iam_actions(false), &address)?;
    app.throttle.write(index.uid, keys.len())?;
    let ops = keys
        .into_iter()
        .map(|key| WriteOp::Delete { key })
        .collect();
    app.data.write(&index, &ctx.request_id, ops).await?;
    Ok(ok_empty())
}

pub(super) async fn list(app: &AppState, ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let input: ListVectorsIn = parse(body)?;
    let limit = validate::max_results(input.max_results, DEFAULT_LIST_VECTORS, MAX_LIST_VECTORS)?;
    let range = validate::segment_range(input.segment_count, input.segment_index)?;
    let return_data = input.return_data.unwrap_or(false);
    let return_metadata = input.return_metadata.unwrap_or(false);
    // Reading data or metadata through ListVectors also needs GetVectors.
    let actions = ctx.operation.iam_actions(return_data || return_metadata);
    let index = resolve_index(app, ctx, &actions, &input.address())?;
    app.throttle.read(index.uid)?;
    // The token is bound to this index incarnation and segment.
    let listing = format!(
        "vectors/{}/{:?}/{:?}",
        index.uid.0, input.segment_count, input.segment_index
    );
    let after = app.page_after(input.next_token.as_deref(), &listing)?;
    let (records, more) = app
        .data
        .list(
            &index,
            &ctx.request_id,
            after,
            limit as u32,
            range,
            return_data,
            return_metadata,
        )
        .await?;
    let (vectors, last_key) = cut_page(records, more);
    let mut out = json!({ "vectors": vectors });
    if let Some(last) = last_key {
        out["nextToken"] = json!(app.page_token(&listing, &last));
    }
    Ok(ok_json(out))
}

/// Renders a ListVectors page, ending it early (like the service) once about
/// [`LIST_PAGE_BYTES`] of JSON have been gathered; and the last key returned when more follow
/// (`more`: the nodes hold more after these records).
fn cut_page(records: Vec<VectorRecord>, more: bool) -> (Vec<Value>, Option<String>) {
    let total = records.len();
    let mut vectors = Vec::with_capacity(total);
    let mut bytes = 0usize;
    let mut last_key = None;
    for record in records {
        let key = record.key.clone();
        let value = record_json(record);
        bytes += value.to_string().len();
        vectors.push(value);
        last_key = Some(key);
        if bytes >= LIST_PAGE_BYTES {
            break;
        }
    }
    let more = more || vectors.len() < total;
    (vectors, last_key.filter(|_| more))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, floats: usize) -> VectorRecord {
        VectorRecord {
            key: key.into(),
            vector: Some(vec![0.5; floats]),
            metadata: None,
        }
    }

    #[test]
    fn a_small_page_ends_where_the_nodes_end() {
        let records = vec![record("a", 1), record("b", 1)];
        let (vectors, last) = cut_page(records.clone(), false);
        assert_eq!(vectors.len(), 2);
        assert_eq!(last, None);
        let (_, last) = cut_page(records, true);
        assert_eq!(last.as_deref(), Some("b"));
        assert_eq!(cut_page(Vec::new(), false), (Vec::new(), None));
    }

    #[test]
    fn a_page_ends_early_after_a_megabyte() {
        // About 240 KB of JSON per record: the fifth crosses 1 MiB.
        let records: Vec<_> = (0..8).map(|i| record(&format!("k{i}"), 60_000)).collect();
        let (vectors, last) = cut_page(records, false);
        assert_eq!(vectors.len(), 5);
        assert_eq!(last.as_deref(), Some("k4"));
    }
}
