"""QueryVectors: distances, result shape, topK, and the metadata filter language (reference §6).

Filter results are compared with a Python oracle implementing these semantics:
* `$eq` (and a bare value) matches an equal value or any equal element of a list value; comparison
  is type-strict ("5" != 5, true != 1); numbers compare numerically (5 == 5.0).
* `$ne`: key present and not `$eq`.   `$nin`: key present and no operand is `$eq`.
* `$gt/$gte/$lt/$lte`: numeric values only (a string never matches a range).
* `$in`: any operand is `$eq`.   `$exists`: presence / absence of the key.
* `$startsWith`: string value with that prefix.
* `$and`/`$or` as usual; several keys (or several operators on one key) in one object = AND.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from apiutil import api_error, cleanup_bucket, f32_list, query_all, unique_name, vec

# -- distances -----------------------------------------------------------------------------------


def test_euclidean_distances_exact(s3v, new_index):
    ix = new_index(dimension=2, metric="euclidean")
    s3v.put_vectors(vectors=[vec("origin", [0, 0]), vec("far", [3, 4]), vec("near", [1, 1])], **ix.by_name)
    resp = s3v.query_vectors(topK=3, queryVector={"float32": [0, 0]}, returnDistance=True, **ix.by_name)
    assert resp["distanceMetric"] == "euclidean"
    got = [(v["key"], v["distance"]) for v in resp["vectors"]]
    assert [k for k, _ in got] == ["origin", "near", "far"], f"results must be ascending by distance: {got}"
    dists = [d for _, d in got]
    assert dists == pytest.approx([0.0, math.sqrt(2), 5.0], abs=1e-5), (
        f"euclidean distance must be plain L2 (not squared): got {dists}"
    )


def test_cosine_distances_exact(s3v, new_index):
    ix = new_index(dimension=3, metric="cosine")
    s3v.put_vectors(
        vectors=[
            vec("same", [1, 0, 0]),
            vec("scaled", [5, 0, 0]),
            vec("orthogonal", [0, 1, 0]),
            vec("opposite", [-1, 0, 0]),
            vec("diagonal", [1, 1, 0]),
        ],
        **ix.by_name,
    )
    resp = s3v.query_vectors(topK=5, queryVector={"float32": [2, 0, 0]}, returnDistance=True, **ix.by_name)
    assert resp["distanceMetric"] == "cosine"
    dist = {v["key"]: v["distance"] for v in resp["vectors"]}
    assert set(dist) == {"same", "scaled", "orthogonal", "opposite", "diagonal"}, resp["vectors"]
    assert dist["same"] == pytest.approx(0.0, abs=1e-5)
    assert dist["scaled"] == pytest.approx(0.0, abs=1e-5), "cosine distance must not depend on magnitude"
    assert dist["diagonal"] == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-5)
    assert dist["orthogonal"] == pytest.approx(1.0, abs=1e-5)
    assert dist["opposite"] == pytest.approx(2.0, abs=1e-5)
    order = [v["key"] for v in resp["vectors"]]
    assert set(order[:2]) == {"same", "scaled"} and order[2:] == ["diagonal", "orthogonal", "opposite"], order


def test_response_shape_flags(s3v, new_index):
    ix = new_index(dimension=2, metric="euclidean", non_filterable=["note"])
    s3v.put_vectors(
        vectors=[vec("a", [0, 1], {"genre": "drama", "note": "not filterable"}), vec("b", [1, 0])],
        **ix.by_name,
    )
    q = {"float32": [0, 1]}

    plain = s3v.query_vectors(topK=2, queryVector=q, **ix.by_name)
    assert plain["distanceMetric"] == "euclidean"
    for v in plain["vectors"]:
        assert set(v) == {"key"}, f"without returnDistance/returnMetadata only 'key' is expected: {v}"

    with_dist = s3v.query_vectors(topK=2, queryVector=q, returnDistance=True, **ix.by_name)
    for v in with_dist["vectors"]:
        assert set(v) == {"key", "distance"}, v

    with_md = s3v.query_vectors(topK=2, queryVector=q, returnMetadata=True, **ix.by_name)
    by_key = {v["key"]: v for v in with_md["vectors"]}
    assert "distance" not in by_key["a"]
    assert by_key["a"]["metadata"] == {"genre": "drama", "note": "not filterable"}, (
        "returnMetadata must return filterable and non-filterable keys"
    )
    assert by_key["b"].get("metadata", {}) == {}, f"vector without metadata: {by_key['b']}"

    both = s3v.query_vectors(topK=1, queryVector=q, returnMetadata=True, returnDistance=True, **ix.by_name)
    assert both["vectors"] == [{"key": "a", "distance": 0.0, "metadata": {"genre": "drama", "note": "not filterable"}}]


def test_query_by_arn(s3v, new_index):
    ix = new_index(dimension=2)
    s3v.put_vectors(vectors=[vec("a", [1, 2])], **ix.by_name)
    resp = s3v.query_vectors(topK=1, queryVector={"float32": [1, 2]}, **ix.by_arn)
    assert [v["key"] for v in resp["vectors"]] == ["a"]


def test_empty_index(s3v, new_index):
    ix = new_index(dimension=2, metric="cosine")
    resp = s3v.query_vectors(topK=5, queryVector={"float32": [1, 2]}, **ix.by_name)
    assert resp["vectors"] == [] and resp["distanceMetric"] == "cosine"


def test_topk_respected_and_matches_brute_force(s3v, new_index):
    ix = new_index(dimension=8, metric="euclidean")
    rng = np.random.default_rng(3)
    data = rng.normal(size=(60, 8)).astype(np.float32)
    s3v.put_vectors(vectors=[vec(f"v{i}", row) for i, row in enumerate(data)], **ix.by_name)
    q = rng.normal(size=8).astype(np.float32)
    exact = np.argsort(np.linalg.norm(data.astype(np.float64) - q, axis=1))

    for k in (1, 3, 10, 30):
        resp = s3v.query_vectors(topK=k, queryVector={"float32": f32_list(q)}, returnDistance=True, **ix.by_name)
        keys = [v["key"] for v in resp["vectors"]]
        assert len(keys) == k, f"topK={k} returned {len(keys)} results"
        assert keys == [f"v{i}" for i in exact[:k]], f"topK={k}: got {keys}"
        dists = [v["distance"] for v in resp["vectors"]]
        assert dists == sorted(dists), f"distances not ascending: {dists}"

    resp = query_all(s3v, topK=100, queryVector={"float32": f32_list(q)}, **ix.by_name)
    assert len(resp["vectors"]) == 60, "topK above the index size returns every vector"


@pytest.mark.parametrize("top_k", [0, -1])
def test_topk_must_be_positive(s3v_raw, new_index, top_k):
    ix = new_index(dimension=2)
    api_error(s3v_raw.query_vectors, "ValidationException", status=400, topK=top_k,
              queryVector={"float32": [1, 2]}, **ix.by_name)


@pytest.mark.parametrize("query", [[1, 2, 3], [1, 2, 3, 4, 5], []], ids=["short", "long", "empty"])
def test_query_vector_wrong_dimension(s3v_raw, new_index, query):
    ix = new_index(dimension=4)
    s3v_raw.put_vectors(vectors=[vec("a", [1, 2, 3, 4])], **ix.by_name)
    api_error(s3v_raw.query_vectors, "ValidationException", status=400, topK=1,
              queryVector={"float32": query}, **ix.by_name)


def test_query_vector_non_finite(s3v_raw, new_index):
    ix = new_index(dimension=2)
    s3v_raw.put_vectors(vectors=[vec("a", [1, 2])], **ix.by_name)
    for bad in (float("nan"), float("inf")):
        api_error(s3v_raw.query_vectors, ("ValidationException", "SerializationException"), status=400,
                  topK=1, queryVector={"float32": [bad, 1.0]}, **ix.by_name)


def test_query_without_query_vector(s3v_raw, new_index):
    ix = new_index(dimension=2)
    api_error(s3v_raw.query_vectors, "ValidationException", status=400, topK=1, **ix.by_name)


def test_zero_query_vector_in_cosine_index(s3v_raw, new_index):
    ix = new_index(dimension=2, metric="cosine")
    s3v_raw.put_vectors(vectors=[vec("a", [1, 2])], **ix.by_name)
    api_error(s3v_raw.query_vectors, "ValidationException", status=400, topK=1,
              queryVector={"float32": [0.0, 0.0]}, **ix.by_name)


# -- filter oracle ------------------------------------------------------------------------------


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _scalar_eq(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_num(a) and _is_num(b):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def _elements(v) -> list:
    return v if isinstance(v, list) else [v]


def _eq(value, operand) -> bool:
    return any(_scalar_eq(e, operand) for e in _elements(value))


def _op(md: dict, key: str, op: str, arg) -> bool:
    present = key in md
    if op == "$exists":
        return present == arg
    if not present:
        return False
    v = md[key]
    if op == "$eq":
        return _eq(v, arg)
    if op == "$ne":
        return not _eq(v, arg)
    if op == "$in":
        return any(_eq(v, a) for a in arg)
    if op == "$nin":
        return not any(_eq(v, a) for a in arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        cmp = {
            "$gt": lambda x: x > arg,
            "$gte": lambda x: x >= arg,
            "$lt": lambda x: x < arg,
            "$lte": lambda x: x <= arg,
        }[op]
        return any(_is_num(e) and cmp(e) for e in _elements(v))
    if op == "$startsWith":
        return any(isinstance(e, str) and e.startswith(arg) for e in _elements(v))
    raise ValueError(f"oracle does not know {op}")


def oracle(flt: dict, md: dict) -> bool:
    for key, cond in flt.items():
        if key == "$and":
            ok = all(oracle(c, md) for c in cond)
        elif key == "$or":
            ok = any(oracle(c, md) for c in cond)
        elif isinstance(cond, dict):
            ok = all(_op(md, key, op, arg) for op, arg in cond.items())
        else:
            ok = _op(md, key, "$eq", cond)
        if not ok:
            return False
    return True


# -- filter data set ------------------------------------------------------------------------------

N_FILTER = 200
DIM = 4
GENRES = ["drama", "comedy", "documentary", "horror", "romance"]
PATHS = ["/marketing/", "/marketing-old/", "/eng/", "/sales/"]


def make_metadata(i: int, r: random.Random) -> dict:
    md: dict = {}
    if r.random() < 0.4:
        md["genre"] = r.choice(GENRES) if r.random() < 0.6 else r.sample(GENRES, r.randint(1, 3))
    if r.random() < 0.8:
        md["year"] = r.randint(1990, 2024)
    if r.random() < 0.7:
        md["price"] = round(r.uniform(0, 100), 2)
    if r.random() < 0.5:
        md["flag"] = r.random() < 0.5
    if r.random() < 0.6:
        md["path"] = f"{r.choice(PATHS)}doc-{i}.txt"
    if r.random() < 0.3:
        md["code"] = r.choice(["5", 5, 7, "7", 5.5])
    md["note"] = f"free text {i}"  # non-filterable
    return md


HANDMADE = {
    "arr-doc-rom": {"genre": ["documentary", "romance"], "year": 2021, "note": "n"},
    "str-five": {"code": "5", "note": "n"},
    "num-five": {"code": 5, "note": "n"},
    "float-five": {"code": 5.0, "note": "n"},
    "bool-true": {"flag": True, "code": True, "note": "n"},
    "year-string": {"year": "2000", "note": "n"},
}


@pytest.fixture(scope="module")
def filter_index(s3v):
    r = random.Random(1234)
    rng = np.random.default_rng(1234)
    metas = {f"v{i:03d}": make_metadata(i, r) for i in range(N_FILTER - len(HANDMADE))}
    metas.update(HANDMADE)
    keys = sorted(metas)
    data = {k: np.asarray(f32_list(rng.normal(size=DIM)), dtype=np.float32) for k in keys}

    bucket = unique_name("flt")
    s3v.create_vector_bucket(vectorBucketName=bucket)
    s3v.create_index(vectorBucketName=bucket, indexName="flt", dataType="float32", dimension=DIM,
                     distanceMetric="euclidean", metadataConfiguration={"nonFilterableMetadataKeys": ["note"]})
    kw = {"vectorBucketName": bucket, "indexName": "flt"}
    s3v.put_vectors(vectors=[vec(k, data[k], metas[k]) for k in keys], **kw)
    yield {"kw": kw, "metas": metas, "data": data}
    cleanup_bucket(s3v, bucket)


def _a_stored_price() -> float:
    r = random.Random(1234)
    for i in range(N_FILTER - len(HANDMADE)):
        md = make_metadata(i, r)
        if "price" in md:
            return md["price"]
    raise AssertionError("no price in the data set")


# (id, filter, may_be_empty)
FILTERS = [
    ("eq-implicit-str", {"genre": "drama"}, False),
    ("eq-explicit-str", {"genre": {"$eq": "drama"}}, False),
    ("eq-array-any", {"genre": "documentary"}, False),
    ("eq-num", {"year": 2001}, False),
    ("eq-num-explicit", {"year": {"$eq": 2010}}, False),
    ("eq-float", {"price": _a_stored_price()}, False),
    ("eq-bool-true", {"flag": True}, False),
    ("eq-bool-false", {"flag": {"$eq": False}}, False),
    ("eq-type-strict-num", {"code": 5}, False),
    ("eq-type-strict-str", {"code": "5"}, False),
    ("eq-float-value", {"code": 5.5}, False),
    ("eq-num-not-str", {"year": 2000}, False),
    ("eq-str-not-num", {"year": "2000"}, False),  # only the handmade "year-string"
    ("eq-bool-vs-str", {"flag": "true"}, True),
    ("eq-missing-key", {"no_such_key": "x"}, True),
    ("ne-str", {"genre": {"$ne": "drama"}}, False),
    ("ne-bool", {"flag": {"$ne": True}}, False),
    ("ne-num", {"code": {"$ne": 5}}, False),
    ("ne-missing-key", {"no_such_key": {"$ne": "x"}}, True),
    ("gt", {"year": {"$gt": 2018}}, False),
    ("gte", {"year": {"$gte": 2018}}, False),
    ("lt", {"year": {"$lt": 1996}}, False),
    ("lte", {"year": {"$lte": 1996}}, False),
    ("gt-float", {"price": {"$gt": 80.5}}, False),
    ("range-closed", {"price": {"$gte": 10, "$lte": 35}}, False),
    ("range-open", {"year": {"$gt": 2000, "$lt": 2006}}, False),
    ("range-empty", {"price": {"$lt": 0}}, True),
    ("range-on-mixed-types", {"code": {"$gte": 5}}, False),
    ("in-str", {"genre": {"$in": ["comedy", "horror"]}}, False),
    ("in-num", {"year": {"$in": [1999, 2000, 2001]}}, False),
    ("in-mixed", {"code": {"$in": [5, "7"]}}, False),
    ("in-bool", {"flag": {"$in": [True]}}, False),
    ("nin-str", {"genre": {"$nin": ["drama", "comedy"]}}, False),
    ("nin-num", {"code": {"$nin": [5]}}, False),
    ("exists-true", {"genre": {"$exists": True}}, False),
    ("exists-true-sparse", {"code": {"$exists": True}}, False),
    ("exists-false", {"year": {"$exists": False}}, False),
    ("starts-with", {"path": {"$startsWith": "/marketing/"}}, False),
    ("starts-with-short", {"path": {"$startsWith": "/e"}}, False),
    ("and", {"$and": [{"genre": "drama"}, {"year": {"$gte": 2000}}]}, False),
    ("and-single", {"$and": [{"flag": False}]}, False),
    ("or", {"$or": [{"genre": "documentary"}, {"year": {"$gte": 2020}}]}, False),
    ("or-nested-and", {"$or": [{"$and": [{"flag": True}, {"price": {"$lt": 30}}]}, {"code": {"$exists": True}}]}, False),
    ("and-of-ors", {"$and": [{"$or": [{"genre": "comedy"}, {"genre": "horror"}]},
                             {"$or": [{"flag": True}, {"year": {"$lt": 2000}}]}]}, False),
    ("implicit-and-two-keys", {"genre": "comedy", "flag": True}, True),
    ("implicit-and-ranges", {"year": {"$gte": 2005}, "price": {"$lt": 40}}, False),
    ("and-with-exists-false", {"$and": [{"genre": {"$exists": False}}, {"year": {"$gt": 2015}}]}, False),
]


@pytest.mark.parametrize("flt, may_be_empty", [(f, e) for _, f, e in FILTERS], ids=[i for i, _, _ in FILTERS])
def test_filter_matches_oracle(s3v, filter_index, flt, may_be_empty):
    metas, data = filter_index["metas"], filter_index["data"]
    expected = {k for k, md in metas.items() if oracle(flt, md)}
    # Guard the test design: topK=100 must be able to return every match.
    assert len(expected) <= 100, f"test bug: filter {flt} matches {len(expected)} > 100 vectors"
    if not may_be_empty:
        assert expected, f"test bug: filter {flt} matches nothing in the data set"

    q = np.array([0.25, -0.5, 0.75, 0.1], dtype=np.float32)
    resp = query_all(s3v, topK=100, queryVector={"float32": f32_list(q)}, filter=flt,
                     returnDistance=True, returnMetadata=True, **filter_index["kw"])
    got = [v["key"] for v in resp["vectors"]]
    assert len(got) == len(set(got)), f"duplicate keys in results: {got}"
    missing, extra = sorted(expected - set(got)), sorted(set(got) - expected)
    assert not missing and not extra, (
        f"filter {flt}: {len(got)} results, expected {len(expected)}\n"
        f"  missing: {[(k, metas[k]) for k in missing[:5]]}\n"
        f"  unexpected: {[(k, metas[k]) for k in extra[:5]]}"
    )
    for v in resp["vectors"]:
        want = float(np.linalg.norm(data[v["key"]].astype(np.float64) - q))
        assert v["distance"] == pytest.approx(want, rel=1e-4, abs=1e-5), f"distance of {v['key']}"
        assert v["metadata"] == metas[v["key"]], f"metadata of {v['key']}"
    dists = [v["distance"] for v in resp["vectors"]]
    assert dists == sorted(dists), "filtered results must be ascending by distance"


def test_filter_with_small_topk_returns_nearest_matches(s3v, filter_index):
    metas, data = filter_index["metas"], filter_index["data"]
    flt = {"year": {"$gte": 2000}}
    q = np.array([1.0, 0.0, -1.0, 0.5], dtype=np.float32)
    matching = [k for k, md in metas.items() if oracle(flt, md)]
    matching.sort(key=lambda k: float(np.linalg.norm(data[k].astype(np.float64) - q)))
    resp = s3v.query_vectors(topK=5, queryVector={"float32": f32_list(q)}, filter=flt, **filter_index["kw"])
    assert [v["key"] for v in resp["vectors"]] == matching[:5]


BAD_FILTERS = [
    ("unknown-top-level-op", {"$foo": 1}),
    ("unknown-key-op", {"year": {"$foo": 1}}),
    ("gt-string", {"year": {"$gt": "x"}}),
    ("lte-bool", {"year": {"$lte": True}}),
    ("and-empty", {"$and": []}),
    ("or-empty", {"$or": []}),
    ("and-not-list", {"$and": {"genre": "drama"}}),
    ("in-empty", {"genre": {"$in": []}}),
    ("nin-empty", {"genre": {"$nin": []}}),
    ("in-not-list", {"genre": {"$in": "drama"}}),
    ("exists-not-bool", {"genre": {"$exists": "yes"}}),
    ("starts-with-number", {"path": {"$startsWith": 5}}),
    ("not-an-object-string", "drama"),
    ("not-an-object-list", [{"genre": "drama"}]),
    ("not-an-object-number", 42),
    ("non-filterable-key", {"note": "free text 1"}),
    ("non-filterable-key-nested", {"$and": [{"year": 2001}, {"note": {"$exists": True}}]}),
    ("non-filterable-key-or", {"$or": [{"note": {"$startsWith": "free"}}]}),
]


@pytest.mark.parametrize("flt", [f for _, f in BAD_FILTERS], ids=[i for i, _ in BAD_FILTERS])
def test_bad_filter_rejected(s3v_raw, filter_index, flt):
    api_error(s3v_raw.query_vectors, "ValidationException", status=400, topK=5,
              queryVector={"float32": [0.0, 0.0, 0.0, 1.0]}, filter=flt, **filter_index["kw"])


# -- large topK and paging -------------------------------------------------------------------------


def test_large_topk_follows_next_token(s3v, new_index):
    """topK above one page (the service pages QueryVectors results with nextToken since 2026-06)."""
    ix = new_index(dimension=3, metric="euclidean")
    rng = np.random.default_rng(11)
    data = rng.normal(size=(600, 3)).astype(np.float32)
    for start in range(0, 600, 300):
        s3v.put_vectors(vectors=[vec(f"p{i}", data[i]) for i in range(start, start + 300)], **ix.by_name)
    q = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    exact = np.argsort(np.linalg.norm(data.astype(np.float64) - q, axis=1), kind="stable")

    resp = query_all(s3v, topK=450, queryVector={"float32": f32_list(q)}, returnDistance=True, **ix.by_name)
    keys = [v["key"] for v in resp["vectors"]]
    assert len(keys) == 450, f"topK=450 returned {len(keys)} results over {resp['pages']} page(s)"
    assert len(set(keys)) == 450, "duplicate keys across QueryVectors pages"
    dists = [v["distance"] for v in resp["vectors"]]
    assert dists == sorted(dists), "results across pages must be ascending by distance"
    assert set(keys) == {f"p{i}" for i in exact[:450]}, "topK=450 of 600 must be the 450 nearest"


def test_topk_above_service_maximum(s3v_raw, new_index):
    ix = new_index(dimension=2)
    api_error(s3v_raw.query_vectors, "ValidationException", status=400, topK=10_001,
              queryVector={"float32": [1.0, 2.0]}, **ix.by_name)


def test_max_dimension_round_trip(s3v, new_index):
    ix = new_index(dimension=4096, metric="cosine")
    rng = np.random.default_rng(4096)
    data = rng.normal(size=(20, 4096)).astype(np.float32)
    s3v.put_vectors(vectors=[vec(f"d{i}", row) for i, row in enumerate(data)], **ix.by_name)
    got = s3v.get_vectors(keys=["d7"], returnData=True, **ix.by_name)["vectors"][0]["data"]["float32"]
    assert got == f32_list(data[7]), "4096-d vector did not round-trip exactly"
    resp = s3v.query_vectors(topK=3, queryVector={"float32": f32_list(data[7])}, returnDistance=True, **ix.by_name)
    assert resp["vectors"][0]["key"] == "d7"
    assert resp["vectors"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
