"""Fixtures for the Quiver end-to-end API tests.

The suite drives a real `quiver dev` process with boto3, exactly as a user would (only
`endpoint_url` differs from talking to AWS).

* `quiver`   (session) -- one shared `QuiverServer`, started once for the whole run. It has
                           `endpoint`, `data_dir`, `client()`, `restart()`, `kill9()`,
                           `signed_request()`, `dev_info()`, `alive()`.
* `s3v`      (session) -- boto3 s3vectors client for it (client-side validation on).
* `s3v_raw`  (session) -- same, with client-side parameter validation disabled so that
                           invalid requests reach the server.
* `new_bucket`, `new_index` -- factories for uniquely named resources (cleaned up afterwards).

`start_server()` (from apiutil, re-exported here) starts an independent server with its own data
dir and port, without any fixture; the durability tests use it so that killing a server does not
disturb other tests.

Environment: QUIVER_BIN = server binary (default $HOME/.cache/quiver/target/debug/quiver).
"""

from __future__ import annotations

import pytest

from apiutil import (  # noqa: F401  (re-exported for convenience)
    SERVERS,
    cleanup_bucket,
    QuiverServer,
    bucket_arn,
    free_port,
    index_arn,
    quiver_bin,
    start_server,
    unique_name,
)


# -- pytest hooks -------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the log tail of every running test server to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in list(SERVERS):
            if srv.alive():
                state = "running"
            else:
                state = f"NOT RUNNING, exit code {srv.proc.returncode if srv.proc else None}"
            report.sections.append((f"quiver server {srv.endpoint} [{state}]", srv.log_tail(40)))


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def quiver(tmp_path_factory):
    srv = QuiverServer(tmp_path_factory.mktemp("quiver-session"))
    srv.start()
    yield srv
    srv.stop()
    if srv in SERVERS:
        SERVERS.remove(srv)


@pytest.fixture(scope="session")
def s3v(quiver):
    return quiver.client()


@pytest.fixture(scope="session")
def s3v_raw(quiver):
    """Client with client-side parameter validation off: invalid input reaches the server."""
    return quiver.client(parameter_validation=False)


class IndexRef:
    """A created index: names, ARNs, and ready-made addressing kwargs."""

    def __init__(self, bucket: str, name: str, dimension: int, metric: str):
        self.bucket = bucket
        self.name = name
        self.dimension = dimension
        self.metric = metric
        self.arn = index_arn(bucket, name)
        self.bucket_arn = bucket_arn(bucket)

    @property
    def by_name(self) -> dict:
        return {"vectorBucketName": self.bucket, "indexName": self.name}

    @property
    def by_arn(self) -> dict:
        return {"indexArn": self.arn}

    def __repr__(self) -> str:
        return f"IndexRef({self.arn}, dim={self.dimension}, {self.metric})"


@pytest.fixture
def new_bucket(s3v):
    """Factory: new_bucket() creates a uniquely named vector bucket and returns its name."""
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = unique_name(prefix)
        s3v.create_vector_bucket(vectorBucketName=name)
        created.append(name)
        return name

    yield make
    for name in created:
        cleanup_bucket(s3v, name)


@pytest.fixture
def new_index(s3v, new_bucket):
    """Factory: new_index(dimension=4, metric="euclidean", non_filterable=None, bucket=None)."""

    def make(
        dimension: int = 4,
        metric: str = "euclidean",
        non_filterable: list[str] | None = None,
        bucket: str | None = None,
    ) -> IndexRef:
        bucket = bucket or new_bucket()
        name = unique_name("ix")
        kw = dict(
            vectorBucketName=bucket,
            indexName=name,
            dataType="float32",
            dimension=dimension,
            distanceMetric=metric,
        )
        if non_filterable:
            kw["metadataConfiguration"] = {"nonFilterableMetadataKeys": non_filterable}
        s3v.create_index(**kw)
        return IndexRef(bucket, name, dimension, metric)

    return make
