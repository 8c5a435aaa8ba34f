"""Vector bucket and index control plane: CRUD by name and by ARN, listing, and errors.

Expected error codes/messages come from the S3 Vectors reference (§1.1, §2.1, §3.3), most of
them captured from the real service.
"""

from __future__ import annotations

import datetime as dt

import pytest

from apiutil import api_error, assert_request_id, bucket_arn, index_arn, unique_name

BUCKET_NOT_FOUND = "The specified vector bucket could not be found"
INDEX_NOT_FOUND = "The specified index could not be found"
BUCKET_EXISTS = "A vector bucket with the specified name already exists"
BUCKET_NOT_EMPTY = "The specified vector bucket is not empty"
BAD_BUCKET_NAME = "Invalid vector bucket name"
BUCKET_ADDRESSING = "Must specify either vectorBucketName or vectorBucketArn but not both"
INDEX_ADDRESSING = "Must specify either indexArn or both vectorBucketName and indexName"


def assert_recent(ts, what: str) -> None:
    assert isinstance(ts, dt.datetime), f"{what} should parse as a datetime, got {ts!r}"
    assert ts.tzinfo is not None, f"{what} should be timezone-aware, got {ts!r}"
    age = abs((dt.datetime.now(dt.timezone.utc) - ts).total_seconds())
    assert age < 600, f"{what} {ts.isoformat()} is {age:.0f}s away from now"


def list_all_buckets(s3v, **kw) -> tuple[list[dict], int]:
    items, pages, token = [], 0, None
    while True:
        resp = s3v.list_vector_buckets(**kw, **({"nextToken": token} if token else {}))
        pages += 1
        items.extend(resp["vectorBuckets"])
        token = resp.get("nextToken")
        if not token:
            return items, pages


def list_all_indexes(s3v, **kw) -> tuple[list[dict], int]:
    items, pages, token = [], 0, None
    while True:
        resp = s3v.list_indexes(**kw, **({"nextToken": token} if token else {}))
        pages += 1
        items.extend(resp["indexes"])
        token = resp.get("nextToken")
        if not token:
            return items, pages


def create_index(s3v, bucket: str, name: str, dimension: int = 8, metric: str = "cosine", **extra):
    return s3v.create_index(
        vectorBucketName=bucket,
        indexName=name,
        dataType="float32",
        dimension=dimension,
        distanceMetric=metric,
        **extra,
    )


# -- buckets -------------------------------------------------------------------------------------


def test_bucket_lifecycle_by_name(s3v):
    name = unique_name("b")
    resp = s3v.create_vector_bucket(vectorBucketName=name)
    assert_request_id(resp)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp.get("vectorBucketArn") == bucket_arn(name), f"CreateVectorBucket output: {resp}"

    got = s3v.get_vector_bucket(vectorBucketName=name)
    assert_request_id(got)
    b = got["vectorBucket"]
    assert b["vectorBucketName"] == name
    assert b["vectorBucketArn"] == bucket_arn(name)
    assert_recent(b.get("creationTime"), "vectorBucket.creationTime")
    assert b.get("encryptionConfiguration") == {"sseType": "AES256"}, (
        f"default encryption should be reported as SSE-S3, got {b.get('encryptionConfiguration')!r}"
    )

    listed, _ = list_all_buckets(s3v, prefix=name)
    assert [x["vectorBucketName"] for x in listed] == [name], f"ListVectorBuckets(prefix) = {listed}"
    assert listed[0]["vectorBucketArn"] == bucket_arn(name)
    assert_recent(listed[0].get("creationTime"), "VectorBucketSummary.creationTime")

    everything, _ = list_all_buckets(s3v)
    assert name in {x["vectorBucketName"] for x in everything}

    resp = s3v.delete_vector_bucket(vectorBucketName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    api_error(s3v.get_vector_bucket, "NotFoundException", message=BUCKET_NOT_FOUND, vectorBucketName=name)
    listed, _ = list_all_buckets(s3v, prefix=name)
    assert listed == [], f"deleted bucket still listed: {listed}"


def test_bucket_lifecycle_by_arn(s3v):
    name = unique_name("b")
    arn = s3v.create_vector_bucket(vectorBucketName=name)["vectorBucketArn"]
    assert arn == bucket_arn(name)

    b = s3v.get_vector_bucket(vectorBucketArn=arn)["vectorBucket"]
    assert b["vectorBucketName"] == name and b["vectorBucketArn"] == arn

    s3v.delete_vector_bucket(vectorBucketArn=arn)
    api_error(s3v.get_vector_bucket, "NotFoundException", message=BUCKET_NOT_FOUND, vectorBucketArn=arn)
    api_error(s3v.get_vector_bucket, "NotFoundException", message=BUCKET_NOT_FOUND, vectorBucketName=name)


def test_list_buckets_prefix_and_pagination(s3v):
    prefix = unique_name("pg")[:40]
    names = sorted(f"{prefix}-{i}" for i in range(5))
    for n in names:
        s3v.create_vector_bucket(vectorBucketName=n)
    try:
        items, pages = list_all_buckets(s3v, prefix=prefix, maxResults=2)
        got = [x["vectorBucketName"] for x in items]
        assert sorted(got) == names, f"paginated listing returned {got}, expected each of {names} once"
        assert pages >= 3, f"5 buckets with maxResults=2 should take at least 3 pages, took {pages}"

        items, _ = list_all_buckets(s3v, prefix=f"{prefix}-3")
        assert [x["vectorBucketName"] for x in items] == [f"{prefix}-3"]
    finally:
        for n in names:
            s3v.delete_vector_bucket(vectorBucketName=n)


def test_get_unknown_bucket(s3v):
    name = unique_name("missing")
    resp = api_error(s3v.get_vector_bucket, "NotFoundException", status=404, message=BUCKET_NOT_FOUND,
                     vectorBucketName=name)
    assert resp["ResponseMetadata"]["RequestId"]
    api_error(s3v.get_vector_bucket, "NotFoundException", message=BUCKET_NOT_FOUND,
              vectorBucketArn=bucket_arn(name))
    api_error(s3v.delete_vector_bucket, "NotFoundException", message=BUCKET_NOT_FOUND,
              vectorBucketName=name)
    api_error(s3v.list_indexes, "NotFoundException", message=BUCKET_NOT_FOUND, vectorBucketName=name)


def test_duplicate_bucket(s3v, new_bucket):
    name = new_bucket()
    api_error(s3v.create_vector_bucket, "ConflictException", status=409, message=BUCKET_EXISTS,
              vectorBucketName=name)


def test_delete_non_empty_bucket(s3v):
    name = unique_name("b")
    s3v.create_vector_bucket(vectorBucketName=name)
    create_index(s3v, name, "idx-one")
    api_error(s3v.delete_vector_bucket, "ConflictException", status=409, message=BUCKET_NOT_EMPTY,
              vectorBucketName=name)
    # Still there, with its index.
    assert s3v.get_index(vectorBucketName=name, indexName="idx-one")["index"]["indexName"] == "idx-one"
    s3v.delete_index(vectorBucketName=name, indexName="idx-one")
    s3v.delete_vector_bucket(vectorBucketName=name)
    api_error(s3v.get_vector_bucket, "NotFoundException", message=BUCKET_NOT_FOUND, vectorBucketName=name)


@pytest.mark.parametrize("bad", ["bad_name", "bad&name", "Bad-Upper-Name", "-leading-hyphen", "trailing-hyphen-"])
def test_invalid_bucket_name_chars(s3v, bad):
    api_error(s3v.create_vector_bucket, "ValidationException", status=400, message=BAD_BUCKET_NAME,
              vectorBucketName=bad)


def test_bucket_name_too_short(s3v_raw):
    api_error(
        s3v_raw.create_vector_bucket,
        "ValidationException",
        message="1 validation error detected. Value with length 2 at '/vectorBucketName' failed to "
        "satisfy constraint: Member must have length between 3 and 63, inclusive",
        vectorBucketName="ab",
    )


# -- indexes -------------------------------------------------------------------------------------


def test_index_lifecycle_by_name(s3v, new_bucket):
    bucket = new_bucket()
    name = unique_name("ix")
    resp = create_index(s3v, bucket, name, dimension=16, metric="euclidean")
    assert_request_id(resp)
    assert resp.get("indexArn") == index_arn(bucket, name), f"CreateIndex output: {resp}"

    ix = s3v.get_index(vectorBucketName=bucket, indexName=name)["index"]
    assert ix["vectorBucketName"] == bucket
    assert ix["indexName"] == name
    assert ix["indexArn"] == index_arn(bucket, name)
    assert ix["dataType"] == "float32"
    assert ix["dimension"] == 16
    assert ix["distanceMetric"] == "euclidean"
    assert_recent(ix.get("creationTime"), "index.creationTime")

    listed, _ = list_all_indexes(s3v, vectorBucketName=bucket)
    assert [x["indexName"] for x in listed] == [name], f"ListIndexes = {listed}"
    assert listed[0]["indexArn"] == index_arn(bucket, name)
    assert listed[0]["vectorBucketName"] == bucket
    assert_recent(listed[0].get("creationTime"), "IndexSummary.creationTime")

    s3v.delete_index(vectorBucketName=bucket, indexName=name)
    api_error(s3v.get_index, "NotFoundException", status=404, message=INDEX_NOT_FOUND,
              vectorBucketName=bucket, indexName=name)
    listed, _ = list_all_indexes(s3v, vectorBucketName=bucket)
    assert listed == []


def test_index_lifecycle_by_arn(s3v, new_bucket):
    bucket = new_bucket()
    name = unique_name("ix")
    resp = s3v.create_index(
        vectorBucketArn=bucket_arn(bucket),
        indexName=name,
        dataType="float32",
        dimension=3,
        distanceMetric="cosine",
    )
    arn = resp["indexArn"]
    assert arn == index_arn(bucket, name)

    ix = s3v.get_index(indexArn=arn)["index"]
    assert (ix["indexName"], ix["vectorBucketName"], ix["dimension"], ix["distanceMetric"]) == (
        name, bucket, 3, "cosine")

    listed, _ = list_all_indexes(s3v, vectorBucketArn=bucket_arn(bucket))
    assert [x["indexArn"] for x in listed] == [arn]

    s3v.delete_index(indexArn=arn)
    api_error(s3v.get_index, "NotFoundException", message=INDEX_NOT_FOUND, indexArn=arn)


def test_index_dimension_bounds_accepted(s3v, new_bucket):
    bucket = new_bucket()
    create_index(s3v, bucket, "dim-one", dimension=1)
    create_index(s3v, bucket, "dim-max", dimension=4096)
    assert s3v.get_index(vectorBucketName=bucket, indexName="dim-one")["index"]["dimension"] == 1
    assert s3v.get_index(vectorBucketName=bucket, indexName="dim-max")["index"]["dimension"] == 4096


def test_index_names_with_dots_allowed(s3v, new_bucket):
    bucket = new_bucket()
    create_index(s3v, bucket, "my.index-1")
    ix = s3v.get_index(indexArn=index_arn(bucket, "my.index-1"))["index"]
    assert ix["indexName"] == "my.index-1"


def test_index_metadata_configuration_round_trip(s3v, new_bucket):
    bucket = new_bucket()
    create_index(s3v, bucket, "with-nf",
                 metadataConfiguration={"nonFilterableMetadataKeys": ["note", "raw_text"]})
    ix = s3v.get_index(vectorBucketName=bucket, indexName="with-nf")["index"]
    keys = (ix.get("metadataConfiguration") or {}).get("nonFilterableMetadataKeys")
    assert keys is not None and sorted(keys) == ["note", "raw_text"], f"GetIndex returned {ix}"


def test_list_indexes_prefix_and_pagination(s3v, new_bucket):
    bucket = new_bucket()
    names = [f"alpha-{i}" for i in range(5)] + ["beta-0", "beta-1"]
    for n in names:
        create_index(s3v, bucket, n, dimension=2)
    items, pages = list_all_indexes(s3v, vectorBucketName=bucket, maxResults=2)
    got = [x["indexName"] for x in items]
    assert sorted(got) == sorted(names), f"paginated ListIndexes returned {got}"
    assert pages >= 4, f"7 indexes with maxResults=2 need at least 4 pages, got {pages}"
    items, _ = list_all_indexes(s3v, vectorBucketName=bucket, prefix="beta")
    assert sorted(x["indexName"] for x in items) == ["beta-0", "beta-1"]


def test_get_unknown_index(s3v, new_bucket):
    bucket = new_bucket()
    api_error(s3v.get_index, "NotFoundException", status=404, message=INDEX_NOT_FOUND,
              vectorBucketName=bucket, indexName="nope")
    # An unknown bucket also reports "index could not be found" for GetIndex.
    missing = unique_name("missing")
    api_error(s3v.get_index, "NotFoundException", status=404, message=INDEX_NOT_FOUND,
              vectorBucketName=missing, indexName="nope")
    api_error(s3v.get_index, "NotFoundException", message=INDEX_NOT_FOUND,
              indexArn=index_arn(missing, "nope"))


def test_create_index_in_unknown_bucket(s3v):
    api_error(create_index, "NotFoundException", status=404, s3v=s3v,
              bucket=unique_name("missing"), name="idx")


def test_duplicate_index(s3v, new_bucket):
    bucket = new_bucket()
    create_index(s3v, bucket, "dup-idx")
    api_error(create_index, "ConflictException", status=409, s3v=s3v, bucket=bucket, name="dup-idx")
    # Same name in another bucket is fine.
    other = new_bucket()
    create_index(s3v, other, "dup-idx")


def test_same_index_name_is_independent_per_bucket(s3v, new_bucket):
    b1, b2 = new_bucket(), new_bucket()
    create_index(s3v, b1, "shared", dimension=2)
    create_index(s3v, b2, "shared", dimension=3)
    s3v.put_vectors(vectorBucketName=b1, indexName="shared",
                    vectors=[{"key": "k", "data": {"float32": [1.0, 2.0]}}])
    got = s3v.get_vectors(vectorBucketName=b2, indexName="shared", keys=["k"])["vectors"]
    assert got == [], f"vector leaked into another bucket's index: {got}"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dimension", 0, "1 validation error detected. Value at '/dimension' failed to satisfy constraint: "
                         "Member must be between 1 and 4096, inclusive"),
        ("dimension", 4097, "1 validation error detected. Value at '/dimension' failed to satisfy constraint: "
                            "Member must be between 1 and 4096, inclusive"),
        ("distanceMetric", "what", "1 validation error detected. Value at '/distanceMetric' failed to satisfy "
                                   "constraint: Member must satisfy enum value set: [euclidean, cosine]"),
        ("dataType", "int", "1 validation error detected. Value at '/dataType' failed to satisfy constraint: "
                            "Member must satisfy enum value set: [float32]"),
    ],
)
def test_create_index_invalid_parameters(s3v_raw, new_bucket, field, value, message):
    bucket = new_bucket()
    kw = dict(vectorBucketName=bucket, indexName="bad-params", dataType="float32", dimension=4,
              distanceMetric="cosine")
    kw[field] = value
    api_error(s3v_raw.create_index, "ValidationException", status=400, message=message, **kw)
    api_error(s3v_raw.get_index, "NotFoundException", vectorBucketName=bucket, indexName="bad-params")


@pytest.mark.parametrize("bad", ["Bad_Index", "UPPER", "-x-"])
def test_create_index_invalid_name(s3v, new_bucket, bad):
    api_error(create_index, "ValidationException", status=400, s3v=s3v, bucket=new_bucket(), name=bad)


# -- addressing: exactly one of name / ARN --------------------------------------------------------


def test_bucket_addressing_both_or_neither(s3v_raw, new_bucket):
    bucket = new_bucket()
    both = {"vectorBucketName": bucket, "vectorBucketArn": bucket_arn(bucket)}
    for op in (s3v_raw.get_vector_bucket, s3v_raw.list_indexes, s3v_raw.delete_vector_bucket):
        api_error(op, "ValidationException", status=400, message=BUCKET_ADDRESSING)
        api_error(op, "ValidationException", status=400, message=BUCKET_ADDRESSING, **both)
    # Nothing was deleted by the rejected DeleteVectorBucket calls.
    s3v_raw.get_vector_bucket(vectorBucketName=bucket)


INDEX_OPS = {
    "get_index": {},
    "delete_index": {},
    "list_vectors": {},
    "get_vectors": {"keys": ["k"]},
    "delete_vectors": {"keys": ["k"]},
    "put_vectors": {"vectors": [{"key": "k", "data": {"float32": [1.0, 2.0]}}]},
    "query_vectors": {"topK": 1, "queryVector": {"float32": [1.0, 2.0]}},
}


@pytest.mark.parametrize("op", sorted(INDEX_OPS))
def test_index_addressing_both_or_neither(s3v_raw, new_bucket, op):
    bucket = new_bucket()
    create_index(s3v_raw, bucket, "addr", dimension=2)
    call = getattr(s3v_raw, op)
    extra = INDEX_OPS[op]
    arn = index_arn(bucket, "addr")
    bad_forms = {
        "neither": {},
        "all three": {"indexArn": arn, "vectorBucketName": bucket, "indexName": "addr"},
        "bucket name only": {"vectorBucketName": bucket},
        "index name only": {"indexName": "addr"},
    }
    for form, addressing in bad_forms.items():
        try:
            api_error(call, "ValidationException", status=400, message=INDEX_ADDRESSING, **addressing, **extra)
        except AssertionError as e:
            raise AssertionError(f"{op} with {form}: {e}") from None
    # The index is intact (DeleteIndex with bad addressing did nothing).
    s3v_raw.get_index(indexArn=arn)


def test_create_index_addressing_both_or_neither(s3v_raw, new_bucket):
    bucket = new_bucket()
    kw = dict(indexName="addr", dataType="float32", dimension=2, distanceMetric="cosine")
    api_error(s3v_raw.create_index, "ValidationException", message=BUCKET_ADDRESSING, **kw)
    api_error(s3v_raw.create_index, "ValidationException", message=BUCKET_ADDRESSING,
              vectorBucketName=bucket, vectorBucketArn=bucket_arn(bucket), **kw)
