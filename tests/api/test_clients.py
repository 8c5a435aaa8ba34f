"""The main flow through the AWS CLI (v1, `aws s3vectors ...`), as a user would run it.

The CLI runs as a subprocess with `--endpoint-url` pointing at the session's server, the dev
credentials in the environment and no config files, so nothing from the machine's AWS setup
leaks in. It covers: buckets and indexes by name and by ARN, put (JSON files), get, list with
`--max-items`/`--starting-token` and with auto-pagination over several pages (`--page-size`),
parallel-scan segments, query with a filter, tags, typed errors (exit code and message) and
deletes. (The AWS Rust SDK is exercised by coordinator/tests/rust_sdk.rs.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apiutil import ACCESS_KEY, REGION, SECRET_KEY, bucket_arn, cleanup_bucket, f32_list, index_arn, unique_name

AWS = Path(sys.executable).with_name("aws")


class Cli:
    def __init__(self, endpoint: str, workdir: Path):
        self.endpoint = endpoint
        self.workdir = workdir
        empty = workdir / "aws-empty-config"
        empty.write_text("")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_CONFIG_FILE=str(empty),
            AWS_SHARED_CREDENTIALS_FILE=str(empty),
            AWS_EC2_METADATA_DISABLED="true",
            AWS_PAGER="",
        )
        self.files = 0

    def file(self, value) -> str:
        """A `file://` argument holding `value` as JSON."""
        self.files += 1
        path = self.workdir / f"arg-{self.files}.json"
        path.write_text(json.dumps(value))
        return f"file://{path}"

    def raw(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(AWS), "s3vectors", *args, "--endpoint-url", self.endpoint, "--region", REGION, "--output", "json"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=self.env)

    def __call__(self, *args: str) -> dict:
        p = self.raw(*args)
        assert p.returncode == 0, f"aws s3vectors {' '.join(args)[:300]} exited {p.returncode}:\n{p.stderr[-2000:]}"
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def error(self, code: str, *args: str) -> str:
        """Runs a command that must fail with the service error `code`; returns stderr."""
        p = self.raw(*args)
        assert p.returncode != 0, f"aws s3vectors {' '.join(args)} should fail with {code}, printed {p.stdout[:500]}"
        assert f"({code})" in p.stderr, f"expected ({code}) in stderr, got:\n{p.stderr[-1500:]}"
        return p.stderr


@pytest.fixture(scope="module")
def cli(quiver, tmp_path_factory):
    if not AWS.exists():
        pytest.fail(f"AWS CLI not found at {AWS}: tests/api/requirements.txt pins awscli; rerun tests/api/run.sh")
    return Cli(quiver.endpoint, tmp_path_factory.mktemp("awscli"))


@pytest.fixture
def cli_bucket(cli, s3v):
    name = unique_name("cli")
    yield name
    cleanup_bucket(s3v, name)


def test_cli_version_speaks_s3vectors(cli):
    p = subprocess.run([str(AWS), "--version"], capture_output=True, text=True, timeout=60, env=cli.env)
    assert p.returncode == 0 and "aws-cli/1." in (p.stdout + p.stderr), p.stdout + p.stderr


def test_cli_main_flow(cli, cli_bucket):
    b = cli_bucket
    # -- buckets
    out = cli("create-vector-bucket", "--vector-bucket-name", b)
    assert out == {"vectorBucketArn": bucket_arn(b)}
    got = cli("get-vector-bucket", "--vector-bucket-arn", bucket_arn(b))["vectorBucket"]
    assert got["vectorBucketName"] == b and got["vectorBucketArn"] == bucket_arn(b)
    # CLI v1 prints timestamps as received (cli_timestamp_format "none"): epoch seconds here.
    assert isinstance(got["creationTime"], (int, float)) and abs(got["creationTime"] - time.time()) < 3600, got
    listed = cli("list-vector-buckets", "--prefix", b)["vectorBuckets"]
    assert [x["vectorBucketName"] for x in listed] == [b]
    cli.error("ConflictException", "create-vector-bucket", "--vector-bucket-name", b)

    # -- indexes, by name and by ARN
    out = cli("create-index", "--vector-bucket-name", b, "--index-name", "movies", "--data-type", "float32",
              "--dimension", "3", "--distance-metric", "cosine",
              "--metadata-configuration", '{"nonFilterableMetadataKeys": ["synopsis"]}')
    assert out == {"indexArn": index_arn(b, "movies")}
    out = cli("create-index", "--vector-bucket-arn", bucket_arn(b), "--index-name", "by-arn.index",
              "--data-type", "float32", "--dimension", "2", "--distance-metric", "euclidean")
    assert out == {"indexArn": index_arn(b, "by-arn.index")}
    ix = cli("get-index", "--index-arn", index_arn(b, "movies"))["index"]
    assert (ix["indexName"], ix["dimension"], ix["distanceMetric"], ix["dataType"]) == ("movies", 3, "cosine", "float32")
    assert ix["metadataConfiguration"] == {"nonFilterableMetadataKeys": ["synopsis"]}
    names = [x["indexName"] for x in cli("list-indexes", "--vector-bucket-name", b)["indexes"]]
    assert sorted(names) == ["by-arn.index", "movies"]
    cli.error("ConflictException", "create-index", "--vector-bucket-name", b, "--index-name", "movies",
              "--data-type", "float32", "--dimension", "3", "--distance-metric", "cosine")
    cli.error("NotFoundException", "get-index", "--vector-bucket-name", b, "--index-name", "no-such-index")

    # -- vectors
    ixkw = ["--vector-bucket-name", b, "--index-name", "movies"]
    movies = {
        "heat": ([0.9, 0.1, 0.2], {"genre": "crime", "year": 1995, "synopsis": "LA"}),
        "alien": ([0.1, 0.8, 0.3], {"genre": ["horror", "scifi"], "year": 1979}),
        "arrival": ([0.2, 0.7, 0.6], {"genre": "scifi", "year": 2016}),
        "dune": ([0.3, 0.6, 0.7], {"genre": "scifi", "year": 2021}),
        "fargo": ([0.8, 0.3, 0.1], {"genre": "crime", "year": 1996}),
        "up": ([0.2, 0.2, 0.9], {"genre": "animation", "year": 2009}),
    }
    vectors = [{"key": k, "data": {"float32": d}, "metadata": m} for k, (d, m) in movies.items()]
    assert cli("put-vectors", *ixkw, "--vectors", cli.file(vectors)) == {}
    got = cli("get-vectors", *ixkw, "--keys", "heat", "alien", "nope", "--return-data", "--return-metadata")["vectors"]
    by_key = {v["key"]: v for v in got}
    assert set(by_key) == {"heat", "alien"}, got
    assert by_key["heat"]["data"]["float32"] == f32_list(movies["heat"][0])
    assert by_key["alien"]["metadata"] == movies["alien"][1]

    # -- listing: manual pages with --max-items / --starting-token, then everything at once
    page1 = cli("list-vectors", *ixkw, "--max-items", "4", "--page-size", "2")
    assert len(page1["vectors"]) == 4 and page1.get("NextToken"), page1
    page2 = cli("list-vectors", *ixkw, "--max-items", "4", "--page-size", "2", "--starting-token", page1["NextToken"])
    assert "NextToken" not in page2, page2
    keys = [v["key"] for v in page1["vectors"] + page2["vectors"]]
    assert sorted(keys) == sorted(movies), f"--max-items/--starting-token pages returned {keys}"
    everything = cli("list-vectors", *ixkw, "--page-size", "1", "--return-metadata")["vectors"]
    assert sorted(v["key"] for v in everything) == sorted(movies)
    assert {v["key"]: v["metadata"] for v in everything} == {k: m for k, (_, m) in movies.items()}

    # -- query with a filter (document argument), metadata and distances
    res = cli("query-vectors", "--index-arn", index_arn(b, "movies"), "--top-k", "3",
              "--query-vector", json.dumps({"float32": [0.2, 0.7, 0.6]}),
              "--filter", json.dumps({"$and": [{"genre": "scifi"}, {"year": {"$gte": 1970}}]}),
              "--return-metadata", "--return-distance")
    assert res["distanceMetric"] == "cosine"
    hits = res["vectors"]
    assert [h["key"] for h in hits] == ["arrival", "dune", "alien"], hits
    assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    assert hits[2]["metadata"] == movies["alien"][1]
    res = cli("query-vectors", *ixkw, "--top-k", "2", "--query-vector", json.dumps({"float32": [0.9, 0.1, 0.2]}))
    assert [h["key"] for h in res["vectors"]] == ["heat", "fargo"] and "distance" not in res["vectors"][0]
    stderr = cli.error("ValidationException", "query-vectors", *ixkw, "--top-k", "2",
                       "--query-vector", json.dumps({"float32": [0.9, 0.1, 0.2]}), "--filter", '{"synopsis": "LA"}')
    assert "synopsis" in stderr

    # -- tags on the bucket and the index
    for arn in (bucket_arn(b), index_arn(b, "movies")):
        assert cli("tag-resource", "--resource-arn", arn, "--tags", "team=search,env=test") == {}
        assert cli("list-tags-for-resource", "--resource-arn", arn) == {"tags": {"team": "search", "env": "test"}}
        assert cli("untag-resource", "--resource-arn", arn, "--tag-keys", "env") == {}
        assert cli("list-tags-for-resource", "--resource-arn", arn) == {"tags": {"team": "search"}}

    # -- deletes
    assert cli("delete-vectors", *ixkw, "--keys", "heat", "fargo") == {}
    got = cli("get-vectors", *ixkw, "--keys", "heat", "fargo", "up")["vectors"]
    assert [v["key"] for v in got] == ["up"]
    cli.error("ConflictException", "delete-vector-bucket", "--vector-bucket-name", b)
    assert cli("delete-index", "--index-arn", index_arn(b, "by-arn.index")) == {}
    assert cli("delete-index", *ixkw) == {}
    assert cli("list-indexes", "--vector-bucket-arn", bucket_arn(b))["indexes"] == []
    assert cli("delete-vector-bucket", "--vector-bucket-name", b) == {}
    cli.error("NotFoundException", "get-vector-bucket", "--vector-bucket-name", b)
    cli.error("NotFoundException", "list-tags-for-resource", "--resource-arn", bucket_arn(b))


def test_cli_list_vectors_auto_pagination(cli, cli_bucket, s3v):
    """1,200 vectors, `--page-size 500`: the CLI follows nextToken over 3 pages, every key once."""
    b, ix = cli_bucket, "many"
    s3v.create_vector_bucket(vectorBucketName=b)
    cli("create-index", "--vector-bucket-name", b, "--index-name", ix, "--data-type", "float32",
        "--dimension", "4", "--distance-metric", "euclidean")
    ixkw = ["--vector-bucket-name", b, "--index-name", ix]
    keys = [f"vec-{i:05d}" for i in range(1200)]
    vectors = [{"key": k, "data": {"float32": [i % 7, i % 11, i % 13, 1.0]}} for i, k in enumerate(keys)]
    for start in range(0, len(vectors), 500):
        cli("put-vectors", *ixkw, "--vectors", cli.file(vectors[start : start + 500]))

    p = cli.raw("list-vectors", *ixkw, "--page-size", "500", "--debug")
    assert p.returncode == 0, p.stderr[-2000:]
    got = [v["key"] for v in json.loads(p.stdout)["vectors"]]
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} keys listed more than once"
    assert sorted(got) == keys, f"listed {len(got)} keys, expected {len(keys)}"
    requests_made = p.stderr.count("Making request for OperationModel(name=ListVectors)")
    assert requests_made == 3, f"1,200 vectors with --page-size 500 should take 3 ListVectors calls, took {requests_made}"

    # Parallel scan from the CLI: each segment paginates on its own, together they cover all keys once.
    seen: list[str] = []
    for segment in range(3):
        out = cli("list-vectors", *ixkw, "--segment-count", "3", "--segment-index", str(segment), "--page-size", "200")
        seen += [v["key"] for v in out["vectors"]]
    assert sorted(seen) == keys, f"segments returned {len(seen)} keys ({len(set(seen))} distinct), expected {len(keys)}"
