"""Data plane: PutVectors / GetVectors / ListVectors / DeleteVectors.

Covers addressing by name and ARN, the returnData/returnMetadata flags, float32 rounding,
upsert semantics, read-after-write consistency, ListVectors pagination and segments, and input
validation (every rejected batch must leave the index untouched).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from apiutil import (
    api_error,
    assert_request_id,
    cleanup_bucket,
    f32_list,
    get_map,
    index_arn,
    list_all,
    query_all,
    unique_name,
    vec,
)

INDEX_NOT_FOUND = "The specified index could not be found"


@pytest.fixture
def idx(new_index):
    return new_index(dimension=4, metric="euclidean")


def keys_of(items) -> list[str]:
    return [item["key"] for item in items]


def stored_keys(s3v, ix) -> list[str]:
    items, _ = list_all(s3v, **ix.by_name)
    return keys_of(items)


# -- basic CRUD ----------------------------------------------------------------------------------


@pytest.mark.parametrize("addressing", ["by_name", "by_arn"])
def test_put_get_list_delete(s3v, idx, addressing):
    kw = getattr(idx, addressing)
    resp = s3v.put_vectors(
        vectors=[
            vec("a", [1, 2, 3, 4], {"color": "red", "n": 1}),
            vec("b", [5, 6, 7, 8]),
        ],
        **kw,
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert_request_id(resp)

    got = get_map(s3v, kw, ["a", "b"])
    assert set(got) == {"a", "b"}
    assert got["a"]["data"]["float32"] == [1.0, 2.0, 3.0, 4.0]
    assert got["a"]["metadata"] == {"color": "red", "n": 1}
    assert got["b"]["data"]["float32"] == [5.0, 6.0, 7.0, 8.0]
    assert got["b"]["metadata"] == {}

    items, _ = list_all(s3v, **kw)
    assert sorted(keys_of(items)) == ["a", "b"]

    resp = s3v.delete_vectors(keys=["a"], **kw)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert keys_of(s3v.get_vectors(keys=["a", "b"], **kw)["vectors"]) == ["b"]
    assert sorted(stored_keys(s3v, idx)) == ["b"]


def test_name_and_arn_address_the_same_index(s3v, idx):
    s3v.put_vectors(vectors=[vec("x", [1, 1, 1, 1])], **idx.by_name)
    assert keys_of(s3v.get_vectors(keys=["x"], **idx.by_arn)["vectors"]) == ["x"]
    s3v.delete_vectors(keys=["x"], **idx.by_arn)
    assert s3v.get_vectors(keys=["x"], **idx.by_name)["vectors"] == []


def test_return_flags(s3v, idx):
    s3v.put_vectors(
        vectors=[vec("with-md", [1, 0, 0, 0], {"genre": "drama"}), vec("no-md", [0, 1, 0, 0])],
        **idx.by_name,
    )
    keys = ["with-md", "no-md"]

    plain = s3v.get_vectors(keys=keys, **idx.by_name)["vectors"]
    for item in plain:
        assert set(item) == {"key"}, f"without flags items must only have 'key', got {item}"

    data_only = {v["key"]: v for v in s3v.get_vectors(keys=keys, returnData=True, **idx.by_name)["vectors"]}
    for item in data_only.values():
        assert set(item) == {"key", "data"}, f"returnData only: got {item}"
    assert data_only["no-md"]["data"] == {"float32": [0.0, 1.0, 0.0, 0.0]}

    md_only = {v["key"]: v for v in s3v.get_vectors(keys=keys, returnMetadata=True, **idx.by_name)["vectors"]}
    for item in md_only.values():
        assert set(item) == {"key", "metadata"}, f"returnMetadata only: got {item}"
    assert md_only["with-md"]["metadata"] == {"genre": "drama"}
    assert md_only["no-md"]["metadata"] == {}, "returnMetadata on a vector without metadata must give {}"

    explicit_false = s3v.get_vectors(keys=keys, returnData=False, returnMetadata=False, **idx.by_name)
    for item in explicit_false["vectors"]:
        assert set(item) == {"key"}

    # Same shape rules for ListVectors.
    for item in s3v.list_vectors(**idx.by_name)["vectors"]:
        assert set(item) == {"key"}, f"ListVectors without flags: {item}"
    listed = {v["key"]: v for v in s3v.list_vectors(returnData=True, returnMetadata=True, **idx.by_name)["vectors"]}
    assert listed["with-md"]["metadata"] == {"genre": "drama"}
    assert listed["no-md"]["metadata"] == {}
    assert listed["with-md"]["data"] == {"float32": [1.0, 0.0, 0.0, 0.0]}


def test_float32_rounding(s3v, idx):
    values = [0.1, 1 / 3, 2.5e-08, 16777217.0]  # 16777217 is not representable in f32
    s3v.put_vectors(vectors=[vec("r", values)], **idx.by_name)
    want = f32_list(values)
    assert want[0] == 0.10000000149011612 and want[3] == 16777216.0

    got = s3v.get_vectors(keys=["r"], returnData=True, **idx.by_name)["vectors"][0]["data"]["float32"]
    assert got == want, f"GetVectors must return the float32 values widened to double: got {got}, want {want}"
    listed = s3v.list_vectors(returnData=True, **idx.by_name)["vectors"][0]["data"]["float32"]
    assert listed == want, f"ListVectors returned {listed}, want {want}"


def test_metadata_value_types_round_trip(s3v, idx):
    md = {
        "s": "text with ünïcödé ✓",
        "i": 42,
        "neg": -7,
        "f": 1.5,
        "big": 12345678901,
        "t": True,
        "fa": False,
        "ls": ["a", "b", "c"],
        "empty_s": "",
    }
    s3v.put_vectors(vectors=[vec("m", [1, 2, 3, 4], md)], **idx.by_name)
    got = s3v.get_vectors(keys=["m"], returnMetadata=True, **idx.by_name)["vectors"][0]["metadata"]
    assert got == md
    # Booleans must stay booleans (True == 1 in Python, so check the types).
    assert got["t"] is True and got["fa"] is False


def test_key_variants(s3v, idx):
    keys = ["Key", "key", "ключ/🙂 with spaces", "k" * 1024, "a:b/c?d=e&f#g"]
    s3v.put_vectors(vectors=[vec(k, [i, 0, 0, 1]) for i, k in enumerate(keys)], **idx.by_name)
    got = get_map(s3v, idx.by_name, keys)
    assert set(got) == set(keys), "keys are case sensitive, may be any UTF-8 and up to 1024 chars"
    for i, k in enumerate(keys):
        assert got[k]["data"]["float32"] == [float(i), 0.0, 0.0, 1.0]
    assert sorted(stored_keys(s3v, idx)) == sorted(keys)


def test_get_missing_keys_are_omitted(s3v, idx):
    s3v.put_vectors(vectors=[vec("present", [1, 1, 1, 1])], **idx.by_name)
    resp = s3v.get_vectors(keys=["present", "absent-1", "absent-2"], returnData=True, **idx.by_name)
    assert keys_of(resp["vectors"]) == ["present"]
    assert s3v.get_vectors(keys=["absent-1"], **idx.by_name)["vectors"] == []


def test_delete_missing_key_succeeds(s3v, idx):
    s3v.put_vectors(vectors=[vec("keep", [1, 1, 1, 1])], **idx.by_name)
    resp = s3v.delete_vectors(keys=["never-existed", "also-not"], **idx.by_name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert stored_keys(s3v, idx) == ["keep"]
    # Deleting twice is fine too.
    s3v.delete_vectors(keys=["keep"], **idx.by_name)
    s3v.delete_vectors(keys=["keep"], **idx.by_name)
    assert stored_keys(s3v, idx) == []


def test_overwrite_replaces_data_and_metadata(s3v, idx):
    s3v.put_vectors(
        vectors=[vec("k", [1, 0, 0, 0], {"color": "red", "size": 1}), vec("other", [0, 0, 0, 5])],
        **idx.by_name,
    )
    s3v.put_vectors(vectors=[vec("k", [0, 1, 0, 0], {"shape": "round"})], **idx.by_name)

    got = s3v.get_vectors(keys=["k"], returnData=True, returnMetadata=True, **idx.by_name)["vectors"]
    assert got == [{"key": "k", "data": {"float32": [0.0, 1.0, 0.0, 0.0]}, "metadata": {"shape": "round"}}], (
        f"overwrite must replace data and the whole metadata document, got {got}"
    )
    assert sorted(stored_keys(s3v, idx)) == ["k", "other"], "overwrite must not duplicate the key"

    res = query_all(s3v, topK=10, queryVector={"float32": [1, 0, 0, 0]}, returnDistance=True, **idx.by_name)
    dist = {v["key"]: v["distance"] for v in res["vectors"]}
    assert sorted(dist) == ["k", "other"], f"query returned {res['vectors']}"
    assert dist["k"] == pytest.approx(math.sqrt(2), abs=1e-5), "the old vector of 'k' is still searchable"

    old = query_all(s3v, topK=10, queryVector={"float32": [1, 0, 0, 0]}, filter={"color": "red"}, **idx.by_name)
    assert old["vectors"] == [], f"old metadata still matches a filter: {old['vectors']}"
    new = query_all(s3v, topK=10, queryVector={"float32": [1, 0, 0, 0]}, filter={"shape": "round"}, **idx.by_name)
    assert keys_of(new["vectors"]) == ["k"]


def test_overwrite_within_one_batch_last_wins_or_rejected(s3v_raw, idx):
    """Duplicate keys inside one PutVectors call: either rejected as a whole or the last one wins."""
    batch = [vec("dup", [1, 1, 1, 1], {"v": 1}), vec("dup", [2, 2, 2, 2], {"v": 2})]
    try:
        s3v_raw.put_vectors(vectors=batch, **idx.by_name)
    except s3v_raw.exceptions.ValidationException:
        assert s3v_raw.get_vectors(keys=["dup"], **idx.by_name)["vectors"] == []
        return
    got = s3v_raw.get_vectors(keys=["dup"], returnData=True, returnMetadata=True, **idx.by_name)["vectors"]
    assert got == [{"key": "dup", "data": {"float32": [2.0] * 4}, "metadata": {"v": 2}}], got
    assert stored_keys(s3v_raw, idx) == ["dup"]


def test_read_after_write(s3v, idx):
    """Every acknowledged write is visible to the very next Get, List and Query."""
    rng = np.random.default_rng(7)
    s3v.put_vectors(vectors=[vec(f"base-{i}", rng.normal(size=4)) for i in range(50)], **idx.by_name)
    for round_no in range(10):
        key = f"raw-{round_no}"
        data = f32_list(rng.normal(size=4) * 10)
        s3v.put_vectors(vectors=[vec(key, data, {"round": round_no})], **idx.by_name)

        got = s3v.get_vectors(keys=[key], returnData=True, returnMetadata=True, **idx.by_name)["vectors"]
        assert got == [{"key": key, "data": {"float32": data}, "metadata": {"round": round_no}}], (
            f"round {round_no}: GetVectors right after PutVectors returned {got}"
        )
        assert key in stored_keys(s3v, idx), f"round {round_no}: ListVectors right after put misses {key}"
        res = s3v.query_vectors(topK=1, queryVector={"float32": data}, returnDistance=True, **idx.by_name)
        assert keys_of(res["vectors"]) == [key], f"round {round_no}: query right after put returned {res['vectors']}"
        assert res["vectors"][0]["distance"] == pytest.approx(0.0, abs=1e-4)
        res = s3v.query_vectors(topK=5, queryVector={"float32": data}, filter={"round": round_no}, **idx.by_name)
        assert keys_of(res["vectors"]) == [key], f"round {round_no}: filtered query after put returned {res['vectors']}"

        s3v.delete_vectors(keys=[key], **idx.by_name)
        assert s3v.get_vectors(keys=[key], **idx.by_name)["vectors"] == [], f"round {round_no}: deleted key still readable"
        assert key not in stored_keys(s3v, idx), f"round {round_no}: deleted key still listed"
        res = s3v.query_vectors(topK=5, queryVector={"float32": data}, **idx.by_name)
        assert key not in keys_of(res["vectors"]), f"round {round_no}: deleted key still returned by query"
        res = s3v.query_vectors(topK=5, queryVector={"float32": data}, filter={"round": round_no}, **idx.by_name)
        assert res["vectors"] == [], f"round {round_no}: deleted key still matches a filter"


def test_concurrent_writers(quiver, idx):
    """Parallel PutVectors/DeleteVectors on one index: the end state is exactly the acknowledged writes."""
    def worker(w: int) -> set[str]:
        client = quiver.client()
        rng = np.random.default_rng(w)
        alive: set[str] = set()
        for batch in range(12):
            keys = [f"w{w}-b{batch}-{j}" for j in range(10)]
            client.put_vectors(vectors=[vec(k, rng.normal(size=4), {"w": w, "b": batch}) for k in keys],
                               **idx.by_name)
            alive.update(keys)
            if batch % 3 == 2:
                doomed = sorted(alive)[:8]
                client.delete_vectors(keys=doomed, **idx.by_name)
                alive.difference_update(doomed)
        return alive

    with ThreadPoolExecutor(max_workers=8) as pool:
        expected = set().union(*pool.map(worker, range(8)))
    client = quiver.client()
    listed = stored_keys(client, idx)
    assert len(listed) == len(set(listed)), "ListVectors returned duplicates after concurrent writes"
    assert set(listed) == expected, (
        f"after concurrent writes: missing {sorted(expected - set(listed))[:5]}, "
        f"unexpected {sorted(set(listed) - expected)[:5]}"
    )
    for w in range(8):
        res = query_all(client, topK=100, queryVector={"float32": [1.0, 0.0, 0.0, 0.0]}, filter={"w": w},
                        **idx.by_name)
        want = {k for k in expected if k.startswith(f"w{w}-")}
        assert len(want) <= 100, "test bug: more matches than topK"
        assert {v["key"] for v in res["vectors"]} == want, f"filter w={w} after concurrent writes"


def test_bucket_recreated_with_same_name_is_empty(s3v):
    name = unique_name("again")
    s3v.create_vector_bucket(vectorBucketName=name)
    s3v.create_index(vectorBucketName=name, indexName="ix1", dataType="float32", dimension=2,
                     distanceMetric="euclidean")
    s3v.put_vectors(vectorBucketName=name, indexName="ix1", vectors=[vec("old", [1, 2])])
    s3v.delete_index(vectorBucketName=name, indexName="ix1")
    s3v.delete_vector_bucket(vectorBucketName=name)
    try:
        s3v.create_vector_bucket(vectorBucketName=name)
        assert s3v.list_indexes(vectorBucketName=name)["indexes"] == []
        s3v.create_index(vectorBucketName=name, indexName="ix1", dataType="float32", dimension=2,
                         distanceMetric="euclidean")
        assert s3v.get_vectors(vectorBucketName=name, indexName="ix1", keys=["old"])["vectors"] == []
        assert s3v.list_vectors(vectorBucketName=name, indexName="ix1")["vectors"] == []
    finally:
        cleanup_bucket(s3v, name)


# -- ListVectors pagination and segments -------------------------------------------------------

BIG_N = 1200


@pytest.fixture(scope="module")
def big_index(s3v):
    """An index with BIG_N vectors; key i has data [i, i+1, i+2, i+3] and metadata {"i": i}."""
    bucket = unique_name("big")
    s3v.create_vector_bucket(vectorBucketName=bucket)
    s3v.create_index(vectorBucketName=bucket, indexName="big", dataType="float32", dimension=4,
                     distanceMetric="euclidean")
    kw = {"vectorBucketName": bucket, "indexName": "big"}
    for start in range(0, BIG_N, 400):
        s3v.put_vectors(
            vectors=[vec(f"key-{i:05d}", [i, i + 1, i + 2, i + 3], {"i": i}) for i in range(start, start + 400)],
            **kw,
        )
    yield kw
    cleanup_bucket(s3v, bucket)


def test_list_pagination_each_key_once(s3v, big_index):
    seen: list[str] = []
    page_sizes: list[int] = []
    token = None
    while True:
        resp = s3v.list_vectors(maxResults=500, returnData=True, returnMetadata=True,
                                **big_index, **({"nextToken": token} if token else {}))
        page_sizes.append(len(resp["vectors"]))
        for item in resp["vectors"]:
            i = int(item["key"].split("-")[1])
            assert item["data"]["float32"] == [float(i), i + 1.0, i + 2.0, i + 3.0], item
            assert item["metadata"] == {"i": i}, item
        seen.extend(keys_of(resp["vectors"]))
        token = resp.get("nextToken")
        if not token:
            break
        assert len(page_sizes) < 100
    assert all(n <= 500 for n in page_sizes), f"a page exceeded maxResults=500: {page_sizes}"
    assert len(page_sizes) >= 3, f"{BIG_N} vectors at maxResults=500 need >= 3 pages, got {page_sizes}"
    dupes = [k for k, n in Counter(seen).items() if n > 1]
    assert not dupes, f"keys returned more than once across pages: {sorted(dupes)[:10]}"
    assert set(seen) == {f"key-{i:05d}" for i in range(BIG_N)}, f"got {len(set(seen))} distinct keys of {BIG_N}"


def test_list_default_page_size(s3v, big_index):
    resp = s3v.list_vectors(**big_index)
    assert 0 < len(resp["vectors"]) <= 500, f"default page must hold at most 500 items, got {len(resp['vectors'])}"
    assert resp.get("nextToken"), "a partial listing must return nextToken"


def test_list_small_pages(s3v, big_index):
    items, pages = list_all(s3v, maxResults=7, **big_index)
    keys = keys_of(items)
    assert len(keys) == BIG_N and len(set(keys)) == BIG_N, f"{len(keys)} items, {len(set(keys))} distinct"
    assert pages >= BIG_N // 7


def test_list_with_paginator(s3v, big_index):
    paginator = s3v.get_paginator("list_vectors")
    keys = []
    for page in paginator.paginate(PaginationConfig={"PageSize": 250}, **big_index):
        keys.extend(keys_of(page["vectors"]))
    assert sorted(keys) == sorted(f"key-{i:05d}" for i in range(BIG_N))


@pytest.mark.parametrize("segments", [1, 4, 16])
def test_list_segments_each_key_once(s3v, big_index, segments):
    owner: dict[str, int] = {}
    for seg in range(segments):
        items, _ = list_all(s3v, segmentCount=segments, segmentIndex=seg, maxResults=200, **big_index)
        for key in keys_of(items):
            assert key not in owner, f"{key} returned by segment {owner[key]} and segment {seg} (of {segments})"
            owner[key] = seg
    assert set(owner) == {f"key-{i:05d}" for i in range(BIG_N)}, (
        f"segments together returned {len(owner)} of {BIG_N} keys"
    )
    if segments == 4:
        sizes = [sum(1 for s in owner.values() if s == seg) for seg in range(segments)]
        assert sum(1 for n in sizes if n > 0) >= 2, f"all keys landed in one segment: {sizes}"


@pytest.mark.parametrize("count, index", [(4, 4), (4, 7), (17, 0)])
def test_list_bad_segments(s3v_raw, big_index, count, index):
    api_error(s3v_raw.list_vectors, "ValidationException", segmentCount=count, segmentIndex=index, **big_index)


# -- validation ------------------------------------------------------------------------------


def assert_untouched(s3v, ix, expected_keys):
    got = sorted(stored_keys(s3v, ix))
    assert got == sorted(expected_keys), f"a rejected PutVectors changed the index: now holds {got}"


def test_dimension_mismatch(s3v, idx):
    s3v.put_vectors(vectors=[vec("good", [1, 2, 3, 4])], **idx.by_name)
    api_error(s3v.put_vectors, "ValidationException", status=400,
              contains="vector must have length 4, but has length 3",
              vectors=[vec("short", [1, 2, 3])], **idx.by_name)
    api_error(s3v.put_vectors, "ValidationException", contains="vector must have length 4, but has length 5",
              vectors=[vec("long", [1, 2, 3, 4, 5])], **idx.by_name)
    api_error(s3v.put_vectors, "ValidationException",
              vectors=[vec("fine", [1, 2, 3, 4]), vec("short", [1, 2, 3])], **idx.by_name)
    assert_untouched(s3v, idx, ["good"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_values_rejected(s3v_raw, idx, bad):
    # botocore serialises non-finite floats as the strings "NaN"/"Infinity"/"-Infinity".
    resp = api_error(
        s3v_raw.put_vectors,
        ("ValidationException", "SerializationException"),
        status=400,
        vectors=[vec("ok", [1, 1, 1, 1]), vec("bad", [0.5, bad, 0.5, 0.5])],
        **idx.by_name,
    )
    assert resp["Error"].get("Message"), "error must carry a message"
    assert_untouched(s3v_raw, idx, [])


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_json_tokens_rejected(quiver, s3v, idx, token):
    """Bare non-JSON tokens (as e.g. Python's json.dumps emits) and numbers overflowing f64."""
    body = (
        '{"vectorBucketName": "%s", "indexName": "%s", "vectors": ['
        '{"key": "ok", "data": {"float32": [1, 1, 1, 1]}},'
        '{"key": "bad", "data": {"float32": [0.5, %s, 0.5, 0.5]}}]}'
    ) % (idx.bucket, idx.name, token)
    r = quiver.signed_request("POST", "/PutVectors", body)
    assert r.status_code == 400, f"HTTP {r.status_code}: {r.text[:300]}"
    assert r.headers.get("x-amzn-ErrorType", "").split(":")[0] in ("ValidationException", "SerializationException"), r.headers
    assert "message" in r.json(), r.text
    assert_untouched(s3v, idx, [])


def test_value_overflowing_float32_rejected(s3v, idx):
    """1e39 is a finite double but rounds to +Infinity as float32, which is not storable."""
    api_error(s3v.put_vectors, "ValidationException", vectors=[vec("huge", [1e39, 0, 0, 0])], **idx.by_name)
    assert_untouched(s3v, idx, [])


def test_zero_vector_rejected_in_cosine_index(s3v, new_index):
    ix = new_index(dimension=3, metric="cosine")
    api_error(s3v.put_vectors, "ValidationException", status=400,
              vectors=[vec("fine", [1, 0, 0]), vec("zero", [0, 0, 0])], **ix.by_name)
    assert_untouched(s3v, ix, [])


def test_zero_vector_allowed_in_euclidean_index(s3v, idx):
    s3v.put_vectors(vectors=[vec("zero", [0, 0, 0, 0])], **idx.by_name)
    assert stored_keys(s3v, idx) == ["zero"]


def test_metadata_key_count_limit(s3v, idx):
    fifty = {f"k{i:02d}": i for i in range(50)}
    s3v.put_vectors(vectors=[vec("fifty", [1, 1, 1, 1], fifty)], **idx.by_name)
    got = s3v.get_vectors(keys=["fifty"], returnMetadata=True, **idx.by_name)["vectors"][0]["metadata"]
    assert got == fifty

    fifty_one = {f"k{i:02d}": i for i in range(51)}
    api_error(s3v.put_vectors, "ValidationException", status=400,
              vectors=[vec("good", [1, 1, 1, 1]), vec("fifty-one", [1, 1, 1, 1], fifty_one)], **idx.by_name)
    assert_untouched(s3v, idx, ["fifty"])


def test_filterable_metadata_size_limit(s3v, idx):
    s3v.put_vectors(vectors=[vec("small", [1, 1, 1, 1], {"text": "x" * 1000})], **idx.by_name)
    api_error(s3v.put_vectors, "ValidationException", status=400,
              contains="Filterable metadata must have at most 2048 bytes",
              vectors=[vec("good", [1, 1, 1, 1], {"a": 1}), vec("big", [1, 1, 1, 1], {"text": "x" * 3000})],
              **idx.by_name)
    # Many small values that only together exceed 2 KiB.
    spread = {f"f{i}": "y" * 100 for i in range(30)}
    api_error(s3v.put_vectors, "ValidationException",
              contains="Filterable metadata must have at most 2048 bytes",
              vectors=[vec("spread", [1, 1, 1, 1], spread)], **idx.by_name)
    assert_untouched(s3v, idx, ["small"])


def test_total_metadata_size_limit(s3v, new_index):
    ix = new_index(dimension=4, non_filterable=["note"])
    # Non-filterable metadata does not count toward the 2 KiB filterable limit...
    s3v.put_vectors(vectors=[vec("ok", [1, 1, 1, 1], {"note": "n" * 30_000, "tag": "a"})], **ix.by_name)
    got = s3v.get_vectors(keys=["ok"], returnMetadata=True, **ix.by_name)["vectors"][0]["metadata"]
    assert got == {"note": "n" * 30_000, "tag": "a"}
    # ...but everything together must stay within 40 KB.
    api_error(s3v.put_vectors, "ValidationException", status=400,
              vectors=[vec("good", [1, 1, 1, 1]), vec("huge", [1, 1, 1, 1], {"note": "n" * 50_000})],
              **ix.by_name)
    assert_untouched(s3v, ix, ["ok"])


def test_batch_size_limits(s3v_raw, idx):
    api_error(s3v_raw.put_vectors, "ValidationException",
              vectors=[vec(f"k{i}", [1, 1, 1, 1]) for i in range(501)], **idx.by_name)
    assert_untouched(s3v_raw, idx, [])
    api_error(s3v_raw.put_vectors, "ValidationException", vectors=[], **idx.by_name)
    api_error(s3v_raw.get_vectors, "ValidationException", keys=[f"k{i}" for i in range(101)], **idx.by_name)
    api_error(s3v_raw.delete_vectors, "ValidationException", keys=[f"k{i}" for i in range(501)], **idx.by_name)
    # The maxima themselves are fine.
    s3v_raw.put_vectors(vectors=[vec(f"k{i}", [i, 1, 1, 1]) for i in range(500)], **idx.by_name)
    assert len(s3v_raw.get_vectors(keys=[f"k{i}" for i in range(100)], **idx.by_name)["vectors"]) == 100
    s3v_raw.delete_vectors(keys=[f"k{i}" for i in range(500)], **idx.by_name)
    assert_untouched(s3v_raw, idx, [])


@pytest.mark.parametrize("key", ["", "k" * 1025], ids=["empty", "1025-chars"])
def test_bad_keys_rejected(s3v_raw, idx, key):
    api_error(s3v_raw.put_vectors, "ValidationException",
              vectors=[vec("good", [1, 1, 1, 1]), vec(key, [1, 1, 1, 1])], **idx.by_name)
    assert_untouched(s3v_raw, idx, [])


def test_unknown_index_or_bucket(s3v, idx):
    missing_index = {"vectorBucketName": idx.bucket, "indexName": "no-such-index"}
    missing_bucket = {"vectorBucketName": unique_name("missing"), "indexName": "no-such-index"}
    missing_arn = {"indexArn": index_arn(idx.bucket, "no-such-index")}
    for kw in (missing_index, missing_bucket, missing_arn):
        api_error(s3v.put_vectors, "NotFoundException", status=404, message=INDEX_NOT_FOUND,
                  vectors=[vec("k", [1, 2, 3, 4])], **kw)
        api_error(s3v.get_vectors, "NotFoundException", status=404, message=INDEX_NOT_FOUND, keys=["k"], **kw)
        api_error(s3v.list_vectors, "NotFoundException", status=404, **kw)
        api_error(s3v.delete_vectors, "NotFoundException", status=404, keys=["k"], **kw)
        api_error(s3v.query_vectors, "NotFoundException", status=404, topK=1,
                  queryVector={"float32": [1, 2, 3, 4]}, **kw)


def test_deleted_index_forgets_vectors(s3v, new_bucket):
    bucket = new_bucket()
    kw = dict(vectorBucketName=bucket, indexName="recreated", dataType="float32", dimension=2,
              distanceMetric="euclidean")
    s3v.create_index(**kw)
    s3v.put_vectors(vectorBucketName=bucket, indexName="recreated", vectors=[vec("old", [1, 2])])
    s3v.delete_index(vectorBucketName=bucket, indexName="recreated")
    api_error(s3v.get_vectors, "NotFoundException", message=INDEX_NOT_FOUND,
              vectorBucketName=bucket, indexName="recreated", keys=["old"])
    s3v.create_index(**kw)
    got = s3v.get_vectors(vectorBucketName=bucket, indexName="recreated", keys=["old"])["vectors"]
    assert got == [], f"a re-created index must start empty, got {got}"
    res = s3v.query_vectors(vectorBucketName=bucket, indexName="recreated", topK=5, queryVector={"float32": [1, 2]})
    assert res["vectors"] == [], f"a re-created index must start empty, query returned {res['vectors']}"


def test_metadata_document_is_json_object(quiver, s3v, idx):
    """Metadata that is not a JSON object is rejected, and the batch is not half-stored."""
    for md in ('"just a string"', "[1, 2]", "42"):
        body = json.dumps({"vectorBucketName": idx.bucket, "indexName": idx.name,
                           "vectors": [{"key": "ok", "data": {"float32": [1, 1, 1, 1]}}]})
        body = body[:-2] + ', {"key": "bad", "data": {"float32": [1, 1, 1, 1]}, "metadata": %s}]}' % md
        r = quiver.signed_request("POST", "/PutVectors", body)
        assert r.status_code == 400, f"metadata {md}: HTTP {r.status_code} {r.text[:200]}"
        assert_untouched(s3v, idx, [])
