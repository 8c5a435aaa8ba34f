//! QueryVectors against a brute-force oracle computed here from the vectors the test put (not
//! from the node's data): the merge over shards, filters, paging of a large topK.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::harness::*;

const GENRES: [&str; 3] = ["drama", "comedy", "news"];

struct Item {
    key: String,
    vector: Vec<f32>,
    genre: &'static str,
    year: i64,
    /// Only on every fifth item.
    tags: Option<Vec<&'static str>>,
}

/// Puts 300 seeded random vectors of dimension 8 into bk1/ix1 (created with `metric`).
async fn dataset(h: &Harness, metric: &str) -> Vec<Item> {
    h.bucket_with_index("bk1", "ix1", 8, metric).await;
    let mut rng = StdRng::seed_from_u64(42);
    let items: Vec<Item> = (0..300)
        .map(|i| Item {
            key: format!("v{i:03}"),
            vector: (0..8).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
            genre: GENRES[i % 3],
            year: 1990 + (i as i64 % 30),
            tags: (i % 5 == 0).then(|| vec!["a", if i % 2 == 0 { "even" } else { "odd" }]),
        })
        .collect();
    for chunk in items.chunks(100) {
        let vectors: Vec<Value> = chunk
            .iter()
            .map(|item| {
                let mut metadata = json!({"genre": item.genre, "year": item.year});
                if let Some(tags) = &item.tags {
                    metadata["tags"] = json!(tags);
                }
                json!({"key": item.key, "data": {"float32": item.vector}, "metadata": metadata})
            })
            .collect();
        h.call(
            Who::Dev,
            "PutVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "vectors": vectors}),
        )
        .await
        .ok_empty();
    }
    items
}

fn oracle_distance(metric: &str, a: &[f32], b: &[f32]) -> f64 {
    let a: Vec<f64> = a.iter().map(|x| f64::from(*x)).collect();
    let b: Vec<f64> = b.iter().map(|x| f64::from(*x)).collect();
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    match metric {
        "euclidean" => a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt(),
        _ => 1.0 - dot / (norm(&a) * norm(&b)),
    }
}

/// The best `k` of the items `keep` accepts: (key, distance), ascending by distance then key.
fn oracle(
    items: &[Item],
    metric: &str,
    query: &[f32],
    k: usize,
    keep: impl Fn(&Item) -> bool,
) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = items
        .iter()
        .filter(|item| keep(item))
        .map(|item| {
            (
                item.key.clone(),
                oracle_distance(metric, query, &item.vector),
            )
        })
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// The (key, distance) pairs of a QueryVectors answer.
fn hits(out: &Value) -> Vec<(String, f64)> {
    out["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|v| {
            let distance = v["distance"].as_f64().expect("distance");
            (v["key"].as_str().expect("key").to_owned(), distance)
        })
        .collect()
}

#[track_caller]
fn assert_same(got: &[(String, f64)], want: &[(String, f64)]) {
    let keys = |list: &[(String, f64)]| list.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(got), keys(want));
    for ((key, got), (_, want)) in got.iter().zip(want) {
        assert!((got - want).abs() < 1e-5, "{key}: distance {got} vs {want}");
    }
}

fn query_vector(seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..8).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

#[tokio::test]
async fn query_returns_the_brute_force_top_k() {
    for metric in ["euclidean", "cosine"] {
        let h = Harness::new();
        let items = dataset(&h, metric).await;
        for (seed, k) in [(1, 1), (2, 10), (3, 37), (4, 100)] {
            let query = query_vector(seed);
            let out = h
                .call(
                    Who::Dev,
                    "QueryVectors",
                    json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": k,
                           "queryVector": {"float32": query}, "returnDistance": true}),
                )
                .await
                .ok();
            assert_eq!(out["distanceMetric"], metric);
            assert!(out.get("nextToken").is_none());
            assert_same(&hits(&out), &oracle(&items, metric, &query, k, |_| true));
        }
        // A vector that was put is its own nearest neighbour, at distance 0.
        let out = h
            .call(
                Who::Dev,
                "QueryVectors",
                json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": 1,
                       "queryVector": {"float32": items[123].vector}, "returnDistance": true}),
            )
            .await
            .ok();
        assert_eq!(out["vectors"][0]["key"], "v123");
        assert!(
            out["vectors"][0]["distance"]
                .as_f64()
                .expect("distance")
                .abs()
                < 1e-6
        );
    }
}

#[tokio::test]
async fn filtered_queries_match_the_oracle() {
    let h = Harness::new();
    let items = dataset(&h, "euclidean").await;
    type Keep = Box<dyn Fn(&Item) -> bool>;
    let has_tag = |item: &Item, tag: &str| item.tags.as_ref().is_some_and(|t| t.contains(&tag));
    let cases: Vec<(Value, Keep)> = vec![
        (
            json!({"genre": "drama"}),
            Box::new(|i: &Item| i.genre == "drama"),
        ),
        (
            json!({"genre": {"$eq": "news"}}),
            Box::new(|i: &Item| i.genre == "news"),
        ),
        (
            json!({"genre": {"$ne": "news"}}),
            Box::new(|i: &Item| i.genre != "news"),
        ),
        (
            json!({"genre": {"$in": ["comedy", "news"]}}),
            Box::new(|i: &Item| i.genre != "drama"),
        ),
        (
            json!({"genre": {"$nin": ["comedy", "news"]}}),
            Box::new(|i: &Item| i.genre == "drama"),
        ),
        (
            json!({"year": {"$gt": 2010}}),
            Box::new(|i: &Item| i.year > 2010),
        ),
        (
            json!({"year": {"$gte": 2010}}),
            Box::new(|i: &Item| i.year >= 2010),
        ),
        (
            json!({"year": {"$lt": 1995}}),
            Box::new(|i: &Item| i.year < 1995),
        ),
        (
            json!({"year": {"$lte": 1995}}),
            Box::new(|i: &Item| i.year <= 1995),
        ),
        (
            json!({"tags": {"$exists": true}}),
            Box::new(|i: &Item| i.tags.is_some()),
        ),
        (
            json!({"tags": {"$exists": false}}),
            Box::new(|i: &Item| i.tags.is_none()),
        ),
        // A list value matches when any element does; $ne needs the key.
        (
            json!({"tags": "even"}),
            Box::new(move |i: &Item| has_tag(i, "even")),
        ),
        (
            json!({"tags": {"$ne": "even"}}),
            Box::new(move |i: &Item| i.tags.is_some() && !has_tag(i, "even")),
        ),
        (
            json!({"$and": [{"genre": "drama"}, {"year": {"$gte": 2000}}]}),
            Box::new(|i: &Item| i.genre == "drama" && i.year >= 2000),
        ),
        (
            json!({"$or": [{"genre": "comedy"}, {"year": {"$lt": 1993}}]}),
            Box::new(|i: &Item| i.genre == "comedy" || i.year < 1993),
        ),
        // Several keys in one object are ANDed; comparisons are type-strict.
        (
            json!({"genre": "news", "year": {"$gte": 2015}}),
            Box::new(|i: &Item| i.genre == "news" && i.year >= 2015),
        ),
        (json!({"year": "2000"}), Box::new(|_: &Item| false)),
    ];
    for (seed, (filter, keep)) in (10..).zip(cases) {
        let query = query_vector(seed);
        let out = h
            .call(
                Who::Dev,
                "QueryVectors",
                json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": 15,
                       "queryVector": {"float32": query}, "filter": filter,
                       "returnDistance": true, "returnMetadata": true}),
            )
            .await
            .ok();
        let want = oracle(&items, "euclidean", &query, 15, keep);
        assert_same(&hits(&out), &want);
        // The metadata of each hit is the metadata that was put.
        for hit in out["vectors"].as_array().expect("vectors") {
            let key = hit["key"].as_str().expect("key");
            let item = items.iter().find(|i| i.key == key).expect("an item");
            assert_eq!(hit["metadata"]["genre"], item.genre, "{filter}");
            assert_eq!(hit["metadata"]["year"], item.year, "{filter}");
        }
    }
}

#[tokio::test]
async fn a_large_top_k_is_paged_with_next_token() {
    let h = Harness::new();
    let items = dataset(&h, "cosine").await;
    let query = query_vector(99);
    let base = json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": 250,
                      "queryVector": {"float32": query}, "returnDistance": true});
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    let mut body = base.clone();
    loop {
        let out = h.call(Who::Dev, "QueryVectors", body.clone()).await.ok();
        let page = hits(&out);
        sizes.push(page.len());
        all.extend(page);
        let Some(token) = out.get("nextToken") else {
            break;
        };
        // A token is bound to its query: another topK gets a ValidationException.
        let mut other = body.clone();
        other["topK"] = json!(249);
        other["nextToken"] = token.clone();
        h.refused(Who::Dev, "QueryVectors", other, 400, "ValidationException")
            .await;
        body = base.clone();
        body["nextToken"] = token.clone();
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_same(&all, &oracle(&items, "cosine", &query, 250, |_| true));
    // A topK above what matches (100 dramas): every match once, one page.
    let out = h
        .call(
            Who::Dev,
            "QueryVectors",
            json!({"vectorBucketName": "bk1", "indexName": "ix1", "topK": 150,
                   "queryVector": {"float32": query}, "filter": {"genre": "drama"}}),
        )
        .await
        .ok();
    assert!(out.get("nextToken").is_none());
    let mut got: Vec<String> = out["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|v| v["key"].as_str().expect("key").to_owned())
        .collect();
    got.sort();
    let dramas: Vec<String> = items
        .iter()
        .filter(|i| i.genre == "drama")
        .map(|i| i.key.clone())
        .collect();
    assert_eq!(got, dramas);
    // An empty index answers no vectors.
    h.bucket_with_index("bk1", "empty", 8, "cosine").await;
    let out = h
        .call(
            Who::Dev,
            "QueryVectors",
            json!({"vectorBucketName": "bk1", "indexName": "empty", "topK": 5,
                   "queryVector": {"float32": query}}),
        )
        .await
        .ok();
    assert_eq!(out, json!({"vectors": [], "distanceMetric": "cosine"}));
}
