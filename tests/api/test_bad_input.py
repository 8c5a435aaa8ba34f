"""Hostile and malformed input must produce clean errors, never a crash or data damage.

Raw HTTP requests are SigV4-signed exactly like botocore signs them (service "s3vectors",
us-east-1, the dev credentials), so they get past authentication and exercise the parsers.
After every bad input the server process must still be alive, answer /health, and return a
previously stored sentinel vector unchanged.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import warnings

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from apiutil import cleanup_bucket, unique_name

SENTINEL_DATA = [1.5, -2.25, 3.0, 0.125]
SENTINEL_MD = {"kind": "sentinel", "n": 7, "tags": ["a", "b"]}
ERROR_TYPES = ("ValidationException", "SerializationException")


@pytest.fixture(scope="module")
def target(quiver):
    """A bucket/index holding one sentinel vector, plus a check() that everything is intact."""
    s3v = quiver.client()
    bucket = unique_name("bad")
    s3v.create_vector_bucket(vectorBucketName=bucket)
    s3v.create_index(vectorBucketName=bucket, indexName="bad", dataType="float32", dimension=4,
                     distanceMetric="euclidean")
    kw = {"vectorBucketName": bucket, "indexName": "bad"}
    s3v.put_vectors(vectors=[{"key": "sentinel", "data": {"float32": SENTINEL_DATA}, "metadata": SENTINEL_MD}], **kw)

    def check(after: str) -> None:
        assert quiver.alive(), f"server process died after {after}\n{quiver.log_tail()}"
        assert quiver.health() == 200, f"/health not 200 after {after}"
        got = s3v.get_vectors(keys=["sentinel"], returnData=True, returnMetadata=True, **kw)["vectors"]
        assert got == [{"key": "sentinel", "data": {"float32": SENTINEL_DATA}, "metadata": SENTINEL_MD}], (
            f"sentinel vector changed after {after}: {got}"
        )
        keys = [v["key"] for v in s3v.list_vectors(**kw)["vectors"]]
        assert keys == ["sentinel"], f"index contents changed after {after}: {keys}"
        res = s3v.query_vectors(topK=1, queryVector={"float32": SENTINEL_DATA}, returnDistance=True, **kw)
        assert [v["key"] for v in res["vectors"]] == ["sentinel"], f"query broken after {after}: {res['vectors']}"

    check("setup")
    yield {"bucket": bucket, "index": "bad", "kw": kw, "check": check}
    cleanup_bucket(s3v, bucket)


def assert_json_error(r: requests.Response, statuses=(400,), types=ERROR_TYPES, what="") -> dict:
    desc = f"{what}: HTTP {r.status_code}, headers {dict(r.headers)}, body {r.text[:300]!r}"
    assert r.status_code in statuses, f"unexpected status; {desc}"
    etype = r.headers.get("x-amzn-ErrorType", "").split(":")[0]
    if types is not None:
        assert etype in types, f"x-amzn-ErrorType should be one of {types}; {desc}"
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON; {desc}") from None
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], (
        f"error body needs a non-empty 'message'; {desc}"
    )
    assert r.headers.get("x-amzn-RequestId"), f"missing x-amzn-RequestId; {desc}"
    return body


MALFORMED = [
    ("truncated-object", b"{"),
    ("not-json", b"not json at all"),
    ("truncated-member", b'{"vectorBucketName": '),
    ("bad-array", b'{"vectors": [}'),
    ("trailing-garbage", b'{"vectorBucketName": "x"} trailing'),
    ("invalid-utf8", b'{"vectorBucketName": "\xff\xfe\xfd"}'),
    ("binary", bytes(range(256))),
    ("bom-and-garbage", b"\xef\xbb\xbf{{{"),
    ("array-top-level", b"[]"),
    ("null-top-level", b"null"),
    ("string-top-level", b'"PutVectors"'),
    ("empty-body", b""),
    ("unterminated-string", b'{"vectorBucketName": "abc'),
    ("single-quotes", b"{'vectorBucketName': 'x'}"),
]


@pytest.mark.parametrize("body", [b for _, b in MALFORMED], ids=[i for i, _ in MALFORMED])
def test_malformed_json_put_vectors(quiver, target, body):
    r = quiver.signed_request("POST", "/PutVectors", body)
    assert_json_error(r, what=f"malformed body {body[:40]!r}")
    target["check"](f"malformed body {body[:40]!r}")


def _wrong_type_cases(t):
    b, i = t["bucket"], t["index"]
    vec = {"key": "wt", "data": {"float32": [1, 2, 3, 4]}}
    return [
        ("create-index-dimension-string", "/CreateIndex",
         {"vectorBucketName": b, "indexName": "wt-ix", "dataType": "float32", "dimension": "4", "distanceMetric": "cosine"}),
        ("create-index-dimension-float", "/CreateIndex",
         {"vectorBucketName": b, "indexName": "wt-ix", "dataType": "float32", "dimension": 4.5, "distanceMetric": "cosine"}),
        ("create-index-dimension-huge", "/CreateIndex",
         {"vectorBucketName": b, "indexName": "wt-ix", "dataType": "float32", "dimension": 1e30, "distanceMetric": "cosine"}),
        ("create-index-dimension-2^64", "/CreateIndex",
         {"vectorBucketName": b, "indexName": "wt-ix", "dataType": "float32", "dimension": 18446744073709551617,
          "distanceMetric": "cosine"}),
        ("create-bucket-name-number", "/CreateVectorBucket", {"vectorBucketName": 42}),
        ("put-vectors-not-list", "/PutVectors", {"vectorBucketName": b, "indexName": i, "vectors": "abc"}),
        ("put-vectors-list-of-strings", "/PutVectors", {"vectorBucketName": b, "indexName": i, "vectors": ["abc"]}),
        ("put-data-strings", "/PutVectors",
         {"vectorBucketName": b, "indexName": i, "vectors": [{"key": "wt", "data": {"float32": ["a", "b", "c", "d"]}}]}),
        ("put-data-nested", "/PutVectors",
         {"vectorBucketName": b, "indexName": i, "vectors": [{"key": "wt", "data": {"float32": [[1], [2], [3], [4]]}}]}),
        ("put-data-null", "/PutVectors",
         {"vectorBucketName": b, "indexName": i, "vectors": [{"key": "wt", "data": {"float32": [1, None, 3, 4]}}]}),
        ("put-data-missing", "/PutVectors", {"vectorBucketName": b, "indexName": i, "vectors": [{"key": "wt"}]}),
        ("put-data-unknown-type", "/PutVectors",
         {"vectorBucketName": b, "indexName": i, "vectors": [{"key": "wt", "data": {"float64": [1, 2, 3, 4]}}]}),
        ("put-key-number", "/PutVectors",
         {"vectorBucketName": b, "indexName": i, "vectors": [dict(vec, key=123)]}),
        ("put-key-missing", "/PutVectors",
         {"vectorBucketName": b, "indexName": i, "vectors": [{"data": {"float32": [1, 2, 3, 4]}}]}),
        ("query-topk-string", "/QueryVectors",
         {"vectorBucketName": b, "indexName": i, "topK": "10", "queryVector": {"float32": [1, 2, 3, 4]}}),
        ("query-topk-huge", "/QueryVectors",
         {"vectorBucketName": b, "indexName": i, "topK": 10**20, "queryVector": {"float32": [1, 2, 3, 4]}}),
        ("query-vector-not-object", "/QueryVectors",
         {"vectorBucketName": b, "indexName": i, "topK": 1, "queryVector": [1, 2, 3, 4]}),
        ("get-keys-string", "/GetVectors", {"vectorBucketName": b, "indexName": i, "keys": "sentinel"}),
        ("get-flag-string", "/GetVectors",
         {"vectorBucketName": b, "indexName": i, "keys": ["sentinel"], "returnData": "yes"}),
        ("list-max-results-negative", "/ListVectors", {"vectorBucketName": b, "indexName": i, "maxResults": -5}),
        ("list-segment-count-string", "/ListVectors",
         {"vectorBucketName": b, "indexName": i, "segmentCount": "x", "segmentIndex": 0}),
        ("list-bad-next-token", "/ListVectors", {"vectorBucketName": b, "indexName": i, "nextToken": "!!not-a-token!!"}),
        ("delete-keys-numbers", "/DeleteVectors", {"vectorBucketName": b, "indexName": i, "keys": [1, 2]}),
        ("delete-keys-empty-string", "/DeleteVectors", {"vectorBucketName": b, "indexName": i, "keys": [""]}),
    ]


_CASE_IDS = [c[0] for c in _wrong_type_cases({"bucket": "b", "index": "i"})]


@pytest.mark.parametrize("case_id", _CASE_IDS)
def test_wrong_types(quiver, target, case_id):
    _, path, body = next(c for c in _wrong_type_cases(target) if c[0] == case_id)
    r = quiver.signed_request("POST", path, json.dumps(body))
    assert_json_error(r, what=f"{case_id} {path}")
    target["check"](case_id)


def test_huge_body(quiver, target):
    """25 MiB exceeds the 20 MiB request limit: expect 413 (or 400), and the server carries on."""
    pad = "x" * (25 * 1024 * 1024)
    body = json.dumps({"vectorBucketName": target["bucket"], "indexName": target["index"],
                       "vectors": [{"key": "huge", "data": {"float32": [1, 2, 3, 4]}, "metadata": {"note": pad}}]})
    try:
        r = quiver.signed_request("POST", "/PutVectors", body, timeout=120)
    except requests.exceptions.ConnectionError as e:
        # Closing the connection without reading a huge body is acceptable; crashing is not.
        warnings.warn(f"25 MiB request: connection closed without a response ({e!r})")
    else:
        assert r.status_code in (400, 413), f"25 MiB body: HTTP {r.status_code} {r.text[:200]!r}"
        assert r.content, "25 MiB body: error response has no body"
        if r.status_code == 400:
            assert_json_error(r, types=None, what="25 MiB body")
    target["check"]("25 MiB body")


def test_unknown_operation(quiver, target):
    r = quiver.signed_request("POST", "/NoSuchOp", "{}")
    assert 400 <= r.status_code < 500, f"POST /NoSuchOp: HTTP {r.status_code} {r.text[:200]!r}"
    assert_json_error(r, statuses=(r.status_code,), types=None, what="POST /NoSuchOp")
    target["check"]("POST /NoSuchOp")

    for method, path in [("GET", "/PutVectors"), ("DELETE", "/CreateVectorBucket"), ("POST", "/"),
                         ("POST", "/PutVectors/extra"), ("POST", "/%00%ff"), ("GET", "/tags/not-an-arn")]:
        r = quiver.signed_request(method, path, b"{}" if method == "POST" else b"")
        assert 400 <= r.status_code < 500, f"{method} {path}: HTTP {r.status_code} {r.text[:200]!r}"
        target["check"](f"{method} {path}")


def test_unsigned_and_badly_signed_requests_rejected(quiver, target):
    body = json.dumps({"vectorBucketName": target["bucket"], "indexName": target["index"],
                       "vectors": [{"key": "evil", "data": {"float32": [0, 0, 0, 0]}}]})
    # (headers, allowed statuses): header values that are not valid HTTP (control characters) or
    # too large may be refused by the HTTP layer (400/431) before authentication.
    variants = [
        ({}, (403,)),
        ({"Authorization": "AWS4-HMAC-SHA256"}, (403,)),
        ({"Authorization": "AWS4-HMAC-SHA256 Credential=/,SignedHeaders=,Signature="}, (403,)),
        ({"Authorization": "Basic cXVpdmVyZGV2OnF1aXZlcmRldnNlY3JldA=="}, (403,)),
        ({"Authorization": "garbage \x01\x02"}, (400, 403)),
        ({"Authorization": "AWS4-HMAC-SHA256 " + "A" * 100_000}, (400, 403, 431)),
    ]
    for hdrs, allowed in variants:
        what = f"auth variant {str(hdrs)[:60]}"
        try:
            r = requests.post(quiver.endpoint + "/PutVectors", data=body,
                              headers={"Content-Type": "application/json", **hdrs}, timeout=30)
        except requests.exceptions.ConnectionError:
            assert 431 in allowed, f"{what}: connection dropped"
            continue  # refusing an oversized header by closing the connection is fine
        assert r.status_code in allowed, f"{what}: HTTP {r.status_code} {r.text[:200]!r}"
        if r.status_code == 403:
            assert_json_error(r, statuses=(403,), types=None, what=what)
    target["check"]("bad Authorization headers")


def test_bad_credentials_rejected(quiver, target):
    """Wrong secret, unknown access key, wrong region, tampered body: 403 and nothing happens."""
    def client(access_key, secret, region="us-east-1"):
        return boto3.client("s3vectors", endpoint_url=quiver.endpoint, region_name=region,
                            aws_access_key_id=access_key, aws_secret_access_key=secret,
                            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))

    evil = unique_name("evil")
    for label, c in [("wrong secret", client("quiverdev", "not-the-secret")),
                     ("unknown access key", client("AKIDNOBODY", "quiverdevsecret")),
                     ("wrong region scope", client("quiverdev", "quiverdevsecret", region="eu-west-1"))]:
        for call in (lambda: c.create_vector_bucket(vectorBucketName=evil),
                     lambda: c.delete_vectors(keys=["sentinel"], **target["kw"])):
            try:
                call()
            except ClientError as e:
                status = e.response["ResponseMetadata"]["HTTPStatusCode"]
                assert status == 403, f"{label}: expected HTTP 403, got {status} {e.response['Error']}"
            else:
                raise AssertionError(f"{label}: request was accepted")

    # Body swapped after signing: the payload hash no longer matches.
    signed_body = json.dumps({"vectorBucketName": evil})
    req = AWSRequest(method="POST", url=quiver.endpoint + "/CreateVectorBucket", data=signed_body.encode(),
                     headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("quiverdev", "quiverdevsecret"), "s3vectors", "us-east-1").add_auth(req)
    tampered = json.dumps({"vectorBucketName": evil + "-x"})
    r = requests.post(quiver.endpoint + "/CreateVectorBucket", data=tampered, headers=dict(req.headers.items()),
                      timeout=30)
    assert r.status_code == 403, f"tampered body: HTTP {r.status_code} {r.text[:200]!r}"

    s3v = quiver.client()
    names = {b["vectorBucketName"] for b in s3v.list_vector_buckets(prefix="evil")["vectorBuckets"]}
    assert not names & {evil, evil + "-x"}, f"rejected requests created buckets: {names}"
    target["check"]("requests with bad credentials")


@pytest.mark.parametrize("depth", [10, 32, 33, 100, 10_000, 200_000])
def test_deeply_nested_filter(quiver, target, depth):
    """Filters nest at most 32 levels (the leaf under 32 `$and`s is the deepest accepted); deeper
    is a 400, whether the filter validator or the JSON parser's own recursion limit says so."""
    filt = '{"$and": [' * depth + '{"kind": "sentinel"}' + "]}" * depth
    body = ('{"vectorBucketName": "%s", "indexName": "%s", "topK": 1, '
            '"queryVector": {"float32": [1.5, -2.25, 3.0, 0.125]}, "filter": %s}') % (
        target["bucket"], target["index"], filt)
    r = quiver.signed_request("POST", "/QueryVectors", body, timeout=120)
    if depth <= 32:
        assert r.status_code == 200, f"depth {depth}: HTTP {r.status_code} {r.text[:200]!r}"
        assert [v["key"] for v in r.json()["vectors"]] == ["sentinel"]
    else:
        error = assert_json_error(r, what=f"filter nested {depth} deep")
        assert r.headers["x-amzn-ErrorType"].startswith("ValidationException"), r.headers
        if depth == 33:
            assert "nesting deeper than 32" in error["message"], error
        else:
            # Past ~60 levels the JSON parser's recursion limit (128) refuses the body first.
            assert ("nesting deeper than 32" in error["message"]
                    or "recursion limit exceeded" in error["message"]), error
    target["check"](f"filter nested {depth} deep")


@pytest.mark.parametrize("depth", [200, 100_000])
def test_deeply_nested_metadata(quiver, target, depth):
    md = '{"deep": ' + "[" * depth + "1" + "]" * depth + "}"
    body = ('{"vectorBucketName": "%s", "indexName": "%s", "vectors": [{"key": "deep", '
            '"data": {"float32": [1, 2, 3, 4]}, "metadata": %s}]}') % (target["bucket"], target["index"], md)
    r = quiver.signed_request("POST", "/PutVectors", body, timeout=120)
    assert_json_error(r, what=f"metadata nested {depth} deep")
    target["check"](f"metadata nested {depth} deep")


def test_concurrent_garbage(quiver, target):
    """Many parallel connections sending garbage, some dropped mid-request."""
    errors: list[str] = []

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(20):
            try:
                if rnd.random() < 0.5:
                    r = quiver.signed_request("POST", rnd.choice(["/PutVectors", "/QueryVectors", "/CreateIndex"]),
                                              os.urandom(rnd.randint(0, 4096)), timeout=30)
                    if r.status_code >= 500:
                        errors.append(f"HTTP {r.status_code}: {r.text[:100]!r}")
                else:
                    # Half a request, then hang up.
                    with socket.create_connection(("127.0.0.1", quiver.port), timeout=5) as s:
                        s.sendall(b"POST /PutVectors HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"vec")
            except Exception as e:  # noqa: BLE001 - every failure of a worker is reported
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"workers still running after 120 s: {stuck}"
    assert not errors, f"{len(errors)} bad responses, e.g. {errors[:3]}"
    target["check"]("concurrent garbage")


@pytest.mark.parametrize("port_key", ["node_addr", "cluster_addr"])
def test_udp_garbage_to_node_port(quiver, target, port_key):
    """Random datagrams (some shaped like QUIC long/short header packets) at the node's QUIC port
    and at the coordinator's cluster (Raft) port."""
    info = quiver.dev_info()
    host, port = info[port_key].rsplit(":", 1)
    addr = (host, int(port))
    rnd = random.Random(4242)
    sizes = [1, 2, 5, 20, 64, 100, 512, 1199, 1200, 1252, 1350, 1472, 1500, 4096, 9000, 65000]
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(200):
            size = sizes[n % len(sizes)]
            payload = bytearray(os.urandom(size))
            kind = n % 4
            if kind == 1 and size >= 8:
                # QUIC v1 long header (Initial/0-RTT/Handshake/Retry types) with a random DCID.
                payload[0] = 0xC0 | (rnd.randint(0, 3) << 4) | rnd.randint(0, 3)
                payload[1:5] = b"\x00\x00\x00\x01"
                payload[5] = rnd.choice([0, 8, 20, 255])
            elif kind == 2 and size >= 2:
                payload[0] = 0x40 | (payload[0] & 0x3F)  # short header
            elif kind == 3 and size >= 6:
                payload[0] = 0x80 | (payload[0] & 0x7F)
                payload[1:5] = b"\x00\x00\x00\x00"  # version negotiation
            try:
                s.sendto(bytes(payload), addr)
                sent += 1
            except OSError:
                pass  # e.g. message too long on some systems
            if n % 25 == 24:
                time.sleep(0.01)
    assert sent >= 150, f"only {sent} datagrams could be sent"
    time.sleep(1.0)
    target["check"]("200 random UDP datagrams to the node port")
    # The node port keeps working for later requests too.
    time.sleep(0.5)
    target["check"]("200 random UDP datagrams to the node port (again)")
