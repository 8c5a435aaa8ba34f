"""Listing and paginated queries at scale: 100,000 vectors (dimension 8).

* a parallel ListVectors scan with 16 segments (16 threads, maxResults 1000) returns every key
  exactly once;
* QueryVectors with topK 10,000 comes back in pages of at most 100 following nextToken: exactly
  10,000 distinct keys in non-decreasing distance order, with correct distances;
* a follow-up page request that changes the query (queryVector, topK, filter) is rejected;
* pages are stable: keys deleted and vectors added between page fetches do not change the pages
  of a query already under way;
* forged or edited tokens (ListVectors, ListIndexes, ListVectorBuckets, QueryVectors) and
  ListVectors tokens replayed against another segment or index are ValidationExceptions.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from apiutil import api_error, cleanup_bucket, query_all, unique_name

N = 100_000
DIM = 8
SEGMENTS = 16
TOP_K = 10_000
PAGE = 100


@pytest.fixture(scope="module")
def big(quiver):
    """A bucket with a 100,000-vector index ("big") and a small second index ("small")."""
    client = quiver.client(max_pool_connections=SEGMENTS * 2, retries={"max_attempts": 5, "mode": "standard"})
    bucket = unique_name("scale")
    client.create_vector_bucket(vectorBucketName=bucket)
    client.create_index(vectorBucketName=bucket, indexName="big", dataType="float32", dimension=DIM,
                        distanceMetric="euclidean")
    client.create_index(vectorBucketName=bucket, indexName="small", dataType="float32", dimension=DIM,
                        distanceMetric="euclidean")
    rng = np.random.default_rng(20261123)
    data = rng.standard_normal((N, DIM)).astype(np.float32)
    keys = [f"v{i:06d}" for i in range(N)]
    kw = {"vectorBucketName": bucket, "indexName": "big"}

    def put(start: int) -> None:
        batch = [{"key": keys[i], "data": {"float32": data[i].tolist()}, "metadata": {"part": i % 4}}
                 for i in range(start, min(N, start + 500))]
        client.put_vectors(vectors=batch, **kw)

    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(put, range(0, N, 500)))
    load_s = time.monotonic() - started
    client.put_vectors(vectorBucketName=bucket, indexName="small",
                       vectors=[{"key": f"s{i}", "data": {"float32": data[i].tolist()}} for i in range(50)])
    yield {"client": client, "bucket": bucket, "kw": kw, "keys": keys, "data": data, "load_s": load_s,
           "small": {"vectorBucketName": bucket, "indexName": "small"}}
    cleanup_bucket(client, bucket)


def scan_segment(client, kw: dict, segment: int, pages: list) -> list[str]:
    keys: list[str] = []
    token = None
    while True:
        req = dict(kw, segmentCount=SEGMENTS, segmentIndex=segment, maxResults=1000)
        if token:
            req["nextToken"] = token
        resp = client.list_vectors(**req)
        assert len(resp["vectors"]) <= 1000
        keys.extend(v["key"] for v in resp["vectors"])
        pages.append(segment)
        token = resp.get("nextToken")
        if not token:
            return keys
        assert len(pages) < 10_000, "ListVectors keeps returning nextToken"


def test_parallel_segmented_scan_returns_each_key_once(big):
    client, kw = big["client"], big["kw"]
    pages: list[int] = []
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def worker(segment: int) -> None:
        try:
            results[segment] = scan_segment(client, kw, segment, pages)
        except BaseException as e:  # reported below, with the segment
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(SEGMENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, f"segment scans failed: {errors[:3]}"
    assert sorted(results) == list(range(SEGMENTS))
    everything = [k for seg in results.values() for k in seg]
    seen: dict[str, int] = {}
    for segment, seg_keys in results.items():
        for k in seg_keys:
            assert k not in seen, f"{k} listed by segment {seen[k]} and segment {segment}"
            seen[k] = segment
    assert len(everything) == N, f"segments listed {len(everything)} keys, expected {N}"
    assert set(everything) == set(big["keys"])
    sizes = sorted(len(v) for v in results.values())
    assert sizes[0] > 0, f"a segment is empty: segment sizes {sizes}"
    assert len(pages) >= N // 1000, f"{len(pages)} pages for {N} keys with maxResults 1000"


def _query(big, vector, **extra) -> dict:
    return dict(big["kw"], topK=TOP_K, queryVector={"float32": [float(x) for x in vector]}, returnDistance=True, **extra)


def test_query_top_10000_paginated(big):
    client, data = big["client"], big["data"]
    q = data[123] * 0.5 + 0.1
    req = _query(big, q)
    pages = []
    token = None
    while True:
        resp = client.query_vectors(**(dict(req, nextToken=token) if token else req))
        assert resp["distanceMetric"] == "euclidean"
        assert len(resp["vectors"]) <= PAGE, f"page {len(pages)} has {len(resp['vectors'])} results"
        pages.append(resp["vectors"])
        token = resp.get("nextToken")
        if not token:
            break
        assert len(pages) <= TOP_K, "QueryVectors keeps returning nextToken"
    hits = [h for page in pages for h in page]
    keys = [h["key"] for h in hits]
    assert len(hits) == TOP_K, f"{len(hits)} results over {len(pages)} pages, expected {TOP_K}"
    assert len(set(keys)) == TOP_K, f"{TOP_K - len(set(keys))} duplicate keys across pages"
    assert len(pages) == TOP_K // PAGE and all(len(p) == PAGE for p in pages), [len(p) for p in pages]
    distances = [h["distance"] for h in hits]
    bad = [i for i in range(1, len(distances)) if distances[i] < distances[i - 1]]
    assert not bad, f"distance decreases at ranks {bad[:5]}: {[distances[i - 1:i + 1] for i in bad[:3]]}"

    # The distances are the true L2 distances of the returned vectors, and the result is (nearly)
    # the exact top 10,000.
    index_of = {k: i for i, k in enumerate(big["keys"])}
    idx = np.array([index_of[k] for k in keys])
    true = np.linalg.norm(data[idx] - q.astype(np.float32), axis=1)
    assert np.allclose(np.array(distances), true, atol=1e-4), "returned distances differ from brute force"
    all_d = np.linalg.norm(data - q.astype(np.float32), axis=1)
    exact = set(np.argsort(all_d, kind="stable")[:TOP_K].tolist())
    recall = len(exact & set(idx.tolist())) / TOP_K
    assert recall >= 0.95, f"recall@{TOP_K} = {recall:.3f} against brute force"


def test_query_follow_up_must_repeat_the_query(big, s3v_raw):
    client, data = big["client"], big["data"]
    req = _query(big, data[7])
    first = client.query_vectors(**req)
    token = first["nextToken"]
    other_vector = _query(big, data[8], nextToken=token)
    api_error(s3v_raw.query_vectors, "ValidationException", **other_vector)
    api_error(s3v_raw.query_vectors, "ValidationException", **dict(req, topK=TOP_K - 1, nextToken=token))
    api_error(s3v_raw.query_vectors, "ValidationException", **dict(req, filter={"part": 1}, nextToken=token))
    api_error(s3v_raw.query_vectors, "ValidationException",
              **dict(big["small"], topK=TOP_K, queryVector=req["queryVector"], nextToken=token))
    # The unchanged follow-up still works after the rejected ones.
    second = client.query_vectors(**dict(req, nextToken=token))
    assert {h["key"] for h in second["vectors"]}.isdisjoint(h["key"] for h in first["vectors"])


def _flip(token: str, pos: int) -> str:
    c = token[pos]
    repl = "A" if c != "A" else "B"
    return token[:pos] + repl + token[pos + 1 :]


def _forgeries(token: str) -> dict[str, str]:
    n = len(token)
    return {
        "first-char": _flip(token, 0),
        "middle-char": _flip(token, n // 2),
        "two-thirds-char": _flip(token, (2 * n) // 3),
        "truncated": token[: n - 5],
        "appended": token + "AAAA",
    }


def test_forged_tokens_rejected(big, s3v, s3v_raw):
    client = big["client"]
    bucket = big["bucket"]
    tokens = {}
    tokens["ListVectors"] = (s3v_raw.list_vectors, dict(big["kw"], maxResults=10),
                             client.list_vectors(**big["kw"], maxResults=10)["nextToken"])
    tokens["ListIndexes"] = (s3v_raw.list_indexes, {"vectorBucketName": bucket, "maxResults": 1},
                             client.list_indexes(vectorBucketName=bucket, maxResults=1)["nextToken"])
    extra = [unique_name("scale-tok") for _ in range(2)]
    for name in extra:
        s3v.create_vector_bucket(vectorBucketName=name)
    try:
        tokens["ListVectorBuckets"] = (s3v_raw.list_vector_buckets, {"maxResults": 1},
                                       client.list_vector_buckets(maxResults=1)["nextToken"])
        q = _query(big, big["data"][1])
        tokens["QueryVectors"] = (s3v_raw.query_vectors, q, client.query_vectors(**q)["nextToken"])
        for op, (call, kw, token) in tokens.items():
            call(**dict(kw, nextToken=token))  # the genuine token works
            for label, forged in _forgeries(token).items():
                if forged == token:
                    continue
                try:
                    api_error(call, "ValidationException", **dict(kw, nextToken=forged))
                except AssertionError as e:
                    raise AssertionError(f"{op} with a forged token ({label}): {e}") from None
        # A token of one listing is not a token of another.
        api_error(s3v_raw.list_indexes, "ValidationException", vectorBucketName=bucket,
                  nextToken=tokens["ListVectors"][2])
        api_error(s3v_raw.list_vectors, "ValidationException", nextToken=tokens["ListIndexes"][2], **big["kw"])
        api_error(s3v_raw.list_vector_buckets, "ValidationException", nextToken=tokens["ListIndexes"][2])
    finally:
        for name in extra:
            cleanup_bucket(s3v, name)


def test_list_vectors_token_bound_to_segment_and_index(big, s3v_raw):
    client, kw = big["client"], big["kw"]
    seg = client.list_vectors(**kw, segmentCount=4, segmentIndex=1, maxResults=5)
    token = seg["nextToken"]
    client.list_vectors(**kw, segmentCount=4, segmentIndex=1, maxResults=5, nextToken=token)
    for other in ({"segmentCount": 4, "segmentIndex": 2}, {"segmentCount": 8, "segmentIndex": 1}, {}):
        try:
            api_error(s3v_raw.list_vectors, "ValidationException", maxResults=5, nextToken=token, **kw, **other)
        except AssertionError as e:
            raise AssertionError(f"segment token used with {other or 'no segment'}: {e}") from None
    api_error(s3v_raw.list_vectors, "ValidationException", maxResults=5, nextToken=token,
              segmentCount=4, segmentIndex=1, **big["small"])
    plain = client.list_vectors(**kw, maxResults=5)["nextToken"]
    api_error(s3v_raw.list_vectors, "ValidationException", maxResults=5, nextToken=plain, **big["small"])
    api_error(s3v_raw.list_vectors, "ValidationException", maxResults=5, nextToken=plain, segmentCount=4,
              segmentIndex=0, **kw)


def test_query_pages_stable_against_writes(big):
    """Keys deleted (and vectors added) between page fetches do not change later pages.

    Runs last in this file: it deletes and then restores some vectors of the shared index.
    """
    client, data, kw = big["client"], big["data"], big["kw"]
    top_k = 1_000
    q = data[4242] * 0.9
    req = dict(kw, topK=top_k, queryVector={"float32": [float(x) for x in q]}, returnDistance=True)
    reference = [(h["key"], h["distance"]) for h in query_all(client, **req)["vectors"]]
    assert len(reference) == top_k

    first = client.query_vectors(**req)
    assert [h["key"] for h in first["vectors"]] == [k for k, _ in reference[:PAGE]]
    # Delete keys that are ranked on later pages (and one already returned), and add vectors that
    # would now rank first.
    doomed = [k for k, _ in reference[150:160]] + [k for k, _ in reference[555:560]] + [reference[3][0]]
    index_of = {k: i for i, k in enumerate(big["keys"])}
    client.delete_vectors(keys=doomed, **kw)
    newcomers = [{"key": f"new-{i}", "data": {"float32": [float(x) for x in q]}} for i in range(5)]
    client.put_vectors(vectors=newcomers, **kw)
    try:
        rest = []
        token = first["nextToken"]
        while token:
            resp = client.query_vectors(**dict(req, nextToken=token))
            rest.extend((h["key"], h["distance"]) for h in resp["vectors"])
            token = resp.get("nextToken")
        assert [k for k, _ in rest] == [k for k, _ in reference[PAGE:]], (
            "later pages changed after writes between page fetches"
        )
        assert [d for _, d in rest] == pytest.approx([d for _, d in reference[PAGE:]], abs=1e-6)
        # A new query sees the writes.
        fresh = [h["key"] for h in query_all(client, **req)["vectors"]]
        assert set(fresh[:5]) == {v["key"] for v in newcomers}
        assert not set(doomed) & set(fresh)
    finally:
        client.delete_vectors(keys=[v["key"] for v in newcomers], **kw)
        client.put_vectors(vectors=[{"key": k, "data": {"float32": data[index_of[k]].tolist()},
                                     "metadata": {"part": index_of[k] % 4}} for k in doomed], **kw)


def test_load_time_reported(big):
    """Not a benchmark: just keeps the bulk-load time visible in the output (-rA)."""
    print(f"loaded {N} vectors (dimension {DIM}, 6 threads, batches of 500) in {big['load_s']:.1f} s")
    assert big["load_s"] < 60, f"bulk load took {big['load_s']:.1f} s"
