//! QueryVectors, and the paging of its results: the whole top-K is computed once and kept in
//! a cursor, so later pages are stable against writes made in between (while the pages go to
//! the same coordinator within the cursor's lifetime; otherwise the query is computed again).

use std::sync::Arc;

use axum::response::Response;
use quiver_proto::{DistanceMetric, Filter, Hit, IndexUid};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::json::{hit_json, metric_name};
use super::model::QueryIn;
use super::validate::{self, QueryMode};
use super::{ok_json, parse, resolve_index, AppState, Ctx};
use crate::catalog::IndexRecord;
use crate::error::ApiError;

/// Results per QueryVectors page; a larger topK is paged with nextToken.
const QUERY_PAGE_SIZE: usize = 100;

/// QueryVectors: check the options, authorize and find the index, check the query against
/// the index, then serve the page from the cursor or from a fresh search.
pub(super) async fn query_vectors(
    app: &AppState,
    ctx: &Ctx,
    body: &[u8],
) -> Result<Response, ApiError> {
    let input: QueryIn = parse(body)?;
    let options = QueryOptions::from_input(&input)?;
    // A filter or returned metadata reads metadata: that also needs GetVectors.
    let reads_metadata = input.filter.is_some() || options.return_metadata;
    let index = resolve_index(
        app,
        ctx,
        &ctx.operation.iam_actions(reads_metadata),
        &input.address(),
    )?;
    let query = Query::plan(&index, options, input.filter.as_ref())?;
    app.throttle.read(index.uid)?;
    let continued = continuation(app, &query, input.next_token.as_deref())?;
    let (hits, offset, cursor) = results(app, ctx, &index, &query, continued).await?;
    let (page, next_token) = cut_page(app, &query, hits, offset, cursor);
    let mut out = json!({
        "vectors": page,
        "distanceMetric": metric_name(index.metric),
    });
    if let Some(token) = next_token {
        out["nextToken"] = json!(token);
    }
    Ok(ok_json(out))
}

/// The members of a QueryVectors request checked before the index is known.
struct QueryOptions {
    top_k: i64,
    vector: Vec<f32>,
    mode: Option<QueryMode>,
    return_metadata: bool,
    return_distance: bool,
}

impl QueryOptions {
    fn from_input(input: &QueryIn) -> Result<QueryOptions, ApiError> {
        let top_k = validate::top_k(input.top_k)?;
        if input.query_texts.is_some() {
            return Err(ApiError::validation(
                "queryTexts (full-text search) is not supported by this server yet",
            ));
        }
        let vector = input
            .query_vector
            .as_ref()
            .and_then(|v| v.float32.clone())
            .ok_or_else(|| ApiError::validation("queryVector is required"))?;
        Ok(QueryOptions {
            top_k,
            vector,
            mode: validate::query_mode(input.query_mode.as_deref())?,
            return_metadata: input.return_metadata.unwrap_or(false),
            return_distance: input.return_distance.unwrap_or(false),
        })
    }
}

/// A query checked against its index: the search to run and how to render it.
struct Query {
    vector: Vec<f32>,
    top_k: i64,
    filter: Option<Filter>,
    return_metadata: bool,
    return_distance: bool,
    /// Identifies the query across its pages (see [`query_fingerprint`]).
    fingerprint: u64,
}

impl Query {
    /// Checks the query mode, the vector and the filter against the index.
    fn plan(
        index: &IndexRecord,
        options: QueryOptions,
        filter: Option<&Value>,
    ) -> Result<Query, ApiError> {
        let enhanced = validate::enhanced_search(options.mode, index.index_mode)?;
        validate::vector(
            &options.vector,
            index.dimension,
            index.metric == DistanceMetric::Cosine,
            "Invalid query vector: ",
        )?;
        let non_filterable = index.non_filterable_keys.clone().unwrap_or_default();
        let parsed = filter
            .map(|f| validate::filter(f, &non_filterable, enhanced))
            .transpose()?;
        let fingerprint =
            query_fingerprint(index.uid, &options.vector, options.top_k, filter, enhanced);
        Ok(Query {
            vector: options.vector,
            top_k: options.top_k,
            filter: parsed,
            return_metadata: options.return_metadata,
            return_distance: options.return_distance,
            fingerprint,
        })
    }
}

/// What a nextToken of QueryVectors carries.
#[derive(Serialize, Deserialize)]
struct QueryToken {
    cursor: u64,
    offset: usize,
    fingerprint: u64,
}

/// A follow-up page: its token, and the cursor's results if this coordinator still has them.
struct Continuation {
    token: QueryToken,
    hits: Option<Arc<Vec<Hit>>>,
}

/// The continuation a nextToken asks for (`None` for a first page). The token must belong to
/// this query; the cursor may live on another coordinator, or have expired: then the query
/// runs again here and the page is cut from the fresh results.
fn continuation(
    app: &AppState,
    query: &Query,
    next_token: Option<&str>,
) -> Result<Option<Continuation>, ApiError> {
    let Some(token) = next_token else {
        return Ok(None);
    };
    let token: QueryToken = app.tokens.verify(token)?;
    if token.fingerprint != query.fingerprint {
        return Err(ApiError::validation(
            "The nextToken does not belong to this query: queryVector, topK, filter and queryMode must be the same as in the first request",
        ));
    }
    let cursor = app
        .cursors
        .get(token.cursor)
        .filter(|(cursor_fingerprint, _, _)| *cursor_fingerprint == query.fingerprint);
    if let Some((_, _, with_metadata)) = &cursor {
        if query.return_metadata && !with_metadata {
            return Err(ApiError::validation(
                "returnMetadata must be the same on every page of a paginated query",
            ));
        }
    }
    Ok(Some(Continuation {
        token,
        hits: cursor.map(|(_, hits, _)| hits),
    }))
}

/// All results of the query, the offset of the requested page in them, and the cursor they
/// came from (`None`: computed now).
async fn results(
    app: &AppState,
    ctx: &Ctx,
    index: &IndexRecord,
    query: &Query,
    continued: Option<Continuation>,
) -> Result<(Arc<Vec<Hit>>, usize, Option<u64>), ApiError> {
    if let Some(Continuation {
        token,
        hits: Some(hits),
    }) = continued
    {
        return Ok((hits, token.offset, Some(token.cursor)));
    }
    let hits = app
        .data
        .query(
            index,
            &ctx.request_id,
            query.vector.clone(),
            query.top_k as u32,
            query.filter.clone(),
            query.return_metadata,
        )
        .await?;
    let offset = continued.map_or(0, |continued| continued.token.offset);
    Ok((Arc::new(hits), offset, None))
}

/// The page at `offset`, rendered, and the token of the next page if more results follow. A
/// follow-up page continues the cursor it came from; a first page opens one.
fn cut_page(
    app: &AppState,
    query: &Query,
    hits: Arc<Vec<Hit>>,
    offset: usize,
    cursor: Option<u64>,
) -> (Vec<Value>, Option<String>) {
    let end = (offset + QUERY_PAGE_SIZE).min(hits.len());
    let page = hits
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|hit| hit_json(hit, query.return_distance, query.return_metadata))
        .collect();
    if end >= hits.len() {
        return (page, None);
    }
    let cursor = cursor.unwrap_or_else(|| {
        app.cursors
            .insert(query.fingerprint, hits.clone(), query.return_metadata)
    });
    let token = app.tokens.sign(&QueryToken {
        cursor,
        offset: end,
        fingerprint: query.fingerprint,
    });
    (page, Some(token))
}

/// Identifies a query for pagination: the parameters a follow-up request must repeat.
fn query_fingerprint(
    index: IndexUid,
    vector: &[f32],
    top_k: i64,
    filter: Option<&Value>,
    enhanced: bool,
) -> u64 {
    let mut bytes = Vec::with_capacity(vector.len() * 4 + 64);
    bytes.extend_from_slice(&index.0.to_le_bytes());
    for x in vector {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.extend_from_slice(&top_k.to_le_bytes());
    bytes.push(u8::from(enhanced));
    if let Some(filter) = filter {
        bytes.extend_from_slice(filter.to_string().as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_covers_what_a_follow_up_page_must_repeat() {
        let filter = json!({"genre": "drama"});
        let base = query_fingerprint(IndexUid(1), &[1.0, 2.0], 10, Some(&filter), true);
        assert_eq!(
            base,
            query_fingerprint(IndexUid(1), &[1.0, 2.0], 10, Some(&filter), true)
        );
        for other in [
            query_fingerprint(IndexUid(2), &[1.0, 2.0], 10, Some(&filter), true),
            query_fingerprint(IndexUid(1), &[1.0, 2.5], 10, Some(&filter), true),
            query_fingerprint(IndexUid(1), &[1.0, 2.0], 11, Some(&filter), true),
            query_fingerprint(IndexUid(1), &[1.0, 2.0], 10, None, true),
            query_fingerprint(IndexUid(1), &[1.0, 2.0], 10, Some(&filter), false),
        ] {
            assert_ne!(base, other);
        }
    }
}
