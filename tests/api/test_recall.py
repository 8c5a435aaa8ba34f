"""Search quality: recall@10 of QueryVectors against exact (numpy) nearest neighbours.

50,000 clustered 128-d float32 vectors in a euclidean index; vector i has metadata
{"sel": i % 1000}, so `{"sel": {"$lt": T}}` keeps T/1000 of the vectors. For 50 queries (data
points plus a little noise) the server's top-10 is compared with the exact top-10 of the
(filtered) data set. Mean recall@10 must be >= 0.95 without a filter and for filters keeping
50 %, 10 %, 1 % and 0.1 % of the vectors.

A table (selectivity, recall, mean latency) is printed and, when QUIVER_RECALL_REPORT is set,
written to that file.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from apiutil import cleanup_bucket, unique_name

N = 50_000
DIM = 128
CLUSTERS = 100
QUERIES = 50
K = 10
BATCH = 500
MIN_RECALL = 0.95
# (label, fraction kept, filter); `sel` is i % 1000.
CASES = [
    ("100%", 1.0, None),
    ("50%", 0.5, {"sel": {"$lt": 500}}),
    ("10%", 0.1, {"sel": {"$lt": 100}}),
    ("1%", 0.01, {"sel": {"$lt": 10}}),
    ("0.1%", 0.001, {"sel": {"$lt": 1}}),
]


def make_dataset(seed: int = 20251202) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters with a decaying spectrum (intrinsic dimension well below 128, like real
    embeddings), randomly rotated. Returns (data[N, DIM] float32, queries[QUERIES, DIM] float32)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, size=(CLUSTERS, DIM))
    spectrum = 0.6 * np.exp(-np.arange(DIM) / 24.0)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    assign = rng.integers(0, CLUSTERS, size=N)
    noise = (rng.normal(size=(N, DIM)) * spectrum) @ rotation.T
    data = (centers[assign] + noise).astype(np.float32)
    picks = rng.choice(N, size=QUERIES, replace=False)
    q_noise = (rng.normal(size=(QUERIES, DIM)) * spectrum * 0.3) @ rotation.T
    queries = (data[picks].astype(np.float64) + q_noise).astype(np.float32)
    return data, queries


def exact_top_k(data64: np.ndarray, queries: np.ndarray, mask: np.ndarray | None) -> list[list[int]]:
    q64 = queries.astype(np.float64)
    d2 = (q64**2).sum(1)[:, None] - 2.0 * q64 @ data64.T + (data64**2).sum(1)[None, :]
    if mask is not None:
        d2[:, ~mask] = np.inf
    part = np.argpartition(d2, K, axis=1)[:, :K]
    out = []
    for row, cand in enumerate(part):
        out.append([int(i) for i in cand[np.argsort(d2[row, cand])]])
    return out


@pytest.fixture(scope="module")
def recall_index(quiver):
    s3v = quiver.client()
    data, queries = make_dataset()
    bucket = unique_name("recall")
    s3v.create_vector_bucket(vectorBucketName=bucket)
    s3v.create_index(vectorBucketName=bucket, indexName="recall", dataType="float32", dimension=DIM,
                     distanceMetric="euclidean")
    kw = {"vectorBucketName": bucket, "indexName": "recall"}

    local = threading.local()

    def put_batch(start: int) -> None:
        if not hasattr(local, "client"):
            local.client = quiver.client()
        rows = data[start : start + BATCH]
        local.client.put_vectors(
            vectors=[
                {"key": f"v{start + j}", "data": {"float32": row.tolist()}, "metadata": {"sel": (start + j) % 1000}}
                for j, row in enumerate(rows)
            ],
            **kw,
        )

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(put_batch, range(0, N, BATCH)))  # list() re-raises the first failure
    ingest_s = time.monotonic() - t0
    yield {"kw": kw, "data": data, "queries": queries, "ingest_s": ingest_s, "client": s3v}
    cleanup_bucket(s3v, bucket)


def test_recall_at_10(recall_index, capsys):
    s3v = recall_index["client"]
    data, queries, kw = recall_index["data"], recall_index["queries"], recall_index["kw"]
    data64 = data.astype(np.float64)
    sel = np.arange(N) % 1000

    rows = []
    failures = []
    for label, fraction, flt in CASES:
        mask = None if flt is None else sel < flt["sel"]["$lt"]
        if mask is not None:
            assert mask.sum() == int(N * fraction)
        truth = exact_top_k(data64, queries, mask)
        recalls, latencies = [], []
        for qi, q in enumerate(queries):
            req = dict(topK=K, queryVector={"float32": q.tolist()}, **kw)
            if flt is not None:
                req["filter"] = flt
            t0 = time.perf_counter()
            resp = s3v.query_vectors(**req)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            got = [int(v["key"][1:]) for v in resp["vectors"]]
            assert len(got) == K, f"{label}: query {qi} returned {len(got)} results, expected {K}"
            if mask is not None:
                bad = [i for i in got if not mask[i]]
                assert not bad, f"{label}: query {qi} returned vectors violating the filter: {bad[:5]}"
            recalls.append(len(set(got) & set(truth[qi])) / K)
        recall = float(np.mean(recalls))
        rows.append((label, flt, recall, float(np.mean(latencies)), float(np.percentile(latencies, 95))))
        if recall < MIN_RECALL:
            failures.append(f"{label} ({flt}): recall@10 {recall:.3f} < {MIN_RECALL}")

    table = format_table(rows, recall_index["ingest_s"])
    with capsys.disabled():  # show the table even though pytest captures output
        print("\n" + table, flush=True)
    report = os.environ.get("QUIVER_RECALL_REPORT")
    if report:
        with open(report, "w") as f:
            f.write(table + "\n")
    assert not failures, "recall too low:\n" + "\n".join(failures) + "\n" + table


def format_table(rows, ingest_s: float) -> str:
    lines = [
        f"Quiver recall@{K}: {N} x {DIM}-d float32 vectors ({CLUSTERS} clusters), euclidean, "
        f"{QUERIES} queries per row; ingest {ingest_s:.1f}s ({N / max(ingest_s, 1e-9):.0f} vectors/s)",
        f"{'selectivity':>11}  {'filter':<22} {'recall@10':>9}  {'mean ms':>8}  {'p95 ms':>8}",
    ]
    for label, flt, recall, mean_ms, p95_ms in rows:
        ftxt = "none" if flt is None else f"sel < {flt['sel']['$lt']}"
        lines.append(f"{label:>11}  {ftxt:<22} {recall:>9.3f}  {mean_ms:>8.1f}  {p95_ms:>8.1f}")
    return "\n".join(lines)
