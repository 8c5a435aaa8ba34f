"""The compose cluster (deploy/compose): 3 coordinators and 3 nodes in containers of the local
image, on their own bridge network, peers addressed by service name.

One scenario, in order:
  1. cold start: every container healthy (exec-form `quiver health` checks); the time is printed;
  2. a bucket and an index created through coordinator 1, vectors written through coordinator 2,
     queried with a metadata filter through each coordinator;
  3. node-1's container stopped: every shard has replicas on node-2 and node-3, so queries and
     writes through every coordinator go on (leaders fail over); a new index, which needs three
     live nodes for its three replicas, is refused with a retryable 503; then node-2 is
     disconnected from the network too: no shard has a majority, and a query gets a retryable
     503 ServiceUnavailableException;
  4. node-2 reconnected, node-1 started: every acknowledged write is readable through every
     coordinator and queries answer again.
The stack (containers, network, volumes) is removed whatever happens.

Run with `make compose-test` (builds the image first). QUIVER_TAG picks the image tag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import cluster as local_cluster  # noqa: E402
COMPOSE_FILE = REPO / "deploy" / "compose" / "docker-compose.yml"
PROJECT = os.environ.get("QUIVER_COMPOSE_PROJECT", "quiver-compose-test")
NETWORK = f"{PROJECT}_quiver"
# Away from the compose default (18277-18279) and `make cluster` (8277-8279).
HTTP_PORTS = (28277, 28278, 28279)
SERVICES = [f"coordinator-{i}" for i in (1, 2, 3)] + [f"node-{i}" for i in (1, 2, 3)]
DIM = 16
COLD_START_TIMEOUT = 180


def compose(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, **{f"QUIVER_HTTP_{i}": str(p) for i, p in enumerate(HTTP_PORTS, 1)}}
    return subprocess.run(["docker-compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args],
                          check=check, capture_output=True, text=True, env=env, timeout=timeout)


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True,
                          timeout=120).stdout.strip()


def container(service: str) -> str:
    cid = compose("ps", "-q", service).stdout.strip()
    assert cid, f"no container for {service}"
    return cid


def health(service: str) -> str:
    return docker("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                  container(service), check=False)


def wait_for(what: str, check, timeout: float):
    return local_cluster.wait_for(what, check, timeout, interval=0.5)


def client(i: int, retries: int = 1):
    return boto3.client(
        "s3vectors",
        endpoint_url=f"http://127.0.0.1:{HTTP_PORTS[i - 1]}",
        region_name="us-east-1",
        aws_access_key_id="quiverdev",
        aws_secret_access_key="quiverdevsecret",
        config=Config(retries={"total_max_attempts": retries, "mode": "standard"},
                      connect_timeout=5, read_timeout=30),
    )


def status() -> dict:
    out = docker("exec", container("coordinator-1"), "/bin/quiver", "admin",
                 "--coordinator", "coordinator-1:7277", "--tls-dir", "/etc/quiver/tls",
                 "status", "--json")
    return json.loads(out)


def vectors(prefix: str, n: int, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, DIM)).astype(np.float32)
    return {f"{prefix}-{i}": [float(x) for x in row] for i, row in enumerate(data)}


def genre(i: int) -> str:
    return "even" if i % 2 == 0 else "odd"


def put_all(s3v, index: str, data: dict[str, list[float]]) -> None:
    items = list(data.items())
    for start in range(0, len(items), 100):
        s3v.put_vectors(
            vectorBucketName="books", indexName=index,
            vectors=[{"key": k, "data": {"float32": v}, "metadata": {"n": i, "genre": genre(i)}}
                     for i, (k, v) in enumerate(items[start:start + 100], start)],
        )


def get_keys(s3v, index: str, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), 100):
        out = s3v.get_vectors(vectorBucketName="books", indexName=index, keys=keys[start:start + 100])
        found.update(v["key"] for v in out["vectors"])
    return found


def query_even(s3v, index: str, vector: list[float]) -> list[dict]:
    return s3v.query_vectors(vectorBucketName="books", indexName=index, topK=5,
                             queryVector={"float32": vector}, filter={"genre": "even"},
                             returnMetadata=True)["vectors"]


@pytest.fixture(scope="module")
def cluster():
    compose("down", "-v", "--remove-orphans", check=False)  # leftovers of an interrupted run
    started = time.time()
    try:
        compose("up", "-d")
        wait_for("every container healthy",
                 lambda: all(health(s) == "healthy" for s in SERVICES), timeout=COLD_START_TIMEOUT)
        print(f"\ncold start: {time.time() - started:.1f} s from `docker-compose up -d` to 6 healthy containers")
        yield
    finally:
        for service in SERVICES:
            logs = compose("logs", "--no-color", "--tail", "15", service, check=False)
            print(f"--- {service} ---\n{logs.stdout}")
        for service in ("node-1", "node-2"):  # a disconnected container blocks `down` of the network
            cid = compose("ps", "-q", service, check=False).stdout.strip()
            if cid:
                docker("network", "connect", "--alias", service, NETWORK, cid, check=False)
        compose("down", "-v", "--remove-orphans", "-t", "5", check=False)


def test_compose_cluster(cluster):
    s1, s2, s3 = client(1), client(2), client(3)

    # 2. create through 1, write through 2, query with a filter through each coordinator.
    s1.create_vector_bucket(vectorBucketName="books")
    s1.create_index(vectorBucketName="books", indexName="pages", dataType="float32",
                    dimension=DIM, distanceMetric="euclidean")
    data = vectors("p", 300, seed=1)
    put_all(s2, "pages", data)
    probe = "p-42"
    for s in (s1, s2, s3):
        hits = query_even(s, "pages", data[probe])
        assert hits[0]["key"] == probe, hits
        assert all(h["metadata"]["genre"] == "even" for h in hits), hits
    assert get_keys(s3, "pages", list(data)) == set(data)
    for shard in status()["shards"]:
        assert sorted(shard["replicas"]) == ["node-1", "node-2", "node-3"], shard

    # 3. stop node-1: the other two replicas of every shard serve on.
    compose("stop", "-t", "2", "node-1")
    acknowledged = {}
    for key, vector in vectors("d", 40, seed=3).items():
        client(3, retries=5).put_vectors(vectorBucketName="books", indexName="pages",
                                         vectors=[{"key": key, "data": {"float32": vector}}])
        acknowledged[key] = vector
    for i in (1, 2, 3):
        hits = query_even(client(i, retries=5), "pages", data[probe])
        assert hits[0]["key"] == probe, hits
    wait_for("node-1 marked down",
             lambda: {n["id"] for n in status()["nodes"] if not n["up"]} == {"node-1"}, timeout=30)
    with pytest.raises(ClientError) as err:
        s1.create_index(vectorBucketName="books", indexName="while-down", dataType="float32",
                        dimension=DIM, distanceMetric="cosine")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # ... and cut node-2 off the network: no shard has a majority left.
    docker("network", "disconnect", NETWORK, container("node-2"))
    with pytest.raises(ClientError) as err:
        s1.query_vectors(vectorBucketName="books", indexName="pages", topK=3,
                         queryVector={"float32": data[probe]})
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert err.value.response["Error"]["Code"] == "ServiceUnavailableException"

    # 4. heal: reconnect node-2 under its service name, start node-1.
    docker("network", "connect", "--alias", "node-2", NETWORK, container("node-2"))
    compose("start", "node-1")
    wait_for("every node up", lambda: all(n["up"] for n in status()["nodes"]), timeout=60)
    wait_for("every container healthy", lambda: all(health(s) == "healthy" for s in SERVICES),
             timeout=60)
    data.update(acknowledged)
    for i in (1, 2, 3):
        retrying = client(i, retries=5)
        assert get_keys(retrying, "pages", list(data)) == set(data)
        hits = query_even(retrying, "pages", data[probe])
        assert hits[0]["key"] == probe
    key = next(iter(acknowledged))
    hits = client(1, retries=5).query_vectors(vectorBucketName="books", indexName="pages", topK=1,
                                              queryVector={"float32": acknowledged[key]})["vectors"]
    assert hits[0]["key"] == key
