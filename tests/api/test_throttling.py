"""Per-index rate limits: 429 TooManyRequestsException, nothing written, SDK retries succeed.

A dedicated server runs with small limits (20 write requests/s, 200 written-or-deleted vectors/s
and 50 read requests/s per index) so bursts from the tests exceed them; the session server has
the write limits off for bulk loads. The service's limits are per index and cover PutVectors and
DeleteVectors together (reference §4.1: "1,000 combined Put+Delete requests/s and 2,500 vectors
inserted+deleted/s").
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from apiutil import SERVERS, QuiverServer, api_error, get_map, unique_name

WRITE_REQUESTS_PER_S = 20
WRITE_VECTORS_PER_S = 200
READ_REQUESTS_PER_S = 50
# No retries at all. (botocore's `max_attempts` counts RETRIES: {"max_attempts": 1} would still
# retry once; `total_max_attempts` counts attempts.)
NO_RETRY = {"retries": {"total_max_attempts": 1, "mode": "standard"}}


class ThrottledServer(QuiverServer):
    @staticmethod
    def _env() -> dict:
        env = QuiverServer._env()
        env["QUIVER_MAX_WRITE_REQUESTS_PER_INDEX"] = str(WRITE_REQUESTS_PER_S)
        env["QUIVER_MAX_WRITE_VECTORS_PER_INDEX"] = str(WRITE_VECTORS_PER_S)
        env["QUIVER_MAX_READ_REQUESTS_PER_INDEX"] = str(READ_REQUESTS_PER_S)
        return env


@pytest.fixture(scope="module")
def throttled():
    srv = ThrottledServer(tempfile.mkdtemp(prefix="quiver-throttle-"))
    srv.start()
    yield srv
    srv.stop()
    if srv in SERVERS:
        SERVERS.remove(srv)


@pytest.fixture
def index(throttled):
    """A fresh index (full token buckets) on the throttled server: its addressing kwargs."""
    admin = throttled.client()
    bucket = unique_name("thr")
    admin.create_vector_bucket(vectorBucketName=bucket)
    admin.create_index(vectorBucketName=bucket, indexName="thr", dataType="float32", dimension=4,
                       distanceMetric="euclidean")
    return {"vectorBucketName": bucket, "indexName": "thr"}


def one(key: str, x: float = 1.0) -> dict:
    return {"key": key, "data": {"float32": [x, 2.0, 3.0, 4.0]}}


def burst(call, requests: list[dict], threads: int = 8) -> tuple[list[int], list[tuple[int, dict]]]:
    """Sends requests concurrently; returns (indexes that succeeded, [(index, error response)])."""

    def send(i):
        try:
            call(**requests[i])
            return i, None
        except ClientError as e:
            return i, e.response

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(send, range(len(requests))))
    ok = [i for i, err in results if err is None]
    failed = [(i, err) for i, err in results if err is not None]
    return ok, failed


def assert_all_throttled(failed: list[tuple[int, dict]]) -> None:
    for i, resp in failed:
        err, meta = resp["Error"], resp["ResponseMetadata"]
        assert err["Code"] == "TooManyRequestsException" and meta["HTTPStatusCode"] == 429, (
            f"request {i} failed with something other than throttling: {err} HTTP {meta['HTTPStatusCode']}"
        )
        assert meta.get("RequestId") and err.get("Message"), resp
        assert meta["HTTPHeaders"].get("x-amzn-errortype", "").startswith("TooManyRequestsException"), meta


def test_write_request_burst_is_throttled_and_nothing_throttled_is_written(throttled, index):
    client = throttled.client(max_pool_connections=16, **NO_RETRY)
    n = 200
    reqs = [dict(index, vectors=[one(f"w{i}", i)]) for i in range(n)]
    started = time.monotonic()
    ok, failed = burst(client.put_vectors, reqs, threads=16)
    elapsed = time.monotonic() - started
    assert failed, f"{n} concurrent PutVectors against a {WRITE_REQUESTS_PER_S} req/s limit were all accepted"
    assert ok, "every request was throttled"
    assert_all_throttled(failed)
    assert_within_limit(len(ok), n, WRITE_REQUESTS_PER_S, elapsed, "writes")
    time.sleep(1.2)
    stored = get_map(throttled.client(), index, [f"w{i}" for i in range(n)], return_data=True)
    assert set(stored) == {f"w{i}" for i in ok}, (
        f"stored keys differ from acknowledged ones: extra {sorted(set(stored) - {f'w{i}' for i in ok})[:5]}, "
        f"missing {sorted({f'w{i}' for i in ok} - set(stored))[:5]}"
    )


def assert_within_limit(accepted: int, sent: int, per_second: int, elapsed: float, what: str) -> None:
    """At most a full bucket (one second's budget) plus the refill during the burst were
    accepted; the burst must be short enough for that bound to be below what was sent."""
    allowed = per_second * (1 + elapsed) + 2
    assert allowed < sent, (
        f"the burst of {sent} {what} took {elapsed:.2f} s: too slow for the limit to bound anything"
    )
    assert accepted <= allowed, (
        f"{accepted} of {sent} {what} accepted in {elapsed:.2f} s (the limit allows {allowed:.0f})"
    )


def test_vector_rate_limit_rejects_whole_batch(throttled, index):
    client = throttled.client(**NO_RETRY)
    # 190 + 190 vectors against 200/s: the second batch would need ~0.9 s of refill.
    first = [one(f"a{i}") for i in range(190)]
    second = [one(f"b{i}") for i in range(190)]
    client.put_vectors(vectors=first, **index)
    api_error(client.put_vectors, "TooManyRequestsException", status=429, vectors=second, **index)
    time.sleep(1.2)
    stored = get_map(throttled.client(), index, [v["key"] for v in first + second], return_data=False)
    assert set(stored) == {v["key"] for v in first}, (
        f"{len(set(stored) - {v['key'] for v in first})} vectors of the throttled PutVectors were written"
    )
    # After a second the budget is back.
    client.put_vectors(vectors=second, **index)
    assert len(get_map(throttled.client(), index, [v["key"] for v in second], return_data=False)) == 190


def test_read_burst_is_throttled(throttled, index):
    throttled.client().put_vectors(vectors=[one("r0")], **index)
    time.sleep(1.2)
    client = throttled.client(max_pool_connections=16, **NO_RETRY)
    n = 150
    reqs = []
    for i in range(n):
        if i % 3 == 0:
            reqs.append((client.get_vectors, dict(index, keys=["r0"])))
        elif i % 3 == 1:
            reqs.append((client.list_vectors, dict(index)))
        else:
            reqs.append((client.query_vectors, dict(index, topK=1, queryVector={"float32": [1.0, 2.0, 3.0, 4.0]})))

    def send(i):
        call, kw = reqs[i]
        try:
            call(**kw)
            return i, None
        except ClientError as e:
            return i, e.response

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(n)))
    elapsed = time.monotonic() - started
    failed = [(i, e) for i, e in results if e is not None]
    ok = [i for i, e in results if e is None]
    assert failed, f"{n} concurrent reads against a {READ_REQUESTS_PER_S} req/s limit were all accepted"
    assert ok
    assert_all_throttled(failed)
    assert_within_limit(len(ok), n, READ_REQUESTS_PER_S, elapsed, "reads")


def test_standard_retries_eventually_succeed(throttled, index):
    """The same kind of burst through a client with standard retries: every write lands."""
    client = throttled.client(max_pool_connections=16, retries={"max_attempts": 10, "mode": "standard"})
    n = 50
    reqs = [dict(index, vectors=[one(f"s{i}", i)]) for i in range(n)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda kw: client.put_vectors(**kw), reqs))  # raises if any failed
    retries = sum(r["ResponseMetadata"]["RetryAttempts"] for r in responses)
    assert retries > 0, f"{n} writes at {WRITE_REQUESTS_PER_S}/s went through without a single 429 retry"
    stored = get_map(throttled.client(), index, [f"s{i}" for i in range(n)], return_data=False)
    assert len(stored) == n


def test_delete_vectors_counts_against_the_write_limits(throttled, index):
    """DeleteVectors is a write: 80 concurrent deletes exceed 20 write requests/s."""
    seed = throttled.client(retries={"max_attempts": 10, "mode": "standard"})
    seed.put_vectors(vectors=[one(f"d{i}") for i in range(100)], **index)
    time.sleep(1.2)
    client = throttled.client(max_pool_connections=16, **NO_RETRY)
    reqs = [dict(index, keys=[f"d{i}"]) for i in range(80)]
    ok, failed = burst(client.delete_vectors, reqs, threads=16)
    assert failed, (
        f"80 concurrent DeleteVectors against a {WRITE_REQUESTS_PER_S} write requests/s limit were all "
        "accepted: deletes are not counted against the per-index write limits"
    )
    assert_all_throttled(failed)
    time.sleep(1.2)
    # A throttled delete deleted nothing; an accepted one deleted its key.
    left = get_map(seed, index, [f"d{i}" for i in range(100)], return_data=False)
    assert set(left) == {f"d{i}" for i, _ in failed} | {f"d{i}" for i in range(80, 100)}, (
        f"keys left after the burst differ from the throttled deletes: {sorted(left)[:10]}"
    )
    # And 2 x 190 deleted vectors within a second exceed 200 vectors/s.
    seed.put_vectors(vectors=[one(f"e{i}") for i in range(190)], **index)
    seed.put_vectors(vectors=[one(f"e{i}") for i in range(190, 380)], **index)
    time.sleep(1.2)
    client.delete_vectors(keys=[f"e{i}" for i in range(190)], **index)
    api_error(client.delete_vectors, "TooManyRequestsException", status=429,
              keys=[f"e{i}" for i in range(190, 380)], **index)
    time.sleep(1.2)
    left = get_map(seed, index, [f"e{i}" for i in range(380)], return_data=False)
    assert set(left) == {f"e{i}" for i in range(190, 380)}, "the throttled DeleteVectors deleted something"
