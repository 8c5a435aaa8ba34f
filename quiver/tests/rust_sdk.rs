//! The official AWS Rust SDK (`aws-sdk-s3vectors`) against a spawned `quiver dev`.
//!
//! The SDK is generated from the Smithy model with its own (strict) deserialisers, so this
//! checks the wire format from a second, independent client: timestamps as epoch seconds,
//! documents, unions, typed errors (`x-amzn-ErrorType`), paginators (`nextToken`) and SigV4.
//! Flow: buckets and indexes by name and by ARN, put, get, list with pagination, query with
//! filter/returnMetadata/returnDistance (and a paginated topK), tags, typed errors, deletes.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3vectors::types::{
    DataType, DistanceMetric, MetadataConfiguration, PutInputVector, VectorData,
};
use aws_sdk_s3vectors::Client;
use aws_smithy_types::{Document, Number};
use serde_json::{json, Value};

mod common;

const ACCOUNT: &str = "123456789012";

/// A `quiver dev` process on a free port with its own data dir; killed when dropped.
struct Server {
    child: Child,
    endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_until("/ready")
    }

    /// Starts a server and returns once `GET path` answers 200.
    fn start_until(path: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args([
                "dev",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("NO_COLOR", "1")
            .env("QUIVER_MAX_WRITE_REQUESTS_PER_INDEX", "0")
            .env("QUIVER_MAX_WRITE_VECTORS_PER_INDEX", "0")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("spawn quiver");
        let mut server = Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        server.wait_for(port, path);
        server
    }

    fn wait_for(&mut self, port: u16, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "quiver exited during startup ({status}):\n{}",
                    self.log_tail()
                );
            }
            if http_ok(port, path) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "quiver did not answer GET {path} within 60 s:\n{}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn client(&self) -> Client {
        common::sdk_client(&self.endpoint, "quiverdev", "quiverdevsecret")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /health` answers 200.
/// The body of `GET path`, if it answered 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

fn http_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_some()
}

fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3vectors:us-east-1:{ACCOUNT}:bucket/{bucket}")
}

fn index_arn(bucket: &str, index: &str) -> String {
    format!("{}/index/{index}", bucket_arn(bucket))
}

/// JSON -> smithy Document (metadata and filters).
fn doc(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().expect("finite number"))
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(doc).collect()),
        Value::Object(map) => {
            Document::Object(map.iter().map(|(k, v)| (k.clone(), doc(v))).collect())
        }
    }
}

/// smithy Document -> JSON, for comparisons.
fn to_json(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => json!(b),
        Document::Number(Number::PosInt(u)) => json!(u),
        Document::Number(Number::NegInt(i)) => json!(i),
        Document::Number(Number::Float(f)) => json!(f),
        Document::String(s) => json!(s),
        Document::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Document::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

const GENRES: [&str; 3] = ["drama", "comedy", "scifi"];

/// Vector `i` of the test data: a direction that varies with i, and metadata.
fn movie(i: usize) -> (String, Vec<f32>, Value) {
    let a = i as f32 * 0.07;
    let data = vec![a.cos() + 1.5, a.sin() + 1.5, 1.0 + (i % 5) as f32 * 0.1];
    let mut metadata = json!({ "genre": GENRES[i % 3], "year": 1950 + i });
    if i.is_multiple_of(10) {
        metadata["synopsis"] = json!(format!("film number {i}"));
    }
    (format!("movie-{i:04}"), data, metadata)
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_main_flow() {
    let server = Server::start();
    let client = server.client();
    let bucket = "rust-sdk-bucket";
    const N: usize = 250;

    // -- buckets
    let created = client
        .create_vector_bucket()
        .vector_bucket_name(bucket)
        .send()
        .await
        .expect("CreateVectorBucket");
    assert_eq!(
        created.vector_bucket_arn(),
        Some(bucket_arn(bucket).as_str())
    );
    let got = client
        .get_vector_bucket()
        .vector_bucket_arn(bucket_arn(bucket))
        .send()
        .await
        .expect("GetVectorBucket by ARN");
    let vb = got.vector_bucket().expect("vectorBucket");
    assert_eq!(vb.vector_bucket_name(), bucket);
    assert!(vb.creation_time().secs() > 1_700_000_000, "{vb:?}");
    let err = client
        .create_vector_bucket()
        .vector_bucket_name(bucket)
        .send()
        .await
        .expect_err("duplicate bucket")
        .into_service_error();
    assert!(err.is_conflict_exception(), "{err:?}");
    let listed = client
        .list_vector_buckets()
        .prefix("rust-sdk")
        .send()
        .await
        .expect("ListVectorBuckets");
    assert_eq!(listed.vector_buckets().len(), 1);

    // -- indexes: by bucket name and by bucket ARN
    let movies_arn = client
        .create_index()
        .vector_bucket_name(bucket)
        .index_name("movies")
        .data_type(DataType::Float32)
        .dimension(3)
        .distance_metric(DistanceMetric::Cosine)
        .metadata_configuration(
            MetadataConfiguration::builder()
                .non_filterable_metadata_keys("synopsis")
                .build()
                .expect("MetadataConfiguration"),
        )
        .send()
        .await
        .expect("CreateIndex by name")
        .index_arn()
        .expect("CreateIndex returns indexArn")
        .to_owned();
    assert_eq!(movies_arn, index_arn(bucket, "movies"));
    let other = client
        .create_index()
        .vector_bucket_arn(bucket_arn(bucket))
        .index_name("by-arn.index")
        .data_type(DataType::Float32)
        .dimension(2)
        .distance_metric(DistanceMetric::Euclidean)
        .send()
        .await
        .expect("CreateIndex by bucket ARN");
    assert_eq!(
        other.index_arn(),
        Some(index_arn(bucket, "by-arn.index").as_str())
    );
    let err = client
        .create_index()
        .vector_bucket_name(bucket)
        .index_name("movies")
        .data_type(DataType::Float32)
        .dimension(3)
        .distance_metric(DistanceMetric::Cosine)
        .send()
        .await
        .expect_err("duplicate index")
        .into_service_error();
    assert!(err.is_conflict_exception(), "{err:?}");
    let index = client
        .get_index()
        .index_arn(&movies_arn)
        .send()
        .await
        .expect("GetIndex by ARN");
    let index = index.index().expect("index");
    assert_eq!(index.index_name(), "movies");
    assert_eq!(index.dimension(), 3);
    assert_eq!(index.distance_metric(), &DistanceMetric::Cosine);
    assert_eq!(index.data_type(), &DataType::Float32);
    assert_eq!(
        index
            .metadata_configuration()
            .map(|m| m.non_filterable_metadata_keys().to_vec()),
        Some(vec!["synopsis".to_owned()])
    );
    let names: Vec<String> = client
        .list_indexes()
        .vector_bucket_name(bucket)
        .into_paginator()
        .page_size(1)
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("ListIndexes pages")
        .into_iter()
        .map(|i| i.index_name().to_owned())
        .collect();
    assert_eq!(names, vec!["by-arn.index".to_owned(), "movies".to_owned()]);
    let err = client
        .get_index()
        .vector_bucket_name(bucket)
        .index_name("no-such-index")
        .send()
        .await
        .expect_err("unknown index")
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some("The specified index could not be found")
    );

    // -- put (by index ARN, two batches) and get (by name)
    let all: Vec<_> = (0..N).map(movie).collect();
    for chunk in all.chunks(200) {
        let vectors: Vec<PutInputVector> = chunk
            .iter()
            .map(|(key, data, metadata)| {
                PutInputVector::builder()
                    .key(key)
                    .data(VectorData::Float32(data.clone()))
                    .metadata(doc(metadata))
                    .build()
                    .expect("PutInputVector")
            })
            .collect();
        client
            .put_vectors()
            .index_arn(&movies_arn)
            .set_vectors(Some(vectors))
            .send()
            .await
            .expect("PutVectors");
    }
    let got = client
        .get_vectors()
        .vector_bucket_name(bucket)
        .index_name("movies")
        .keys("movie-0010")
        .keys("movie-0011")
        .keys("not-there")
        .return_data(true)
        .return_metadata(true)
        .send()
        .await
        .expect("GetVectors");
    let mut got: Vec<_> = got.vectors().to_vec();
    got.sort_by(|a, b| a.key().cmp(b.key()));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].key(), "movie-0010");
    assert_eq!(
        got[0].data().and_then(|d| d.as_float32().ok()),
        Some(&all[10].1)
    );
    assert_eq!(got[0].metadata().map(to_json), Some(all[10].2.clone()));
    assert_eq!(got[1].metadata().map(to_json), Some(all[11].2.clone()));

    // -- list: paginator over pages of 100, every key exactly once
    let mut pages = client
        .list_vectors()
        .index_arn(&movies_arn)
        .into_paginator()
        .page_size(100)
        .send();
    let mut page_count = 0;
    let mut listed = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.expect("ListVectors page");
        page_count += 1;
        listed.extend(page.vectors().iter().map(|v| v.key().to_owned()));
    }
    let unique: BTreeSet<_> = listed.iter().cloned().collect();
    assert_eq!(listed.len(), N, "listed {} keys", listed.len());
    assert_eq!(unique.len(), N, "duplicate keys in the listing");
    assert!(
        page_count >= 3,
        "{N} vectors in pages of 100 took {page_count} pages"
    );

    // -- query with a filter, metadata and distances
    let q = vec![1.0f32, 2.0, 1.2];
    let filter = json!({"$and": [{"genre": "scifi"}, {"year": {"$gte": 2000}}]});
    let res = client
        .query_vectors()
        .vector_bucket_name(bucket)
        .index_name("movies")
        .top_k(10)
        .query_vector(VectorData::Float32(q.clone()))
        .filter(doc(&filter))
        .return_metadata(true)
        .return_distance(true)
        .send()
        .await
        .expect("QueryVectors");
    assert_eq!(res.distance_metric(), Some(&DistanceMetric::Cosine));
    let hits = res.vectors();
    assert_eq!(hits.len(), 10);
    let mut expected: Vec<(f64, &str)> = all
        .iter()
        .filter(|(_, _, m)| m["genre"] == "scifi" && m["year"].as_u64() >= Some(2000))
        .map(|(k, d, _)| (cosine_distance(&q, d), k.as_str()))
        .collect();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    for (hit, (want_distance, _)) in hits.iter().zip(&expected) {
        let metadata = to_json(hit.metadata().expect("metadata requested"));
        assert_eq!(metadata["genre"], "scifi", "{hit:?}");
        assert!(metadata["year"].as_u64() >= Some(2000), "{hit:?}");
        let distance = f64::from(hit.distance().expect("distance requested"));
        assert!(
            (distance - want_distance).abs() < 1e-4,
            "{}: distance {distance}, brute force {want_distance}",
            hit.key()
        );
    }
    let distances: Vec<f32> = hits.iter().filter_map(|h| h.distance()).collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{distances:?}");
    // Without the flags neither distance nor metadata comes back.
    let plain = client
        .query_vectors()
        .index_arn(&movies_arn)
        .top_k(3)
        .query_vector(VectorData::Float32(q.clone()))
        .send()
        .await
        .expect("QueryVectors without flags");
    assert!(plain
        .vectors()
        .iter()
        .all(|h| h.distance().is_none() && h.metadata().is_none()));
    // A topK above one page (100) through the SDK's QueryVectors paginator.
    let keys: Vec<String> = client
        .query_vectors()
        .index_arn(&movies_arn)
        .top_k(N as i32)
        .query_vector(VectorData::Float32(q.clone()))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("QueryVectors pages")
        .into_iter()
        .map(|h| h.key().to_owned())
        .collect();
    assert_eq!(keys.len(), N);
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), N);
    let err = client
        .query_vectors()
        .index_arn(&movies_arn)
        .top_k(3)
        .query_vector(VectorData::Float32(vec![1.0, 2.0]))
        .send()
        .await
        .expect_err("wrong dimension")
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");

    // -- tags on the bucket and on an index
    for arn in [bucket_arn(bucket), movies_arn.clone()] {
        client
            .tag_resource()
            .resource_arn(&arn)
            .tags("team", "search")
            .tags("env", "test")
            .send()
            .await
            .expect("TagResource");
        let tags = client
            .list_tags_for_resource()
            .resource_arn(&arn)
            .send()
            .await
            .expect("ListTagsForResource");
        let want: HashMap<String, String> = [("team", "search"), ("env", "test")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(tags.tags(), &want);
        client
            .untag_resource()
            .resource_arn(&arn)
            .tag_keys("env")
            .send()
            .await
            .expect("UntagResource");
        let tags = client
            .list_tags_for_resource()
            .resource_arn(&arn)
            .send()
            .await
            .expect("ListTagsForResource");
        assert_eq!(tags.tags().keys().collect::<Vec<_>>(), vec!["team"]);
    }
    let err = client
        .list_tags_for_resource()
        .resource_arn(bucket_arn("no-such-bucket"))
        .send()
        .await
        .expect_err("tags of an unknown bucket")
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");

    // -- deletes
    client
        .delete_vectors()
        .index_arn(&movies_arn)
        .keys("movie-0010")
        .keys("movie-0011")
        .send()
        .await
        .expect("DeleteVectors");
    let got = client
        .get_vectors()
        .index_arn(&movies_arn)
        .keys("movie-0010")
        .keys("movie-0012")
        .send()
        .await
        .expect("GetVectors after delete");
    assert_eq!(
        got.vectors().iter().map(|v| v.key()).collect::<Vec<_>>(),
        vec!["movie-0012"]
    );
    let err = client
        .delete_vector_bucket()
        .vector_bucket_name(bucket)
        .send()
        .await
        .expect_err("bucket with indexes")
        .into_service_error();
    assert!(err.is_conflict_exception(), "{err:?}");
    client
        .delete_index()
        .index_arn(&movies_arn)
        .send()
        .await
        .expect("DeleteIndex by ARN");
    client
        .delete_index()
        .vector_bucket_name(bucket)
        .index_name("by-arn.index")
        .send()
        .await
        .expect("DeleteIndex by name");
    client
        .delete_vector_bucket()
        .vector_bucket_arn(bucket_arn(bucket))
        .send()
        .await
        .expect("DeleteVectorBucket by ARN");
    let err = client
        .get_vector_bucket()
        .vector_bucket_name(bucket)
        .send()
        .await
        .expect_err("deleted bucket")
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
    assert_eq!(
        err.meta().message(),
        Some("The specified vector bucket could not be found")
    );
}

/// `/ready` means every operation can be served: the moment it answers 200, a CreateIndex
/// (which needs a live storage node to place its shards) succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_create_index_succeeds() {
    let server = Server::start_until("/ready");
    let s3v = server.client();
    s3v.create_vector_bucket()
        .vector_bucket_name("ready")
        .send()
        .await
        .expect("create bucket right after /ready");
    s3v.create_index()
        .vector_bucket_name("ready")
        .index_name("first")
        .data_type(DataType::Float32)
        .dimension(4)
        .distance_metric(DistanceMetric::Cosine)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateIndex right after /ready: {e:?}\n{}",
                server.log_tail()
            )
        });
}

/// Every metric the Grafana dashboard (`deploy/grafana/quiver-dashboard.json`) queries is one a
/// coordinator serves on `/metrics`, so a renamed metric cannot leave a panel silently empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_metrics_quiver_serves() {
    let server = Server::start();
    // One request, so the per-operation families have samples.
    server
        .client()
        .list_vector_buckets()
        .send()
        .await
        .expect("ListVectorBuckets");
    let port: u16 = server
        .endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let exposition = http_get(port, "/metrics").expect("/metrics answers 200");
    let served: BTreeSet<&str> = exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let dashboard_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/quiver-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_path).expect("dashboard"))
            .expect("dashboard JSON");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("quiver_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 8, "the dashboard queries {queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !served.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not serve: {missing:?}\nserved: {served:?}"
    );
}
