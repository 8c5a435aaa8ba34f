"""Wire conformance, driven by the botocore service model of s3vectors.

Every operation in `service_model.operation_names` must have a case here; a model operation
without one fails `test_valid_request`, so a new operation cannot be skipped silently.

* `test_valid_request[Op-variant]`: a valid request (by name and, where the operation addresses a
  bucket or index, by ARN) goes through boto3 WITH client-side parameter validation and succeeds;
  the parsed response validates against the operation's output shape (`apiutil.shape_errors`:
  required members, types, enums, lengths, patterns, ranges, parsed timestamps), and the raw
  body validates against it as well (epoch-second timestamps, no nulls, no unknown members).
  UpdateMetadataConfiguration and `queryTexts` are not implemented by Quiver and must answer
  ValidationException 400.
* `test_invalid_request[Op-member-constraint]`: requests generated from the model's constraints
  (missing required members, string lengths below min / above max, integers below min / above
  max, list sizes, bad and wrongly-cased enum values, pattern violations, empty unions, wrong JSON
  types, and the both/neither addressing forms of reference §1.1) are sent with a client whose
  parameter validation is off and must get ValidationException / HTTP 400.
  Documented exception: an ARN whose only violation is an upper-case region
  (`arn:aws:s3vectors:US-EAST-1:...`, `*-pattern-bad-region`) is read by Quiver as a well-formed
  ARN of another region, i.e. a resource that cannot exist here, so NotFoundException 404 is
  accepted for those cases too. Each error must name the member under test, in its message or
  its `fieldList`, or carry the exact message expected (addressing forms), so a request refused
  for some other reason fails. Quiver refuses every `queryTexts`, every
  `textSearchConfigurations` and every UpdateMetadataConfiguration as "not supported yet": the
  valid cases for them are strict xfails and an invalid case refused for that reason is an
  xfail, so they show as known gaps, never as passes, until full-text search exists.
* Every boto3 response above is also checked raw (an `after-call` hook): `x-amzn-RequestId` on
  every response; `x-amzn-ErrorType` naming the error and a JSON body with `message` on errors.
* A required URI label (`resourceArn` of the tag operations) cannot be left out through botocore
  (it raises KeyError), so `*-resourceArn-missing` sends the request raw with an empty label
  (`GET /tags/`) and accepts ValidationException 400 or the restJson1 routing error
  UnknownOperationException 404 -- either way an AWS-shaped error.
* `test_raw_wire[Op]`: the same valid request and one invalid request per operation, serialized
  by botocore's rest-json serializer and sent with `requests` (SigV4 via apiutil), plus typed
  errors (NotFound, Conflict), requests that match no operation (unknown operation, wrong method,
  unencoded ARN path) and an unsigned request, all checked on the wire.
* ServiceQuotaExceededException -> HTTP 402 is not provoked here (10,000 buckets); skipped.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from botocore import xform_name
from botocore.exceptions import ClientError

from apiutil import (
    ACCOUNT_ID,
    REGION,
    bucket_arn,
    cleanup_bucket,
    index_arn,
    pattern_matches,
    serialize_request,
    service_model,
    shape_errors,
    unique_name,
)

MODEL = service_model()

BUCKET_ADDRESSING = "Must specify either vectorBucketName or vectorBucketArn but not both"
INDEX_ADDRESSING = "Must specify either indexArn or both vectorBucketName and indexName"

STATUS = {
    "ValidationException": 400,
    "SerializationException": 400,
    "NotFoundException": 404,
    "ConflictException": 409,
}


class P:
    """A placeholder in a request template, resolved per test (see `Resolver`)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"

    def __deepcopy__(self, memo):
        return self


DELETE = object()  # a mutation that removes a member

DIM = 4
MAIN_INDEX = "ix-main"
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Conformance",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3vectors:GetVectorBucket",
                "Resource": "*",
            }
        ],
    }
)
KMS_KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/11111111-2222-3333-4444-555555555555"
BY_NAME_INDEX = {"vectorBucketName": P("bucket"), "indexName": P("index")}

# One valid request per operation (name-addressed; the ARN-addressed variant is derived).
# Placeholders: bucket/index = the module's bucket and index (with vectors and a policy);
# new_bucket/new_index = unused names; fresh_bucket/fresh_index = created for this test only.
TEMPLATES: dict[str, dict] = {
    "CreateVectorBucket": {
        "vectorBucketName": P("new_bucket"),
        "encryptionConfiguration": {"sseType": "aws:kms", "kmsKeyArn": KMS_KEY_ARN},
        "tags": {"team": "conformance"},
    },
    "GetVectorBucket": {"vectorBucketName": P("bucket")},
    "ListVectorBuckets": {"maxResults": 5, "prefix": P("bucket")},
    "DeleteVectorBucket": {"vectorBucketName": P("fresh_bucket")},
    "PutVectorBucketPolicy": {"vectorBucketName": P("bucket"), "policy": POLICY},
    "GetVectorBucketPolicy": {"vectorBucketName": P("bucket")},
    "DeleteVectorBucketPolicy": {"vectorBucketName": P("fresh_bucket")},
    "PutVectorBucketDefaultIndexMode": {"vectorBucketName": P("bucket"), "defaultIndexMode": "ENHANCED"},
    "CreateIndex": {
        "vectorBucketName": P("bucket"),
        "indexName": P("new_index"),
        "dataType": "float32",
        "dimension": DIM,
        "distanceMetric": "cosine",
        "metadataConfiguration": {"nonFilterableMetadataKeys": ["note"]},
        "encryptionConfiguration": {"sseType": "AES256"},
        "tags": {"team": "conformance"},
    },
    "GetIndex": dict(BY_NAME_INDEX),
    "ListIndexes": {"vectorBucketName": P("bucket"), "maxResults": 5, "prefix": "ix"},
    "DeleteIndex": {"vectorBucketName": P("bucket"), "indexName": P("fresh_index")},
    "UpdateIndexMode": {**BY_NAME_INDEX, "indexMode": "ENHANCED"},
    "UpdateMetadataConfiguration": {
        **BY_NAME_INDEX,
        "add": {"textSearchConfigurations": [{"metadataKey": "note", "language": "en"}]},
    },
    "PutVectors": {
        **BY_NAME_INDEX,
        "vectors": [
            {"key": "put-1", "data": {"float32": [0.5, 0.25, 0.125, 1.0]}, "metadata": {"genre": "drama", "note": "x"}}
        ],
    },
    "GetVectors": {**BY_NAME_INDEX, "keys": ["k1", "k2"], "returnData": True, "returnMetadata": True},
    "ListVectors": {
        **BY_NAME_INDEX,
        "maxResults": 2,
        "segmentCount": 1,
        "segmentIndex": 0,
        "returnData": True,
        "returnMetadata": True,
    },
    "DeleteVectors": {**BY_NAME_INDEX, "keys": ["no-such-key"]},
    "QueryVectors": {
        **BY_NAME_INDEX,
        "topK": 3,
        "queryVector": {"float32": [1.0, 0.5, 0.25, 0.125]},
        "filter": {"genre": "drama"},
        "queryMode": "ENHANCED",
        "returnMetadata": True,
        "returnDistance": True,
    },
    "TagResource": {"resourceArn": P("bucket_arn"), "tags": {"env": "conformance"}},
    "UntagResource": {"resourceArn": P("bucket_arn"), "tagKeys": ["env"]},
    "ListTagsForResource": {"resourceArn": P("bucket_arn")},
}

# Operations Quiver deliberately does not implement yet: a valid request is a ValidationException.
NOT_SUPPORTED = {"UpdateMetadataConfiguration"}

# Operations whose invalid requests would destroy something if wrongly accepted use fresh_*
# resources; their valid requests need some state first.
def _setup_delete_policy(client, resolver, req):
    client.put_vector_bucket_policy(vectorBucketName=resolver.value("fresh_bucket"), policy=POLICY)


def _setup_untag(client, resolver, req):
    client.tag_resource(resourceArn=req["resourceArn"], tags={"env": "x", "keep": "y"})


SETUP = {"DeleteVectorBucketPolicy": _setup_delete_policy, "UntagResource": _setup_untag}


def addressing(op: str) -> str | None:
    members = MODEL.operation_model(op).input_shape.members
    if "indexArn" in members:
        return "index"
    if "vectorBucketArn" in members:
        return "bucket"
    return None


def arn_form(op: str, template: dict) -> dict:
    """The same request addressed by ARN instead of by name."""
    t = dict(template)
    if addressing(op) == "index":
        t.pop("vectorBucketName")
        t["indexArn"] = P(t.pop("indexName").name + "_arn")
    else:
        t["vectorBucketArn"] = P(t.pop("vectorBucketName").name + "_arn")
    return t


class ValidCase:
    def __init__(self, op, variant, template):
        self.op = op
        self.id = f"{op}-{variant}"
        self.template = template


def not_implemented(op: str, variant: str) -> str | None:
    """Why a valid request of `op` is refused today, or None: such cases are strict xfails (a
    known gap, not a pass; strict, so implementing the feature forces removing the mark)."""
    if op in NOT_SUPPORTED:
        return f"{op} is not implemented"
    if "queryTexts" in variant:
        return "full-text search (queryTexts) is not implemented"
    return None


def valid_cases() -> list[ValidCase]:
    cases = []
    for op in MODEL.operation_names:
        template = TEMPLATES.get(op)
        if template is None:
            cases.append(ValidCase(op, "NO-CASE", None))
            continue
        cases.append(ValidCase(op, "by-name" if addressing(op) else "request", template))
        if addressing(op):
            cases.append(ValidCase(op, "by-arn", arn_form(op, template)))
        if op in ("TagResource", "UntagResource", "ListTagsForResource"):
            cases.append(ValidCase(op, "index-arn", {**template, "resourceArn": P("index_arn")}))
    q = TEMPLATES["QueryVectors"]
    cases.append(ValidCase("QueryVectors", "queryTexts",
                           {**q, "queryTexts": [{"text": "hello", "metadataKey": "note"}]}))
    cases.append(ValidCase("QueryVectors", "queryTexts-only",
                           {**{k: v for k, v in q.items() if k != "queryVector"},
                            "queryTexts": [{"text": "hello", "metadataKey": "note"}]}))
    cases.append(ValidCase("CreateIndex", "minimal",
                           {"vectorBucketName": P("bucket"), "indexName": P("new_index"), "dataType": "float32",
                            "dimension": 1, "distanceMetric": "euclidean"}))
    cases.append(ValidCase("CreateVectorBucket", "minimal", {"vectorBucketName": P("new_bucket")}))
    cases.append(ValidCase("ListVectorBuckets", "empty", {}))
    return cases


# -- generating invalid requests from the model ------------------------------------------------


def synth(shape):
    """A small valid value for `shape` (used where the template does not set a member)."""
    t = shape.type_name
    meta = shape.metadata
    if meta.get("document"):
        return {}
    if t == "structure":
        if meta.get("union"):
            name, member = next(iter(shape.members.items()))
            return {name: synth(member)}
        return {name: synth(shape.members[name]) for name in shape.required_members}
    if t == "list":
        return [synth(shape.member) for _ in range(max(1, meta.get("min", 0)))]
    if t == "map":
        return {synth(shape.key): synth(shape.value)}
    if t == "string":
        if shape.enum:
            return shape.enum[0]
        if shape.name == "KmsKeyArn":
            return KMS_KEY_ARN
        return "a" * max(3, meta.get("min", 1))
    if t in ("integer", "long"):
        return meta.get("min", 1)
    if t == "boolean":
        return True
    if t in ("float", "double"):
        return 0.5
    raise NotImplementedError(f"synth({shape.name}: {t})")


def _arn_pattern_violations(shape) -> list[tuple[str, str]]:
    bucket = f"arn:aws:s3vectors:{REGION}:{ACCOUNT_ID}:bucket/conformance"
    variants = [
        ("garbage", "not-an-arn"),
        ("wrong-service", f"arn:aws:s3:{REGION}:{ACCOUNT_ID}:bucket/conformance"),
        ("bad-account", f"arn:aws:s3vectors:{REGION}:12345:bucket/conformance"),
        ("bad-bucket-name", f"arn:aws:s3vectors:{REGION}:{ACCOUNT_ID}:bucket/Bad_Name"),
        ("bad-region", f"arn:aws:s3vectors:US-EAST-1:{ACCOUNT_ID}:bucket/conformance"),
    ]
    if shape.name == "IndexArn":
        variants = [(label, v if label == "garbage" else v + "/index/ix-main") for label, v in variants]
        variants += [
            ("bucket-arn", bucket),
            ("bad-index-name", bucket + "/index/Bad_Index"),
        ]
    elif shape.name == "VectorBucketArn":
        variants.append(("index-arn", bucket + "/index/ix-main"))
    elif shape.name == "KmsKeyArn":
        variants = [
            ("garbage", "not-an-arn"),
            ("alias", f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:alias/conformance"),
            ("bad-account", f"arn:aws:kms:{REGION}:12345:key/conformance"),
        ]
    return variants


def pattern_violations(shape) -> list[tuple[str, str]]:
    pattern = shape.metadata["pattern"]
    if pattern.startswith("arn:") or pattern.startswith("(arn:"):
        candidates = _arn_pattern_violations(shape)
    else:
        candidates = [("pattern", "bad#value"), ("pattern", "bad<value>")]
    out = []
    for label, value in candidates:
        if not pattern_matches(pattern, value):
            out.append((label, value))
        if label == "pattern" and out:
            break
    return out


def _distinct(elem, n: int) -> list:
    """n distinct copies of a list element (so duplicates cannot hide a size violation)."""
    if isinstance(elem, str):
        return [f"{elem}{i}" for i in range(n)]
    if isinstance(elem, dict):
        for key in ("key", "metadataKey"):
            if isinstance(elem.get(key), str):
                return [{**elem, key: f"{elem[key]}{i}"} for i in range(n)]
    return [copy.deepcopy(elem) for _ in range(n)]


def mutate(shape, value):
    """Yield (label, new_value): `value` (valid for `shape`) changed to violate one constraint."""
    t = shape.type_name
    meta = shape.metadata
    if meta.get("document"):
        return
    if t == "string":
        if meta.get("min", 0) > 0:
            yield "-below-min", "a" * (meta["min"] - 1)
        if "max" in meta:
            yield "-above-max", "a" * (meta["max"] + 1)
        if shape.enum:
            yield "-bad-enum", "not-a-model-value"
            wrong_case = shape.enum[0].swapcase()
            if wrong_case not in shape.enum:
                yield "-enum-wrong-case", wrong_case
        if "pattern" in meta:
            for label, bad in pattern_violations(shape):
                yield "-pattern" if label == "pattern" else f"-pattern-{label}", bad
    elif t in ("integer", "long"):
        if "min" in meta:
            yield "-below-min", meta["min"] - 1
        if "max" in meta:
            yield "-above-max", meta["max"] + 1
    elif t == "list":
        elem = value[0] if value else synth(shape.member)
        if meta.get("min", 0) > 0:
            yield "-below-min", _distinct(elem, meta["min"] - 1)
        if "max" in meta:
            yield "-above-max", _distinct(elem, meta["max"] + 1)
        for label, bad in mutate(shape.member, elem):
            yield f".0{label}", [bad] + list(value[1:])
    elif t == "map":
        k, v = next(iter(value.items())) if value else (synth(shape.key), synth(shape.value))
        for label, bad in mutate(shape.key, k):
            yield f".key{label}", {bad: v}
        for label, bad in mutate(shape.value, v):
            yield f".value{label}", {k: bad}
    elif t == "structure":
        if meta.get("union"):
            yield "-empty-union", {}
        for name, member in shape.members.items():
            present = name in value
            if present and name in shape.required_members:
                yield f".{name}-missing", {k: x for k, x in value.items() if k != name}
            base = value[name] if present else synth(member)
            for label, bad in mutate(member, base):
                yield f".{name}{label}", {**value, name: bad}


WRONG_TYPE = {"string": 12345, "integer": "7", "long": "7", "boolean": "yes"}
NAME_MEMBERS = {"indexArn": ("vectorBucketName", "indexName"), "vectorBucketArn": ("vectorBucketName",)}


class InvalidCase:
    def __init__(self, op, label, changes, accept=("ValidationException",), message=None, note="", raw=None,
                 member=None):
        self.op = op
        self.id = f"{op}-{label}"
        self.changes = changes  # top-level member -> new value or DELETE
        self.accept = accept
        self.message = message  # the exact message expected, if known
        self.member = member  # the member under test: the error must name it
        self.note = note
        self.raw = raw  # (method, path) for requests botocore cannot serialize

    def build(self) -> dict:
        req = copy.deepcopy(TEMPLATES[self.op])
        for name, value in self.changes.items():
            if value is DELETE:
                req.pop(name, None)
            else:
                req[name] = value
        return req


def invalid_cases_for(op: str) -> list[InvalidCase]:
    template = TEMPLATES[op]
    shape = MODEL.operation_model(op).input_shape
    cases: list[InvalidCase] = []

    def add(label, changes, member, **kw):
        # A KMS key with sseType AES256 breaks a cross-member rule first: a case that makes
        # the key invalid must ask for aws:kms, so that only the key is wrong.
        enc = changes.get("encryptionConfiguration")
        if isinstance(enc, dict) and "kmsKeyArn" in enc and enc.get("sseType") == "AES256":
            changes["encryptionConfiguration"] = {**enc, "sseType": "aws:kms"}
        # Setting an ARN member switches the request to the ARN form (else the addressing rule,
        # not the constraint under test, would reject it).
        for name in list(changes):
            if name in NAME_MEMBERS and name not in template and changes[name] is not DELETE:
                for other in NAME_MEMBERS[name]:
                    if other in template:
                        changes.setdefault(other, DELETE)
        cases.append(InvalidCase(op, label, changes, member=member, **kw))

    for name, member in shape.members.items():
        location = member.serialization.get("location")
        present = name in template
        if name in shape.required_members:
            if location == "uri":
                # botocore cannot even build a request without a URI label (KeyError); the
                # closest wire request has an empty label.
                add(f"{name}-missing", {}, name, raw=("empty-label", name))
            else:
                add(f"{name}-missing", {name: DELETE}, name)
        base = template[name] if present and not isinstance(template[name], P) else synth(member)
        for label, bad in mutate(member, base):
            accept = ("ValidationException",)
            note = ""
            if label.endswith("-pattern-bad-region"):
                accept = ("ValidationException", "NotFoundException")
                note = "upper-case region: Quiver treats it as another region's ARN (NotFound)"
            add(f"{name}{label}", {name: bad}, name, accept=accept, note=note)
        if location is None and member.type_name in WRONG_TYPE:
            add(f"{name}-wrong-type", {name: WRONG_TYPE[member.type_name]}, name,
                accept=("ValidationException", "SerializationException"))

    form = addressing(op)
    if form == "bucket" and "vectorBucketName" in template:
        b = template["vectorBucketName"]
        cases.append(InvalidCase(op, "addressing-neither", {"vectorBucketName": DELETE}, message=BUCKET_ADDRESSING))
        cases.append(InvalidCase(op, "addressing-both", {"vectorBucketArn": P(b.name + "_arn")},
                                 message=BUCKET_ADDRESSING))
    elif form == "index":
        i = template["indexName"]
        arn = P(i.name + "_arn")
        forms = {
            "neither": {"vectorBucketName": DELETE, "indexName": DELETE},
            "all-three": {"indexArn": arn},
            "bucket-name-only": {"indexName": DELETE},
            "index-name-only": {"vectorBucketName": DELETE},
            "arn-and-bucket-name": {"indexArn": arn, "indexName": DELETE},
            "arn-and-index-name": {"indexArn": arn, "vectorBucketName": DELETE},
        }
        for label, changes in forms.items():
            cases.append(InvalidCase(op, f"addressing-{label}", changes, message=INDEX_ADDRESSING))
    return cases


def invalid_cases() -> list[InvalidCase]:
    out = []
    for op in MODEL.operation_names:
        if op in TEMPLATES:
            out.extend(invalid_cases_for(op))
    ids = [c.id for c in out]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"duplicate case ids: {dupes}"
    return out


VALID_CASES = valid_cases()
INVALID_CASES = invalid_cases()


# -- fixtures ------------------------------------------------------------------------------------


class RawCapture:
    """The raw HTTP response of the last boto3 call (botocore `after-call` event)."""

    def __init__(self):
        self.last = None

    def __call__(self, http_response, model, **kwargs):
        self.last = (model.name, http_response.status_code, dict(http_response.headers), http_response.content)


class World:
    def __init__(self, quiver):
        self.quiver = quiver
        self.capture = RawCapture()
        no_retries = {"total_max_attempts": 1, "mode": "standard"}
        self.client = quiver.client(retries=no_retries)
        self.raw_client = quiver.client(parameter_validation=False, retries=no_retries)
        for c in (self.client, self.raw_client):
            c.meta.events.register("after-call.s3vectors", self.capture)
        self.admin = quiver.client()  # setup/cleanup, not captured
        self.bucket = unique_name("conf")
        self.index = MAIN_INDEX
        self.buckets_to_clean: list[str] = [self.bucket]


class Resolver:
    """Resolves placeholders for one test; every name resolves once (ARN and name agree)."""

    def __init__(self, world: World):
        self.w = world
        self.cache: dict[str, str] = {}

    def value(self, name: str) -> str:
        if name in self.cache:
            return self.cache[name]
        w = self.w
        if name.endswith("_arn"):
            base = name[: -len("_arn")]
            v = self.value(base)
            result = index_arn(w.bucket, v) if base.endswith("index") else bucket_arn(v)
        elif name == "bucket":
            result = w.bucket
        elif name == "index":
            result = w.index
        elif name == "new_bucket":
            result = unique_name("conf-new")
            w.buckets_to_clean.append(result)
        elif name == "new_index":
            result = unique_name("ix-new")
        elif name == "fresh_bucket":
            result = unique_name("conf-fresh")
            w.admin.create_vector_bucket(vectorBucketName=result)
            w.buckets_to_clean.append(result)
        elif name == "fresh_index":
            result = unique_name("ix-fresh")
            w.admin.create_index(vectorBucketName=w.bucket, indexName=result, dataType="float32",
                                 dimension=DIM, distanceMetric="euclidean")
        else:
            raise KeyError(name)
        self.cache[name] = result
        return result

    def resolve(self, obj):
        if isinstance(obj, P):
            return self.value(obj.name)
        if isinstance(obj, dict):
            return {k: self.resolve(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.resolve(v) for v in obj]
        return obj


@pytest.fixture(scope="module")
def world(quiver):
    w = World(quiver)
    a = w.admin
    a.create_vector_bucket(vectorBucketName=w.bucket)
    a.create_index(vectorBucketName=w.bucket, indexName=w.index, dataType="float32", dimension=DIM,
                   distanceMetric="euclidean", metadataConfiguration={"nonFilterableMetadataKeys": ["note"]})
    a.put_vectors(vectorBucketName=w.bucket, indexName=w.index, vectors=[
        {"key": f"k{i}", "data": {"float32": [float(i), 1.0, 0.5, -0.25]},
         "metadata": {"genre": "drama" if i % 2 else "comedy", "year": 2000 + i, "note": f"n{i}"}}
        for i in range(1, 6)
    ])
    a.put_vector_bucket_policy(vectorBucketName=w.bucket, policy=POLICY)
    yield w
    for name in w.buckets_to_clean:
        cleanup_bucket(a, name)


def short(obj, n: int = 400) -> str:
    text = repr(obj)
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


def check_raw(world: World, op: str, expect_code: str | None) -> None:
    """The raw response of the last boto3 call: request id; error type header and JSON message."""
    last = world.capture.last
    assert last is not None and last[0] == op, f"no raw response captured for {op}: {last and last[:2]}"
    _, status, headers, body = last
    lower = {k.lower(): v for k, v in headers.items()}
    desc = f"{op}: HTTP {status}, headers {headers}, body {body[:300]!r}"
    assert lower.get("x-amzn-requestid"), f"missing x-amzn-RequestId; {desc}"
    if expect_code is None:
        assert status == 200, desc
        return
    etype = lower.get("x-amzn-errortype", "")
    assert etype.split(":")[0] == expect_code, f"x-amzn-ErrorType should be {expect_code}; {desc}"
    try:
        doc = json.loads(body)
    except ValueError:
        raise AssertionError(f"error body is not JSON; {desc}") from None
    assert isinstance(doc, dict) and isinstance(doc.get("message"), str) and doc["message"], (
        f"error body needs a non-empty 'message'; {desc}"
    )


def check_wire_output(op: str, body: bytes) -> None:
    output = MODEL.operation_model(op).output_shape
    if output is None or not output.members:
        assert body.strip() in (b"", b"{}"), f"{op} has no output members; body should be empty or {{}}: {body[:200]!r}"
        return
    doc = json.loads(body)
    errs = shape_errors(output, doc, wire=True)
    assert not errs, f"{op} raw body does not conform to {output.name}:\n" + "\n".join(errs)


# -- tests ---------------------------------------------------------------------------------------


def test_every_model_operation_has_cases():
    ops = set(MODEL.operation_names)  # 22 in botocore 1.44.x
    missing = ops - set(TEMPLATES)
    assert not missing, f"model operations without a conformance case: {sorted(missing)}"
    assert not set(TEMPLATES) - ops, f"cases for operations not in the model: {sorted(set(TEMPLATES) - ops)}"
    invalid_ops = {c.op for c in INVALID_CASES}
    assert invalid_ops == ops, f"operations without generated invalid requests: {sorted(ops - invalid_ops)}"


OPERATIONS_FIXTURE = Path(__file__).resolve().parents[2] / "coordinator/tests/fixtures/s3vectors-operations.txt"


def test_operation_fixture_is_the_model():
    """The Rust `Operation` enum is checked against this fixture (name, method, request URI of
    every operation); the fixture must be exactly the installed botocore model."""
    lines = [line.split() for line in OPERATIONS_FIXTURE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    fixture = {name: (method, uri) for name, method, uri in lines}
    model = {}
    for op in MODEL.operation_names:
        http = MODEL.operation_model(op).http
        model[op] = (http["method"], http["requestUri"])
    assert fixture == model, (
        f"{OPERATIONS_FIXTURE.name} differs from the botocore model: only in the fixture "
        f"{sorted(set(fixture.items()) - set(model.items()))}, only in the model "
        f"{sorted(set(model.items()) - set(fixture.items()))}; regenerate it and add the "
        "new operations to api::operation::Operation"
    )


def _valid_params():
    for c in VALID_CASES:
        gap = not_implemented(c.op, c.id)
        marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
        yield pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", list(_valid_params()))
def test_valid_request(world, case):
    if case.template is None:
        pytest.fail(f"model operation {case.op} has no conformance case: add one to TEMPLATES")
    resolver = Resolver(world)
    req = resolver.resolve(case.template)
    if case.op in SETUP:
        SETUP[case.op](world.admin, resolver, req)
    call = getattr(world.client, xform_name(case.op))
    resp = call(**req)  # client-side validation is ON: the request is valid per the model
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ResponseMetadata"].get("RequestId"), f"{case.id}: no request id: {resp['ResponseMetadata']}"
    output = MODEL.operation_model(case.op).output_shape
    if output is not None:
        errs = shape_errors(output, resp)
        assert not errs, f"{case.id}: response does not conform to {output.name}:\n" + "\n".join(errs) + f"\n{short(resp, 1500)}"
    else:
        assert set(resp) == {"ResponseMetadata"}, f"{case.id}: unexpected output members {resp}"
    check_raw(world, case.op, None)
    check_wire_output(case.op, world.capture.last[3])


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c.id for c in INVALID_CASES])
def test_invalid_request(world, case):
    resolver = Resolver(world)
    req = resolver.resolve(case.build())
    if case.raw is not None:
        _invalid_raw_label(world, case, req)
        return
    call = getattr(world.raw_client, xform_name(case.op))
    try:
        result = call(**req)
    except ClientError as e:
        resp = e.response
    else:
        raise AssertionError(
            f"{case.id}: the server accepted a request that violates the model: {short(req)} -> {short(result)}"
        )
    err, meta = resp["Error"], resp["ResponseMetadata"]
    desc = f"{case.id}: got {err} (HTTP {meta['HTTPStatusCode']}) for {short(req)}"
    assert err["Code"] in case.accept, f"expected {'/'.join(case.accept)}; {desc}"
    assert meta["HTTPStatusCode"] == STATUS[err["Code"]], f"wrong HTTP status; {desc}"
    assert meta.get("RequestId"), f"no request id; {desc}"
    check_raw(world, case.op, err["Code"])
    message = err.get("Message", "")
    gap = not_implemented(case.op, case.id) or (
        "full-text search is not implemented" if "textSearchConfigurations" in case.id else None)
    if gap and "not supported" in message:
        # Refused because the feature is missing, not for the constraint under test: a known
        # gap, reported as such (once the feature exists the case runs in full).
        pytest.xfail(gap)
    # Rejected for the constraint under test, not because a feature is missing.
    assert "not supported" not in message, f"rejected for another reason; {desc}"
    if case.message is not None:
        assert message == case.message, f"expected message {case.message!r}; {desc}"
    elif case.member is not None and err["Code"] == "ValidationException":
        assert names_member(case.member, message, world.capture.last[3]), (
            f"the error names neither in its message nor in fieldList the member under test "
            f"{case.member!r}; {desc}"
        )


def names_member(member: str, message: str, body: bytes) -> bool:
    """Whether an error names `member`: in its message, or as a `fieldList` path (`/member...`)."""
    if member in message:
        return True
    try:
        fields = json.loads(body).get("fieldList") or []
    except (ValueError, AttributeError):
        fields = []
    return any(isinstance(f, dict) and str(f.get("path", "")).lstrip("/").split("/")[0] == member
               for f in fields)


def _invalid_raw_label(world: World, case: InvalidCase, req: dict) -> None:
    """A required URI label left empty (`/tags/`): no operation can run without its resource.

    botocore cannot serialize a request without the label (KeyError), so this is sent raw.
    """
    params = dict(req)
    params["resourceArn"] = "PLACEHOLDER"
    method, path, body, headers = serialize_request(case.op, params)
    path = path.replace("PLACEHOLDER", "")
    r = world.quiver.signed_request(method, path, body=body, headers=headers)
    desc = f"{case.id}: {method} {path} -> HTTP {r.status_code} {dict(r.headers)} {r.text[:300]!r}"
    assert r.headers.get("x-amzn-RequestId"), f"no x-amzn-RequestId; {desc}"
    etype = r.headers.get("x-amzn-ErrorType", "").split(":")[0]
    # ValidationException (the label is required) or the restJson1 routing failure.
    allowed = {"ValidationException": 400, "UnknownOperationException": 404}
    assert etype in allowed, f"expected ValidationException or UnknownOperationException; {desc}"
    assert r.status_code == allowed[etype], desc
    try:
        doc = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON; {desc}") from None
    assert isinstance(doc.get("message"), str) and doc["message"], desc


# -- raw wire checks with requests ------------------------------------------------------------


def _first_invalid(op: str) -> InvalidCase:
    cases = [c for c in INVALID_CASES if c.op == op and c.raw is None]
    for pref in ("addressing-neither", "-missing"):
        for c in cases:
            if pref in c.id:
                return c
    return cases[0]


RAW_OPS = [op for op in MODEL.operation_names if op in TEMPLATES]


@pytest.mark.parametrize("op", [
    pytest.param(op, marks=[pytest.mark.xfail(strict=True, reason=not_implemented(op, ""))])
    if not_implemented(op, "") else op
    for op in RAW_OPS
])
def test_raw_wire(world, op):
    quiver = world.quiver
    resolver = Resolver(world)
    req = resolver.resolve(TEMPLATES[op])
    if op in SETUP:
        SETUP[op](world.admin, resolver, req)
    method, path, body, headers = serialize_request(op, req)
    r = quiver.signed_request(method, path, body=body, headers=headers)
    desc = f"{op} {method} {path}: HTTP {r.status_code} {dict(r.headers)} {r.text[:300]!r}"
    assert r.headers.get("x-amzn-RequestId"), f"missing x-amzn-RequestId; {desc}"
    assert r.status_code == 200, desc
    check_wire_output(op, r.content)

    bad = _first_invalid(op)
    method, path, body, headers = serialize_request(op, Resolver(world).resolve(bad.build()))
    r = quiver.signed_request(method, path, body=body, headers=headers)
    desc = f"{bad.id} {method} {path}: HTTP {r.status_code} {dict(r.headers)} {r.text[:300]!r}"
    assert r.status_code == 400, desc
    assert r.headers.get("x-amzn-RequestId"), f"missing x-amzn-RequestId; {desc}"
    assert r.headers.get("x-amzn-ErrorType", "").split(":")[0] == "ValidationException", desc
    assert r.headers.get("Content-Type", "").startswith("application/json"), desc
    doc = r.json()
    assert isinstance(doc.get("message"), str) and doc["message"], desc


TYPED_ERRORS = [
    # (id, operation, params builder, HTTP status, error type)
    ("GetVectorBucket-unknown", "GetVectorBucket", lambda w: {"vectorBucketName": "conf-no-such-bucket"}, 404,
     "NotFoundException"),
    ("GetIndex-unknown", "GetIndex", lambda w: {"vectorBucketName": w.bucket, "indexName": "ix-missing"}, 404,
     "NotFoundException"),
    ("GetVectorBucketPolicy-none", "GetVectorBucketPolicy", lambda w: {"vectorBucketName": "conf-no-such-bucket"}, 404,
     "NotFoundException"),
    ("ListTagsForResource-unknown", "ListTagsForResource",
     lambda w: {"resourceArn": bucket_arn("conf-no-such-bucket")}, 404, "NotFoundException"),
    ("GetVectorBucket-foreign-arn", "GetVectorBucket",
     lambda w: {"vectorBucketArn": f"arn:aws:s3vectors:eu-west-1:{ACCOUNT_ID}:bucket/{w.bucket}"}, 404,
     "NotFoundException"),
    ("CreateVectorBucket-duplicate", "CreateVectorBucket", lambda w: {"vectorBucketName": w.bucket}, 409,
     "ConflictException"),
    ("DeleteVectorBucket-not-empty", "DeleteVectorBucket", lambda w: {"vectorBucketName": w.bucket}, 409,
     "ConflictException"),
]


@pytest.mark.parametrize("label, op, params, status, etype", TYPED_ERRORS, ids=[t[0] for t in TYPED_ERRORS])
def test_raw_typed_errors(world, label, op, params, status, etype):
    method, path, body, headers = serialize_request(op, params(world))
    r = world.quiver.signed_request(method, path, body=body, headers=headers)
    desc = f"{label}: HTTP {r.status_code} {dict(r.headers)} {r.text[:300]!r}"
    assert r.status_code == status, desc
    assert r.headers.get("x-amzn-RequestId"), desc
    assert r.headers.get("x-amzn-ErrorType", "").split(":")[0] == etype, desc
    assert r.headers.get("Content-Type", "").startswith("application/json"), desc
    assert isinstance(r.json().get("message"), str) and r.json()["message"], desc


# Requests that match no operation of the model. Whatever the status, the response must be an
# AWS-shaped error (restJson1 servers answer routing failures with UnknownOperationException).
UNROUTED = [
    ("unknown-operation", "POST", "/NoSuchOperation", b"{}"),
    ("root-path", "POST", "/", b"{}"),
    ("wrong-method-GET-ListVectorBuckets", "GET", "/ListVectorBuckets", b""),
    ("wrong-method-PUT-tags", "PUT", "/tags/" + "arn%3Aaws%3As3vectors%3Aus-east-1%3A123456789012%3Abucket%2Fx", b"{}"),
    ("unencoded-arn-in-tags-path", "GET", "/tags/arn:aws:s3vectors:us-east-1:123456789012:bucket/x/index/y", b""),
]


@pytest.mark.parametrize("label, method, path, body", UNROUTED, ids=[u[0] for u in UNROUTED])
def test_raw_unrouted_requests_are_aws_errors(world, label, method, path, body):
    r = world.quiver.signed_request(method, path, body=body)
    desc = f"{label}: {method} {path} -> HTTP {r.status_code} {dict(r.headers)} {r.text[:200]!r}"
    assert 400 <= r.status_code < 500, desc
    assert r.headers.get("x-amzn-RequestId"), f"missing x-amzn-RequestId; {desc}"
    assert r.headers.get("x-amzn-ErrorType"), f"missing x-amzn-ErrorType; {desc}"
    try:
        doc = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON; {desc}") from None
    assert isinstance(doc.get("message"), str) and doc["message"], f"no message; {desc}"


def test_unsigned_request_is_aws_error(world):
    import requests

    r = requests.post(world.quiver.endpoint + "/ListVectorBuckets", data=b"{}",
                      headers={"Content-Type": "application/json"}, timeout=30)
    desc = f"unsigned: HTTP {r.status_code} {dict(r.headers)} {r.text[:200]!r}"
    assert r.status_code == 403 and r.headers.get("x-amzn-RequestId") and r.headers.get("x-amzn-ErrorType"), desc
    assert isinstance(r.json().get("message"), str), desc
