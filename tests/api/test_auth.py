"""Authentication (SigV4) and authorization (identity + bucket policies), end to end.

One server per module is started with an `--auth-config` (passed as QUIVER_AUTH_CONFIG, the
flag's environment form) holding users with different IAM identity policies; tests drive it with
real boto3 clients (one per user) and with raw HTTP requests that are signed and then tampered
with. Every rejected request must be a 403 in the restJson1 error format and must change nothing
on the server, which is checked afterwards with the admin user.

Reference: s3vectors-api.md §1 (signing), §3.2 (error wire format), §8 (actions, the "also needs
GetVectors" rules, bucket policies).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote, urlparse

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from apiutil import (
    ACCOUNT_ID,
    REGION,
    SERVERS,
    QuiverServer,
    api_error,
    bucket_arn,
    cleanup_bucket,
    free_port,
    index_arn,
    quiver_bin,
    unique_name,
    vec,
)

SERVICE = "s3vectors"
CLOCK_SKEW_S = 300  # smaller than the 900 s default, so the tests can see the setting applies
DENIED = "AccessDeniedException"


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"


def _policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(actions, resource="*") -> dict:
    return {"Effect": "Allow", "Action": actions, "Resource": resource}


# name -> identity policy
USERS = {
    "admin": _policy(_allow("s3vectors:*")),
    "querier": _policy(_allow("s3vectors:QueryVectors")),
    "querier-get": _policy(_allow(["s3vectors:QueryVectors", "s3vectors:GetVectors"])),
    "reader": _policy(_allow(["s3vectors:Get*", "s3vectors:List*"])),
    "lister": _policy(_allow("s3vectors:ListVectors")),
    # Two ways to say "everything except PutVectors".
    "no-put": _policy({"Effect": "Allow", "NotAction": "s3vectors:PutVectors", "Resource": "*"}),
    "no-put-deny": _policy(
        _allow("s3vectors:*"),
        {"Effect": "Deny", "Action": "s3vectors:PutVectors", "Resource": "*"},
    ),
    "bucket-denied": _policy(_allow("s3vectors:*")),
    "no-tag": _policy({"Effect": "Allow", "NotAction": "s3vectors:TagResource", "Resource": "*"}),
    # Only gets access through bucket policies.
    "guest": _policy(_allow("s3vectors:ListVectorBuckets")),
}


def access_key(name: str) -> str:
    return "AKIAQTEST" + name.upper().replace("-", "")


def secret_key(name: str) -> str:
    return f"secret-of-{name}-0123456789"


def auth_config_toml() -> str:
    parts = [f"clock_skew_seconds = {CLOCK_SKEW_S}\n"]
    for name, policy in USERS.items():
        parts.append(
            "[[users]]\n"
            f'name = "{name}"\n'
            f'access_key_id = "{access_key(name)}"\n'
            f'secret_access_key = "{secret_key(name)}"\n'
            f"policy = '''\n{policy}\n'''\n"
        )
    return "\n".join(parts)


class AuthServer(QuiverServer):
    """A `quiver dev` with an auth config (QUIVER_AUTH_CONFIG is the env form of --auth-config)."""

    def __init__(self, base_dir: Path, auth_config: Path):
        super().__init__(base_dir)
        self.auth_config = auth_config

    def _env(self) -> dict:  # instance method on purpose: needs the config path
        env = QuiverServer._env()
        env["QUIVER_AUTH_CONFIG"] = str(self.auth_config)
        return env


class Env:
    """The module's server, one boto3 client per user, and a shared bucket/index with data."""

    def __init__(self, server: AuthServer):
        self.server = server
        self.endpoint = server.endpoint
        self.host = urlparse(server.endpoint).netloc
        self.clients = {name: self.client(name) for name in USERS}
        self.admin = self.clients["admin"]
        self.bucket = unique_name("auth")
        self.index = "idx"
        self.kw = {"vectorBucketName": self.bucket, "indexName": self.index}

    def client(self, name: str | None = None, *, key=None, secret=None, region=REGION):
        return boto3.client(
            "s3vectors",
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=key or access_key(name),
            aws_secret_access_key=secret or secret_key(name),
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )

    def __getitem__(self, name: str):
        return self.clients[name]

    # -- admin-side checks that nothing changed ---------------------------------------------

    def stored(self, keys, **index_kw) -> dict:
        index_kw = index_kw or self.kw
        got = self.admin.get_vectors(keys=list(keys), returnData=True, returnMetadata=True, **index_kw)
        return {v["key"]: v for v in got["vectors"]}

    def bucket_exists(self, name: str) -> bool:
        try:
            self.admin.get_vector_bucket(vectorBucketName=name)
            return True
        except ClientError as e:
            assert e.response["Error"]["Code"] == "NotFoundException", e.response
            return False

    def index_exists(self, bucket: str, index: str) -> bool:
        try:
            self.admin.get_index(vectorBucketName=bucket, indexName=index)
            return True
        except ClientError as e:
            assert e.response["Error"]["Code"] == "NotFoundException", e.response
            return False


MAIN_VECTORS = [
    vec("a", [1, 0, 0, 0], {"color": "red", "n": 1}),
    vec("b", [0, 2, 0, 0], {"color": "blue", "n": 2}),
    vec("c", [0, 0, 3, 0], {"color": "red", "n": 3}),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("quiver-auth")
    config = base / "auth.toml"
    config.write_text(auth_config_toml())
    server = AuthServer(base, config)
    server.start()
    e = Env(server)
    e.admin.create_vector_bucket(vectorBucketName=e.bucket)
    e.admin.create_index(dataType="float32", dimension=4, distanceMetric="euclidean", **e.kw)
    e.admin.put_vectors(vectors=MAIN_VECTORS, **e.kw)
    try:
        yield e
    finally:
        cleanup_bucket(e.admin, e.bucket)
        server.stop()
        if server in SERVERS:
            SERVERS.remove(server)


@pytest.fixture
def buckets(env):
    """Factory for admin-created buckets (optionally with index "idx" and MAIN_VECTORS), cleaned up."""
    created: list[str] = []

    def make(prefix="authb", with_index=True) -> str:
        name = unique_name(prefix)
        env.admin.create_vector_bucket(vectorBucketName=name)
        created.append(name)
        if with_index:
            env.admin.create_index(vectorBucketName=name, indexName="idx", dataType="float32",
                                   dimension=4, distanceMetric="euclidean")
            env.admin.put_vectors(vectorBucketName=name, indexName="idx", vectors=MAIN_VECTORS)
        return name

    yield make
    for name in created:
        cleanup_bucket(env.admin, name)


def denied(call, **kwargs) -> dict:
    """`call(**kwargs)` must fail with 403 AccessDeniedException."""
    return api_error(call, DENIED, status=403, **kwargs)


QUERY = {"topK": 3, "queryVector": {"float32": [1, 0, 0, 0]}}


# -- the config is in force ------------------------------------------------------------------------


def test_auth_config_replaces_the_dev_credentials(env):
    log = env.server.log_path.read_text(errors="replace")
    assert re.search(rf"users\s+{len(USERS)} from ", log), env.server.log_tail()
    dev = env.client(key="quiverdev", secret="quiverdevsecret")
    api_error(dev.list_vector_buckets, "UnrecognizedClientException", status=403)
    names = [b["vectorBucketName"] for b in env.admin.list_vector_buckets()["vectorBuckets"]]
    assert env.bucket in names


# -- QueryVectors and the "also needs GetVectors" rules -----------------------------------------------


def test_querier_gets_keys_and_distances(env):
    got = env["querier"].query_vectors(returnDistance=True, **QUERY, **env.kw)
    want = env.admin.query_vectors(returnDistance=True, **QUERY, **env.kw)
    assert [v["key"] for v in got["vectors"]] == ["a", "b", "c"], got["vectors"]
    assert got["vectors"] == want["vectors"]
    assert got["vectors"][0]["distance"] == pytest.approx(0.0, abs=1e-6)
    assert got["vectors"][1]["distance"] == pytest.approx(5 ** 0.5, abs=1e-5)
    assert all("metadata" not in v for v in got["vectors"])
    assert got["distanceMetric"] == "euclidean"
    # Explicitly not asking for metadata needs nothing extra either; nor does addressing by ARN.
    got = env["querier"].query_vectors(returnMetadata=False, indexArn=index_arn(env.bucket, env.index), **QUERY)
    assert [v["key"] for v in got["vectors"]] == ["a", "b", "c"]


def test_querier_with_filter_is_denied(env):
    resp = denied(env["querier"].query_vectors, filter={"color": "red"}, **QUERY, **env.kw)
    msg = resp["Error"]["Message"]
    assert "s3vectors:GetVectors" in msg and user_arn("querier") in msg, msg
    denied(env["querier"].query_vectors, filter={"color": "red"}, returnDistance=True, **QUERY, **env.kw)


def test_querier_with_return_metadata_is_denied(env):
    resp = denied(env["querier"].query_vectors, returnMetadata=True, **QUERY, **env.kw)
    assert "s3vectors:GetVectors" in resp["Error"]["Message"]


def test_querier_get_can_filter_and_read_metadata(env):
    c = env["querier-get"]
    got = c.query_vectors(filter={"color": "red"}, returnMetadata=True, returnDistance=True, **QUERY, **env.kw)
    assert [v["key"] for v in got["vectors"]] == ["a", "c"], got["vectors"]
    assert got["vectors"][0]["metadata"] == {"color": "red", "n": 1}
    got = c.query_vectors(returnMetadata=True, **QUERY, **env.kw)
    assert {v["key"]: v["metadata"]["n"] for v in got["vectors"]} == {"a": 1, "b": 2, "c": 3}
    assert c.get_vectors(keys=["b"], returnData=True, **env.kw)["vectors"][0]["data"]["float32"] == [0, 2, 0, 0]


def test_querier_cannot_do_anything_else(env):
    c = env["querier"]
    denied(c.get_vectors, keys=["a"], **env.kw)
    denied(c.list_vectors, **env.kw)
    denied(c.put_vectors, vectors=[vec("q-evil", [1, 1, 1, 1])], **env.kw)
    denied(c.delete_vectors, keys=["a"], **env.kw)
    denied(c.get_index, **env.kw)
    denied(c.list_vector_buckets)
    denied(c.delete_index, **env.kw)
    assert set(env.stored(["a", "q-evil"])) == {"a"}
    assert env.index_exists(env.bucket, env.index)


def test_list_vectors_with_data_or_metadata_needs_get_vectors(env):
    c = env["lister"]
    keys = sorted(v["key"] for v in c.list_vectors(**env.kw)["vectors"])
    assert keys == ["a", "b", "c"]
    for extra in ({"returnData": True}, {"returnMetadata": True}, {"returnData": True, "returnMetadata": True}):
        resp = denied(c.list_vectors, **extra, **env.kw)
        assert "s3vectors:GetVectors" in resp["Error"]["Message"], (extra, resp["Error"])
    # Segmented listing is no loophole.
    denied(c.list_vectors, segmentCount=2, segmentIndex=0, returnMetadata=True, **env.kw)
    # Explicit false flags need nothing extra.
    assert len(c.list_vectors(returnData=False, returnMetadata=False, **env.kw)["vectors"]) == 3
    # reader has GetVectors (s3vectors:Get*) as well: both work.
    got = env["reader"].list_vectors(returnData=True, returnMetadata=True, **env.kw)["vectors"]
    assert {v["key"]: v["metadata"]["n"] for v in got} == {"a": 1, "b": 2, "c": 3}
    assert all("data" in v for v in got)


def test_reader_reads_but_cannot_write_or_query(env):
    c = env["reader"]
    assert c.get_vector_bucket(vectorBucketName=env.bucket)["vectorBucket"]["vectorBucketName"] == env.bucket
    assert c.get_index(**env.kw)["index"]["dimension"] == 4
    assert env.bucket in [b["vectorBucketName"] for b in c.list_vector_buckets()["vectorBuckets"]]
    assert [i["indexName"] for i in c.list_indexes(vectorBucketName=env.bucket)["indexes"]] == ["idx"]
    assert set(env.stored(["a"])) == {"a"}
    denied(c.query_vectors, **QUERY, **env.kw)  # QueryVectors is neither Get* nor List*
    denied(c.put_vectors, vectors=[vec("r-evil", [1, 1, 1, 1])], **env.kw)
    denied(c.delete_vectors, keys=["b"], **env.kw)
    name = unique_name("reader")
    denied(c.create_vector_bucket, vectorBucketName=name)
    denied(c.delete_vector_bucket, vectorBucketName=env.bucket)
    denied(c.put_vector_bucket_policy, vectorBucketName=env.bucket,
           policy=_policy({"Effect": "Allow", "Principal": "*", "Action": "s3vectors:*", "Resource": "*"}))
    assert set(env.stored(["a", "b", "r-evil"])) == {"a", "b"}
    assert not env.bucket_exists(name)
    api_error(env.admin.get_vector_bucket_policy, "NotFoundException", vectorBucketName=env.bucket)


# -- NotAction / Deny in the identity policy -------------------------------------------------------------


@pytest.mark.parametrize("user", ["no-put", "no-put-deny"])
def test_user_without_put_vectors_cannot_write(env, user):
    c = env[user]
    before = env.stored(["a", "b", "c"])
    resp = denied(c.put_vectors, vectors=[vec("np-new", [5, 5, 5, 5]), vec("a", [9, 9, 9, 9], {"x": 1})], **env.kw)
    reason = "with an explicit deny" if user == "no-put-deny" else "because no policy allows it"
    assert reason in resp["Error"]["Message"], resp["Error"]
    # Also by ARN, and into a nonexistent index (403 there too, see the probing test).
    denied(c.put_vectors, vectors=[vec("np-new", [5, 5, 5, 5])], indexArn=index_arn(env.bucket, env.index))
    denied(c.put_vectors, vectors=[vec("np-new", [5, 5, 5, 5])], vectorBucketName=env.bucket, indexName="nope")
    after = env.stored(["a", "b", "c", "np-new"])
    assert after == before, f"rejected PutVectors changed data: {before} -> {after}"
    # Everything else is allowed.
    assert [v["key"] for v in c.query_vectors(**QUERY, **env.kw)["vectors"]] == ["a", "b", "c"]
    assert c.get_vectors(keys=["a"], returnMetadata=True, **env.kw)["vectors"][0]["metadata"]["n"] == 1
    assert c.get_index(**env.kw)["index"]["indexName"] == env.index


# -- tags on create need s3vectors:TagResource -----------------------------------------------------------


def test_create_with_tags_needs_tag_resource(env, buckets):
    c = env["no-tag"]
    name = unique_name("notag")
    resp = denied(c.create_vector_bucket, vectorBucketName=name, tags={"team": "x"})
    assert "s3vectors:TagResource" in resp["Error"]["Message"], resp["Error"]
    assert not env.bucket_exists(name), "a bucket was created by a denied CreateVectorBucket"
    assert name not in [b["vectorBucketName"] for b in env.admin.list_vector_buckets()["vectorBuckets"]]

    bucket = buckets(with_index=False)
    ix_kw = dict(vectorBucketName=bucket, indexName="tagged", dataType="float32", dimension=4,
                 distanceMetric="cosine")
    resp = denied(c.create_index, tags={"team": "x"}, **ix_kw)
    assert "s3vectors:TagResource" in resp["Error"]["Message"], resp["Error"]
    assert not env.index_exists(bucket, "tagged"), "an index was created by a denied CreateIndex"
    assert env.admin.list_indexes(vectorBucketName=bucket)["indexes"] == []

    # Without tags the same user may create both; tagging afterwards is denied as well.
    c.create_index(**ix_kw)
    assert env.index_exists(bucket, "tagged")
    denied(c.tag_resource, resourceArn=index_arn(bucket, "tagged"), tags={"team": "x"})
    assert env.admin.list_tags_for_resource(resourceArn=index_arn(bucket, "tagged"))["tags"] == {}
    try:
        c.create_vector_bucket(vectorBucketName=name)
        assert env.bucket_exists(name)
    finally:
        cleanup_bucket(env.admin, name)
    # The admin (s3vectors:*) may create with tags.
    tagged = unique_name("tagged")
    try:
        env.admin.create_vector_bucket(vectorBucketName=tagged, tags={"team": "x"})
        assert env.admin.list_tags_for_resource(resourceArn=bucket_arn(tagged))["tags"] == {"team": "x"}
    finally:
        cleanup_bucket(env.admin, tagged)


# -- no probing: unauthorized + nonexistent = 403 --------------------------------------------------------


def _probe_calls(env):
    missing_b = unique_name("missing")
    existing = env.bucket
    ghost_ix = {"vectorBucketName": missing_b, "indexName": "idx"}
    ghost_ix_in_existing = {"vectorBucketName": existing, "indexName": "no-such-index"}
    q, r, lister = env["querier"], env["reader"], env["lister"]
    return [
        ("GetVectorBucket", lister.get_vector_bucket, {"vectorBucketName": missing_b}),
        ("GetVectorBucket/arn", lister.get_vector_bucket, {"vectorBucketArn": bucket_arn(missing_b)}),
        ("DeleteVectorBucket", r.delete_vector_bucket, {"vectorBucketName": missing_b}),
        ("ListIndexes", q.list_indexes, {"vectorBucketName": missing_b}),
        ("GetVectorBucketPolicy", q.get_vector_bucket_policy, {"vectorBucketName": missing_b}),
        ("DeleteVectorBucketPolicy", r.delete_vector_bucket_policy, {"vectorBucketName": missing_b}),
        ("GetIndex", q.get_index, ghost_ix),
        ("GetIndex/existing-bucket", q.get_index, ghost_ix_in_existing),
        ("DeleteIndex/arn", r.delete_index, {"indexArn": index_arn(missing_b, "idx")}),
        ("CreateIndex", r.create_index, dict(ghost_ix, dataType="float32", dimension=4, distanceMetric="cosine")),
        ("QueryVectors", r.query_vectors, dict(QUERY, **ghost_ix)),
        ("QueryVectors/existing-bucket", lister.query_vectors, dict(QUERY, **ghost_ix_in_existing)),
        ("QueryVectors+filter", q.query_vectors, dict(QUERY, filter={"a": 1}, **ghost_ix)),
        ("GetVectors", q.get_vectors, dict(keys=["a"], **ghost_ix)),
        ("PutVectors", r.put_vectors, dict(vectors=[vec("k", [1, 2, 3, 4])], **ghost_ix)),
        ("DeleteVectors", q.delete_vectors, dict(keys=["a"], **ghost_ix_in_existing)),
        ("ListVectors+data", lister.list_vectors, dict(returnData=True, **ghost_ix)),
        ("ListTagsForResource", q.list_tags_for_resource, {"resourceArn": bucket_arn(missing_b)}),
        ("TagResource", r.tag_resource, {"resourceArn": index_arn(missing_b, "idx"), "tags": {"a": "b"}}),
        ("UntagResource", r.untag_resource, {"resourceArn": index_arn(existing, "nope"), "tagKeys": ["a"]}),
        # A well-formed ARN of another account: cannot exist here, still not the caller's business.
        ("GetIndex/foreign", q.get_index, {"indexArn": "arn:aws:s3vectors:us-east-1:210987654321:bucket/bbb/index/iii"}),
        ("GetVectorBucket/foreign", lister.get_vector_bucket,
         {"vectorBucketArn": "arn:aws:s3vectors:eu-west-1:123456789012:bucket/bbb"}),
    ]


def test_unauthorized_access_to_missing_resources_is_403_not_404(env):
    failures = []
    for what, call, kwargs in _probe_calls(env):
        try:
            call(**kwargs)
        except ClientError as e:
            code = e.response["Error"]["Code"]
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            if (code, status) != (DENIED, 403):
                failures.append(f"{what}: {code} HTTP {status}: {e.response['Error'].get('Message')}")
        else:
            failures.append(f"{what}: succeeded")
    assert not failures, "unauthorized requests for missing resources must be 403:\n" + "\n".join(failures)
    # Not even the message tells an existing bucket/index from a missing one.
    missing = unique_name("missing")
    for call, existing_kw, missing_kw in [
        (env["lister"].get_vector_bucket, {"vectorBucketName": env.bucket}, {"vectorBucketName": missing}),
        (env["reader"].query_vectors, dict(QUERY, **env.kw), dict(QUERY, vectorBucketName=missing, indexName="idx")),
    ]:
        there = denied(call, **existing_kw)["Error"]["Message"]
        absent = denied(call, **missing_kw)["Error"]["Message"]
        assert there.replace(env.bucket, "<b>") == absent.replace(missing, "<b>"), (there, absent)
    # Control: the admin is told the truth.
    missing = unique_name("missing")
    api_error(env.admin.get_vector_bucket, "NotFoundException", vectorBucketName=missing,
              message="The specified vector bucket could not be found")
    api_error(env.admin.get_index, "NotFoundException", vectorBucketName=missing, indexName="idx",
              message="The specified index could not be found")
    api_error(env.admin.query_vectors, "NotFoundException", **QUERY, vectorBucketName=missing, indexName="idx")
    # ...and so is a user who is allowed the action (querier may QueryVectors anywhere).
    api_error(env["querier"].query_vectors, "NotFoundException", **QUERY, vectorBucketName=missing, indexName="idx")


def test_create_index_in_foreign_bucket_arn_is_403_for_unauthorized(env):
    denied(env["reader"].create_index, vectorBucketArn="arn:aws:s3vectors:us-east-1:210987654321:bucket/bbb",
           indexName="idx", dataType="float32", dimension=4, distanceMetric="cosine")


# -- bucket policies ------------------------------------------------------------------------------------


def deny_query_policy(bucket: str, user: str = "bucket-denied") -> str:
    return _policy({
        "Sid": "NoQuery",
        "Effect": "Deny",
        "Principal": {"AWS": user_arn(user)},
        "Action": "s3vectors:QueryVectors",
        "Resource": f"arn:aws:s3vectors:{REGION}:{ACCOUNT_ID}:bucket/{bucket}/*",
    })


def test_bucket_policy_crud_and_errors(env, buckets):
    bucket = buckets(with_index=False)
    api_error(env.admin.get_vector_bucket_policy, "NotFoundException", vectorBucketName=bucket,
              message="The specified vector bucket policy could not be found")
    policy = deny_query_policy(bucket)
    env.admin.put_vector_bucket_policy(vectorBucketName=bucket, policy=policy)
    assert json.loads(env.admin.get_vector_bucket_policy(vectorBucketName=bucket)["policy"]) == json.loads(policy)
    got = env.admin.get_vector_bucket_policy(vectorBucketArn=bucket_arn(bucket))["policy"]
    assert json.loads(got) == json.loads(policy)

    bad = [
        "{not json",
        "[]",
        json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3vectors:*", "Resource": "*"}]}),  # no Principal
        json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]}),
        json.dumps({"Statement": [{"Effect": "Perhaps", "Principal": "*", "Action": "s3vectors:*", "Resource": "*"}]}),
    ]
    for text in bad:
        api_error(env.admin.put_vector_bucket_policy, "ValidationException", vectorBucketName=bucket, policy=text)
    # A rejected policy does not replace the stored one.
    assert json.loads(env.admin.get_vector_bucket_policy(vectorBucketName=bucket)["policy"]) == json.loads(policy)

    env.admin.delete_vector_bucket_policy(vectorBucketName=bucket)
    api_error(env.admin.get_vector_bucket_policy, "NotFoundException", vectorBucketName=bucket,
              message="The specified vector bucket policy could not be found")
    # Unknown bucket: the bucket (not the policy) is reported missing.
    api_error(env.admin.get_vector_bucket_policy, "NotFoundException", vectorBucketName=unique_name("nobucket"),
              message="The specified vector bucket could not be found")


def test_bucket_policy_deny_overrides_identity_allow(env, buckets):
    bucket = buckets()
    kw = {"vectorBucketName": bucket, "indexName": "idx"}
    c = env["bucket-denied"]
    assert [v["key"] for v in c.query_vectors(**QUERY, **kw)["vectors"]] == ["a", "b", "c"]

    env.admin.put_vector_bucket_policy(vectorBucketName=bucket, policy=deny_query_policy(bucket))
    resp = denied(c.query_vectors, **QUERY, **kw)
    assert "explicit deny" in resp["Error"]["Message"], resp["Error"]
    denied(c.query_vectors, **QUERY, indexArn=index_arn(bucket, "idx"))
    # Only QueryVectors, only this principal, only this bucket.
    assert set(v["key"] for v in c.get_vectors(keys=["a", "b"], **kw)["vectors"]) == {"a", "b"}
    assert [v["key"] for v in env.admin.query_vectors(**QUERY, **kw)["vectors"]] == ["a", "b", "c"]
    assert [v["key"] for v in env["querier"].query_vectors(**QUERY, **kw)["vectors"]] == ["a", "b", "c"]
    assert [v["key"] for v in c.query_vectors(**QUERY, **env.kw)["vectors"]] == ["a", "b", "c"]

    env.admin.delete_vector_bucket_policy(vectorBucketName=bucket)
    assert [v["key"] for v in c.query_vectors(**QUERY, **kw)["vectors"]] == ["a", "b", "c"]


def test_bucket_policy_deny_for_everyone_and_account(env, buckets):
    bucket = buckets()
    kw = {"vectorBucketName": bucket, "indexName": "idx"}
    for principal in ("*", {"AWS": ACCOUNT_ID}, {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}):
        env.admin.put_vector_bucket_policy(vectorBucketName=bucket, policy=_policy({
            "Effect": "Deny", "Principal": principal, "Action": "s3vectors:PutVectors", "Resource": "*"}))
        for user in ("admin", "bucket-denied"):
            denied(env[user].put_vectors, vectors=[vec("pp", [1, 1, 1, 1])], **kw)
        assert env.stored(["pp"], **kw) == {}
        env.admin.delete_vector_bucket_policy(vectorBucketName=bucket)


def test_bucket_policy_allow_grants_what_identity_lacks(env, buckets):
    bucket = buckets()
    other = buckets()
    kw = {"vectorBucketName": bucket, "indexName": "idx"}
    g = env["guest"]
    denied(g.get_vectors, keys=["a"], **kw)
    env.admin.put_vector_bucket_policy(vectorBucketName=bucket, policy=_policy({
        "Effect": "Allow",
        "Principal": {"AWS": [user_arn("guest")]},
        "Action": ["s3vectors:GetVectors", "s3vectors:QueryVectors", "s3vectors:GetIndex"],
        "Resource": f"arn:aws:s3vectors:{REGION}:{ACCOUNT_ID}:bucket/{bucket}/*",
    }))
    got = g.get_vectors(keys=["a", "c"], returnMetadata=True, **kw)["vectors"]
    assert {v["key"]: v["metadata"]["n"] for v in got} == {"a": 1, "c": 3}
    got = g.query_vectors(filter={"color": "red"}, returnMetadata=True, **QUERY, **kw)["vectors"]
    assert [v["key"] for v in got] == ["a", "c"]
    assert g.get_index(indexArn=index_arn(bucket, "idx"))["index"]["indexName"] == "idx"
    # Not more than granted: other actions, the bucket resource itself, other buckets, other users.
    denied(g.put_vectors, vectors=[vec("g-evil", [1, 1, 1, 1])], **kw)
    denied(g.list_vectors, **kw)
    denied(g.get_vector_bucket, vectorBucketName=bucket)  # bucket ARN does not match bucket/<b>/*
    denied(g.get_vectors, keys=["a"], vectorBucketName=other, indexName="idx")
    denied(env["querier"].get_vectors, keys=["a"], **kw)
    assert env.stored(["g-evil"], **kw) == {}
    # Withdrawn with the policy.
    env.admin.delete_vector_bucket_policy(vectorBucketName=bucket)
    denied(g.get_vectors, keys=["a"], **kw)


def test_bucket_policy_does_not_survive_bucket_deletion(env):
    name = unique_name("reborn")
    try:
        env.admin.create_vector_bucket(vectorBucketName=name)
        env.admin.put_vector_bucket_policy(vectorBucketName=name, policy=_policy({
            "Effect": "Allow", "Principal": {"AWS": user_arn("guest")}, "Action": "s3vectors:*", "Resource": "*"}))
        assert env["guest"].get_vector_bucket(vectorBucketName=name)["vectorBucket"]["vectorBucketName"] == name
        env.admin.delete_vector_bucket(vectorBucketName=name)
        env.admin.create_vector_bucket(vectorBucketName=name)
        api_error(env.admin.get_vector_bucket_policy, "NotFoundException", vectorBucketName=name,
                  message="The specified vector bucket policy could not be found")
        denied(env["guest"].get_vector_bucket, vectorBucketName=name)
    finally:
        cleanup_bucket(env.admin, name)


def test_bucket_policy_allow_to_account_only_delegates(env, buckets):
    bucket = buckets()
    kw = {"vectorBucketName": bucket, "indexName": "idx"}
    env.admin.put_vector_bucket_policy(vectorBucketName=bucket, policy=_policy({
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
        "Action": "s3vectors:*", "Resource": "*"}))
    denied(env["guest"].put_vectors, vectors=[vec("acct", [1, 1, 1, 1])], **kw)


# -- signature verification with raw HTTP ---------------------------------------------------------------


def botocore_signed(env, path, body: bytes, *, user="admin", key=None, secret=None, region=REGION,
                    method="POST", content_type="application/json") -> dict:
    """Headers of a request signed by botocore's SigV4Auth, as they would be sent."""
    req = AWSRequest(method=method, url=env.endpoint + path, data=body, headers={"Content-Type": content_type})
    creds = Credentials(key or access_key(user), secret or secret_key(user))
    SigV4Auth(creds, SERVICE, region).add_auth(req)
    return dict(req.headers.items())


def sigv4_headers(env, path, body: bytes, *, when: dt.datetime, user="admin", region=REGION,
                  service=SERVICE, method="POST") -> dict:
    """An independent SigV4 signer (hmac/hashlib) so the request time can be chosen freely."""
    amz_date = when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {"content-type": "application/json", "host": env.host, "x-amz-date": amz_date}
    names = sorted(headers)
    canonical = "\n".join([
        method,
        quote(path, safe="/~"),
        "",
        "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names),
        ";".join(names),
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])

    def h(k: bytes, msg: str) -> bytes:
        return hmac.new(k, msg.encode(), hashlib.sha256).digest()

    k = h(("AWS4" + secret_key(user)).encode(), day)
    for part in (region, service, "aws4_request"):
        k = h(k, part)
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Amz-Date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key(user)}/{scope}, "
                         f"SignedHeaders={';'.join(names)}, Signature={signature}",
    }


def send(env, path, body: bytes, headers: dict, method="POST") -> requests.Response:
    return requests.request(method, env.endpoint + path, data=body, headers=headers, timeout=30)


def assert_rejected(r: requests.Response, what: str, error_type: str | None = None,
                    contains: str | None = None) -> None:
    desc = f"{what}: HTTP {r.status_code} {dict(r.headers)} {r.text[:300]!r}"
    assert r.status_code == 403, desc
    got_type = r.headers.get("x-amzn-ErrorType")
    assert got_type, f"no x-amzn-ErrorType header; {desc}"
    assert r.headers.get("x-amzn-RequestId"), f"no x-amzn-RequestId; {desc}"
    try:
        payload = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON; {desc}") from None
    assert isinstance(payload.get("message"), str) and payload["message"], f"no message; {desc}"
    if error_type is not None:
        assert got_type.split(":")[0] == error_type, f"expected {error_type}; {desc}"
    if contains is not None:
        assert contains in payload["message"], f"expected message containing {contains!r}; {desc}"
    # Nothing in the answer gives away the expected signature or a secret.
    for name in USERS:
        assert secret_key(name) not in r.text


def put_body(env, key: str, **index_kw) -> bytes:
    index_kw = index_kw or env.kw
    return json.dumps({**index_kw, "vectors": [vec(key, [7, 7, 7, 7], {"evil": True})]}).encode()


def test_signed_request_baseline(env):
    """Both signers produce requests the server accepts (so the rejections below mean something)."""
    body = json.dumps({"vectorBucketName": env.bucket}).encode()
    r = send(env, "/GetVectorBucket", body, botocore_signed(env, "/GetVectorBucket", body))
    assert r.status_code == 200, r.text
    now = dt.datetime.now(dt.timezone.utc)
    r = send(env, "/GetVectorBucket", body, sigv4_headers(env, "/GetVectorBucket", body, when=now))
    assert r.status_code == 200, r.text
    r = send(env, "/GetVectorBucket", body, sigv4_headers(env, "/GetVectorBucket", body, when=now, user="reader"))
    assert r.status_code == 200, r.text


def test_tampered_body(env):
    signed = put_body(env, "tb-signed")
    headers = botocore_signed(env, "/PutVectors", signed)
    r = send(env, "/PutVectors", put_body(env, "tb-sent"), headers)
    assert_rejected(r, "body changed after signing", "InvalidSignatureException")
    # Same length, one byte different.
    tampered = signed.replace(b"tb-signed", b"tb-signee")
    assert len(tampered) == len(signed)
    assert_rejected(send(env, "/PutVectors", tampered, headers), "one byte changed", "InvalidSignatureException")
    # A claimed payload hash that is not the body's is no way around it.
    assert_rejected(send(env, "/PutVectors", put_body(env, "tb-sent"),
                         {**headers, "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"}),
                    "UNSIGNED-PAYLOAD", "InvalidSignatureException")
    assert_rejected(send(env, "/PutVectors", put_body(env, "tb-sent"),
                         {**headers, "X-Amz-Content-Sha256": hashlib.sha256(put_body(env, "tb-sent")).hexdigest()}),
                    "x-amz-content-sha256 of the new body", "InvalidSignatureException")
    assert env.stored(["tb-signed", "tb-signee", "tb-sent"]) == {}


def test_tampered_signed_header(env):
    name = unique_name("ct")
    body = json.dumps({"vectorBucketName": name}).encode()
    headers = botocore_signed(env, "/CreateVectorBucket", body)
    assert "content-type" in headers["Authorization"].split("SignedHeaders=")[1]
    for ct in ("text/plain", "application/json; charset=utf-8", "application/jsonx"):
        r = send(env, "/CreateVectorBucket", body, {**headers, "Content-Type": ct})
        assert_rejected(r, f"content-type changed to {ct}", "InvalidSignatureException")
    # Host is signed too.
    r = requests.post(env.endpoint + "/CreateVectorBucket", data=body,
                      headers={**headers, "Host": "localhost:" + env.host.split(":")[1]}, timeout=30)
    assert_rejected(r, "host changed", "InvalidSignatureException")
    assert not env.bucket_exists(name)


def test_tampered_path(env, buckets):
    victim = buckets(with_index=False)
    body = json.dumps({"vectorBucketName": victim}).encode()
    headers = botocore_signed(env, "/GetVectorBucket", body, user="admin")
    r = send(env, "/DeleteVectorBucket", body, headers)
    assert_rejected(r, "path changed to /DeleteVectorBucket", "InvalidSignatureException")
    r = send(env, "/DeleteVectorBucket?x=1", body, botocore_signed(env, "/DeleteVectorBucket", body))
    assert_rejected(r, "query string added", "InvalidSignatureException")
    assert env.bucket_exists(victim)
    # Tag path: the ARN is one percent-encoded segment; pointing it at another resource fails.
    signed_path = "/tags/" + quote(bucket_arn(env.bucket), safe="")
    r = send(env, signed_path, b"", botocore_signed(env, signed_path, b"", method="GET"), method="GET")
    assert r.status_code == 200 and "tags" in r.json(), f"control: {r.status_code} {r.text}"
    tag_body = json.dumps({"tags": {"owned": "yes"}}).encode()
    headers = botocore_signed(env, signed_path, tag_body)
    r = send(env, "/tags/" + quote(bucket_arn(victim), safe=""), tag_body, headers)
    assert_rejected(r, "tag path changed", "InvalidSignatureException")
    assert env.admin.list_tags_for_resource(resourceArn=bucket_arn(victim))["tags"] == {}


def test_tampered_date(env):
    body = put_body(env, "td")
    headers = botocore_signed(env, "/PutVectors", body)
    signed = dt.datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    for delta in (1, -1, 60):
        changed = (signed + dt.timedelta(seconds=delta)).strftime("%Y%m%dT%H%M%SZ")
        r = send(env, "/PutVectors", body, {**headers, "X-Amz-Date": changed})
        assert_rejected(r, f"x-amz-date shifted by {delta}s", "InvalidSignatureException")
    for bad in ("garbage", signed.strftime("%Y-%m-%dT%H:%M:%SZ")):
        assert_rejected(send(env, "/PutVectors", body, {**headers, "X-Amz-Date": bad}), f"x-amz-date {bad!r}")
    no_date = {k: v for k, v in headers.items() if k.lower() != "x-amz-date"}
    assert_rejected(send(env, "/PutVectors", body, no_date), "no x-amz-date")
    assert env.stored(["td"]) == {}


def test_unknown_access_key_and_wrong_secret(env):
    body = put_body(env, "creds")
    r = send(env, "/PutVectors", body, botocore_signed(env, "/PutVectors", body, key="AKIANOBODY", secret="whatever-secret"))
    assert_rejected(r, "unknown access key", "UnrecognizedClientException")
    r = send(env, "/PutVectors", body,
             botocore_signed(env, "/PutVectors", body, key=access_key("admin"), secret=secret_key("reader")))
    assert_rejected(r, "wrong secret", "InvalidSignatureException")
    # A valid key with another user's signature: still the wrong secret.
    r = send(env, "/PutVectors", body,
             botocore_signed(env, "/PutVectors", body, key=access_key("admin"), secret=secret_key("admin") + "x"))
    assert_rejected(r, "secret with an extra character", "InvalidSignatureException")
    # And through boto3.
    for c, code in ((env.client(key="AKIANOBODY", secret="whatever-secret"), "UnrecognizedClientException"),
                    (env.client(key=access_key("admin"), secret="not-the-secret"), "InvalidSignatureException")):
        api_error(c.put_vectors, code, status=403, vectors=[vec("creds", [1, 1, 1, 1])], **env.kw)
    assert env.stored(["creds"]) == {}


def test_missing_and_malformed_authorization(env):
    body = json.dumps({"keys": ["a"], **env.kw}).encode()
    headers = botocore_signed(env, "/DeleteVectors", body)
    auth = headers["Authorization"]
    no_auth = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    assert_rejected(send(env, "/DeleteVectors", body, no_auth), "missing Authorization",
                    "MissingAuthenticationTokenException")
    assert_rejected(send(env, "/DeleteVectors", body, {"Content-Type": "application/json"}), "unsigned request",
                    "MissingAuthenticationTokenException")
    cred = auth.split("Credential=")[1].split(",")[0]
    sig = auth.split("Signature=")[1]
    malformed = {
        "empty": "",
        "algorithm only": "AWS4-HMAC-SHA256",
        "other algorithm": auth.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", 1),
        "basic": "Basic YWRtaW46c2VjcmV0",
        "no signature": auth.split(", Signature=")[0],
        "no signed headers": f"AWS4-HMAC-SHA256 Credential={cred}, Signature={sig}",
        "short signature": auth[:-2],
        "non-hex signature": auth[:-1] + "g",
        "credential scope too short": auth.replace(cred, "/".join(cred.split("/")[:3])),
        "bad terminator": auth.replace("aws4_request", "aws4_reqest"),
        "uppercase signed header": auth.replace("SignedHeaders=content-type", "SignedHeaders=Content-Type"),
        "host unsigned": auth.replace("content-type;host;x-amz-date", "content-type;x-amz-date"),
        "unknown component": auth + ", Extra=1",
        "wrong service": auth.replace(f"/{SERVICE}/", "/s3/"),
        "credential date mismatch": auth.replace(cred.split("/")[1], "20200101"),
    }
    for what, value in malformed.items():
        r = send(env, "/DeleteVectors", body, {**headers, "Authorization": value})
        assert_rejected(r, f"malformed Authorization ({what})")
    assert set(env.stored(["a"])) == {"a"}, "a rejected DeleteVectors deleted a vector"


def test_replay_outside_clock_skew_window(env):
    now = dt.datetime.now(dt.timezone.utc)
    body = put_body(env, "replay")
    for minutes in (-20, -10, 20, 10):
        headers = sigv4_headers(env, "/PutVectors", body, when=now + dt.timedelta(minutes=minutes))
        r = send(env, "/PutVectors", body, headers)
        contains = "Signature expired" if minutes < 0 else "Signature not yet current"
        assert_rejected(r, f"signed {minutes:+} min from now (skew {CLOCK_SKEW_S}s)",
                        "InvalidSignatureException", contains=contains)
    assert env.stored(["replay"]) == {}
    # Inside the window (2 minutes off) the same request is accepted.
    read = json.dumps({"vectorBucketName": env.bucket}).encode()
    for minutes in (-2, 2):
        r = send(env, "/GetVectorBucket", read,
                 sigv4_headers(env, "/GetVectorBucket", read, when=now + dt.timedelta(minutes=minutes)))
        assert r.status_code == 200, f"{minutes:+} min: {r.status_code} {r.text}"


def test_wrong_region_and_service_scope(env):
    body = put_body(env, "region")
    now = dt.datetime.now(dt.timezone.utc)
    r = send(env, "/PutVectors", body, sigv4_headers(env, "/PutVectors", body, when=now, region="us-west-2"))
    assert_rejected(r, "signed for us-west-2", "InvalidSignatureException", contains="us-west-2")
    r = send(env, "/PutVectors", body, botocore_signed(env, "/PutVectors", body, region="us-west-2"))
    assert_rejected(r, "botocore-signed for us-west-2", "InvalidSignatureException")
    r = send(env, "/PutVectors", body, sigv4_headers(env, "/PutVectors", body, when=now, service="s3"))
    assert_rejected(r, "signed for service s3", "InvalidSignatureException")
    west = env.client("admin", region="us-west-2")
    api_error(west.put_vectors, "InvalidSignatureException", status=403, vectors=[vec("region", [1, 1, 1, 1])],
              **env.kw)
    assert env.stored(["region"]) == {}


# -- startup refusals --------------------------------------------------------------------------------------


def _run_to_exit(args: list[str], tmp_path: Path, timeout: float = 10.0) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "QUIVER_AUTH_CONFIG"}
    env["NO_COLOR"] = "1"
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([quiver_bin(), "dev", *args], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            pytest.fail(f"quiver dev {' '.join(args)} still running after {timeout}s:\n{log.read_text()}")
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]"])
def test_dev_credentials_refused_on_public_address(tmp_path, host):
    port = free_port()
    code, out = _run_to_exit(["--listen", f"{host}:{port}", "--data-dir", str(tmp_path / "data")], tmp_path)
    assert code != 0, f"server exited 0:\n{out}"
    assert "--auth-config" in out, out


def test_bad_auth_config_refused(tmp_path):
    port = free_port()
    common = ["--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")]
    code, out = _run_to_exit([*common, "--auth-config", str(tmp_path / "missing.toml")], tmp_path)
    assert code != 0 and "auth config" in out, out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[users]]\nname = "x"\naccess_key_id = "AKIAX"\nsecret_access_key = "long-enough-secret"\n'
        'policy = \'{"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}\'\n'
    )
    code, out = _run_to_exit([*common, "--auth-config", str(bad)], tmp_path)
    assert code != 0 and "invalid policy" in out, out
