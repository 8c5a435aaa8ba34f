"""Shared helpers for the Quiver end-to-end API tests.

Contents:
* `QuiverServer` / `start_server()` -- run a `quiver dev` process (fixture-free).
* naming and ARN helpers (`unique_name`, `bucket_arn`, `index_arn`).
* `api_error()` -- call an operation that must fail and check code / HTTP status / message.
* float32 helpers (`f32`, `f32_list`) and `query_all()` / `list_all()` that follow nextToken.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import numpy as np
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from cluster import open_file_limit  # noqa: E402  (scripts/cluster.py)

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
ACCESS_KEY = "quiverdev"
SECRET_KEY = "quiverdevsecret"
SERVICE = "s3vectors"
STARTUP_TIMEOUT_S = 60.0
DEFAULT_BIN = os.path.join(os.path.expanduser("~"), ".cache", "quiver", "target", "debug", "quiver")

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Every server started by this suite, so failing tests can show the relevant log tails.
SERVERS: list["QuiverServer"] = []


def quiver_bin() -> str:
    return os.environ.get("QUIVER_BIN", DEFAULT_BIN)


def free_port() -> int:
    """A currently unused TCP port on 127.0.0.1 (small race window, good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One attempt, no retries: see QuiverServer.client.
NO_RETRIES = {"total_max_attempts": 1, "mode": "standard"}


class QuiverServer:
    """A `quiver dev` process with a fixed data dir and port that survives restarts."""

    def __init__(
        self,
        base_dir: Path | str,
        port: int | None = None,
        binary: str | None = None,
        open_files: int | None = None,
    ):
        self.base_dir = Path(base_dir)
        # Soft and hard RLIMIT_NOFILE of the process (None: inherited).
        self.open_files = open_files
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "server.log"
        self.port = port or free_port()
        self.binary = binary or quiver_bin()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "QuiverServer":
        if not os.path.exists(self.binary):
            raise RuntimeError(
                f"Quiver binary not found at {self.binary} (set QUIVER_BIN or build the server first)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # dev.json is (re)written by the server once it is ready; remove a stale one so that
        # readers never see the address of a previous incarnation.
        try:
            (self.data_dir / "dev.json").unlink()
        except FileNotFoundError:
            pass
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== test harness: start #{self.starts} at {time.ctime()} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "dev",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C on pytest must not hit the server first
                preexec_fn=open_file_limit(self.open_files),
            )
        if self not in SERVERS:
            SERVERS.append(self)
        self._wait_ready()
        return self

    @staticmethod
    def _env() -> dict:
        env = dict(os.environ)
        env.setdefault("NO_COLOR", "1")  # plain log files
        env.setdefault("RUST_BACKTRACE", "1")  # panics in the log come with a backtrace
        # The service's per-index write limits (2,500 vectors/s) would throttle bulk loads in the
        # tests; test_throttling.py starts its own server with the limits on.
        env.setdefault("QUIVER_MAX_WRITE_REQUESTS_PER_INDEX", "0")
        env.setdefault("QUIVER_MAX_WRITE_VECTORS_PER_INDEX", "0")
        return env

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_err = "no attempt"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(
                    f"quiver exited during startup with code {code}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        self._wait_dev_json(timeout=10)
                        return
                    last_err = f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                last_err = f"HTTP {e.code}"
            except (OSError, urllib.error.URLError) as e:
                last_err = repr(e)
            time.sleep(0.1)
        self._hard_kill()
        raise RuntimeError(
            f"quiver did not answer GET /health with 200 within {STARTUP_TIMEOUT_S:.0f}s "
            f"(last: {last_err})\n{self.log_tail()}"
        )

    def _wait_dev_json(self, timeout: float) -> None:
        # Only the UDP fuzz test needs dev.json; a missing file is reported there.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.data_dir / "dev.json").exists():
                return
            time.sleep(0.05)

    def _hard_kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after `timeout`)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._hard_kill()

    def restart(self) -> None:
        """Graceful stop, then start again with the same data dir and port."""
        self.stop()
        self.start()

    def kill9(self) -> None:
        """SIGKILL (no chance to flush anything), wait for the exit, start again."""
        assert self.alive(), "kill9() called on a server that is not running"
        self._hard_kill()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "QuiverServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self in SERVERS:
            SERVERS.remove(self)

    # -- access -----------------------------------------------------------------------------

    def client(self, **config):
        """A boto3 s3vectors client for this server; `config` adds botocore Config options.

        It never retries unless asked: a retried 5xx or dropped connection would hide a failure
        from the test. (botocore's `max_attempts` counts retries; `total_max_attempts` counts
        attempts, so 1 means one.)"""
        options = {"retries": NO_RETRIES}
        options.update(config)
        cfg = Config(**options)
        return boto3.client(
            "s3vectors",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=cfg,
        )

    def dev_info(self) -> dict:
        """Contents of <data-dir>/dev.json: {"endpoint": ..., "node_addr": "127.0.0.1:PORT"}."""
        path = self.data_dir / "dev.json"
        assert path.exists(), f"{path} was not written by the server"
        return json.loads(path.read_text())

    def health(self, timeout: float = 5.0) -> int:
        try:
            with urllib.request.urlopen(self.endpoint + "/health", timeout=timeout) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    def signed_request(
        self,
        method: str,
        path: str,
        body: bytes | str = b"",
        headers: dict | None = None,
        timeout: float = 60.0,
    ) -> requests.Response:
        """A raw HTTP request, SigV4-signed like botocore would sign it."""
        if isinstance(body, str):
            body = body.encode()
        url = self.endpoint + path
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        aws_req = AWSRequest(method=method, url=url, data=body, headers=hdrs)
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), SERVICE, REGION).add_auth(aws_req)
        return requests.request(
            method, url, data=body, headers=dict(aws_req.headers.items()), timeout=timeout
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = ANSI_ESCAPE.sub("", self.log_path.read_text(errors="replace")).splitlines()
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return f"--- last {min(lines, len(text))} lines of {self.log_path} ---\n" + "\n".join(
            text[-lines:]
        )


def start_server(base_dir: Path | str | None = None, port: int | None = None) -> QuiverServer:
    """Start an independent server (fixture-free). Use as a context manager to stop it.

    `base_dir` holds `data/` and `server.log`; a fresh temp dir is used when omitted.
    """
    if base_dir is None:
        base_dir = tempfile.mkdtemp(prefix="quiver-test-")
    return QuiverServer(base_dir, port=port).start()




# -- names and ARNs -----------------------------------------------------------------------------


def unique_name(prefix: str = "t") -> str:
    """A bucket/index name that is valid (a-z, 0-9, '-') and unique per call."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3vectors:{REGION}:{ACCOUNT_ID}:bucket/{bucket}"


def index_arn(bucket: str, index: str) -> str:
    return f"{bucket_arn(bucket)}/index/{index}"


def cleanup_bucket(client, name: str) -> None:
    """Best effort: delete every index of the bucket, then the bucket."""
    try:
        token = None
        while True:
            kw = {"vectorBucketName": name}
            if token:
                kw["nextToken"] = token
            resp = client.list_indexes(**kw)
            for ix in resp.get("indexes", []):
                client.delete_index(vectorBucketName=name, indexName=ix["indexName"])
            token = resp.get("nextToken")
            if not token:
                break
        client.delete_vector_bucket(vectorBucketName=name)
    except Exception:
        pass


# -- errors -------------------------------------------------------------------------------------

STATUS_FOR = {
    "ValidationException": 400,
    "SerializationException": 400,
    "NotFoundException": 404,
    "ConflictException": 409,
}


def api_error(call, code, *, status=None, message=None, contains=None, **kwargs) -> dict:
    """Run `call(**kwargs)`, which must raise a ClientError, and check it.

    `code` is one error code or a tuple of acceptable codes. `status` defaults to the usual HTTP
    status for the code. `message` must match exactly, `contains` must be a substring.
    Returns the botocore error response dict for further checks.
    """
    codes = (code,) if isinstance(code, str) else tuple(code)
    try:
        result = call(**kwargs)
    except ClientError as e:
        resp = e.response
    else:
        raise AssertionError(f"expected {'/'.join(codes)} but the call succeeded: {result!r}")
    err = resp.get("Error", {})
    meta = resp.get("ResponseMetadata", {})
    got_status = meta.get("HTTPStatusCode")
    desc = f"error response {err!r} (HTTP {got_status})"
    assert err.get("Code") in codes, f"expected code {'/'.join(codes)}, got {desc}"
    want_status = status if status is not None else STATUS_FOR.get(err.get("Code"))
    if want_status is not None:
        assert got_status == want_status, f"expected HTTP {want_status}, got {desc}"
    assert meta.get("RequestId"), f"no x-amzn-RequestId on {desc}; headers: {meta.get('HTTPHeaders')}"
    if message is not None:
        assert err.get("Message") == message, f"expected message {message!r}, got {desc}"
    if contains is not None:
        assert contains in (err.get("Message") or ""), f"expected message containing {contains!r}, got {desc}"
    return resp


def assert_request_id(resp: dict) -> None:
    rid = resp.get("ResponseMetadata", {}).get("RequestId")
    assert rid, f"no x-amzn-RequestId in response metadata: {resp.get('ResponseMetadata')}"


# -- vectors ------------------------------------------------------------------------------------


def f32(x: float) -> float:
    """The float32 nearest to x, widened back to a Python float (what the server returns)."""
    return float(np.float32(x))


def f32_list(xs) -> list[float]:
    return [float(v) for v in np.asarray(xs, dtype=np.float32)]


def vec(key: str, data, metadata=None) -> dict:
    item = {"key": key, "data": {"float32": [float(x) for x in data]}}
    if metadata is not None:
        item["metadata"] = metadata
    return item


def query_all(client, **kwargs) -> dict:
    """QueryVectors following nextToken; returns {"vectors": [...], "distanceMetric": ..., "pages": n}."""
    vectors: list[dict] = []
    pages = 0
    token = None
    metric = None
    while True:
        kw = dict(kwargs)
        if token:
            kw["nextToken"] = token
        resp = client.query_vectors(**kw)
        pages += 1
        vectors.extend(resp["vectors"])
        metric = resp.get("distanceMetric", metric)
        token = resp.get("nextToken")
        if not token:
            break
        assert pages < 1000, "QueryVectors keeps returning nextToken"
    return {"vectors": vectors, "distanceMetric": metric, "pages": pages}


def list_all(client, **kwargs) -> tuple[list[dict], int]:
    """ListVectors following nextToken; returns (items, number_of_pages)."""
    items: list[dict] = []
    pages = 0
    token = None
    while True:
        kw = dict(kwargs)
        if token:
            kw["nextToken"] = token
        resp = client.list_vectors(**kw)
        pages += 1
        items.extend(resp["vectors"])
        token = resp.get("nextToken")
        if not token:
            break
        assert pages < 100_000, "ListVectors keeps returning nextToken"
    return items, pages


def get_map(client, index_kw: dict, keys, return_data=True, return_metadata=True) -> dict:
    """GetVectors for any number of keys (batches of 100) -> {key: item}."""
    keys = list(keys)
    out: dict[str, dict] = {}
    for i in range(0, len(keys), 100):
        resp = client.get_vectors(
            keys=keys[i : i + 100],
            returnData=return_data,
            returnMetadata=return_metadata,
            **index_kw,
        )
        for item in resp["vectors"]:
            assert item["key"] not in out, f"GetVectors returned {item['key']!r} twice"
            out[item["key"]] = item
    return out


# -- the botocore service model (added for test_conformance.py and friends) --------------------

_SERVICE_MODEL = None


def service_model():
    """The botocore `ServiceModel` of s3vectors that the installed botocore ships."""
    global _SERVICE_MODEL
    if _SERVICE_MODEL is None:
        import botocore.session

        _SERVICE_MODEL = botocore.session.get_session().get_service_model(SERVICE)
    return _SERVICE_MODEL


def serialize_request(operation: str, params: dict) -> tuple[str, str, bytes, dict]:
    """(method, path-with-query, body, headers) botocore would send for `operation(**params)`.

    No client-side validation: invalid params are serialized as they are (for raw tests).
    """
    from botocore import serialize
    from botocore.utils import percent_encode_sequence

    serializer = serialize.create_serializer("rest-json", include_validation=False)
    req = serializer.serialize_to_request(params, service_model().operation_model(operation))
    path = req["url_path"]
    if req["query_string"]:
        path += "?" + percent_encode_sequence(req["query_string"])
    body = req["body"] or b""
    if isinstance(body, str):
        body = body.encode()
    return req["method"], path, body, dict(req["headers"])


def _tag_pattern_ok(value: str) -> bool:
    """`([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)` (Python's `re` has no \\p classes)."""
    return all(c.isalpha() or c.isspace() or c.isnumeric() or c in "_.:/=+-@" for c in value)


def pattern_matches(pattern: str, value: str) -> bool:
    """Whether `value` fully matches a model `pattern` (supports the \\p{..} classes used by tags)."""
    if "\\p{" in pattern:
        if pattern != "([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)":
            raise NotImplementedError(f"unsupported model pattern {pattern!r}")
        return _tag_pattern_ok(value)
    return re.fullmatch(pattern, value) is not None


def shape_errors(shape, value, path: str = "$", wire: bool = False) -> list[str]:
    """Everything in `value` that does not conform to the botocore `shape`.

    `wire=False`: `value` is what boto3 parsed (timestamps are datetimes, `ResponseMetadata` is
    ignored at the top). `wire=True`: `value` is the raw JSON body (timestamps are epoch-second
    numbers, explicit nulls and members unknown to the model are errors).
    Checks: required members, JSON/Python types, list/map/structure/union structure, enum values,
    string length and pattern, list length, integer ranges.
    """
    import datetime
    import math

    errs: list[str] = []
    meta = shape.metadata
    t = shape.type_name
    if meta.get("document"):
        return errs
    if value is None:
        return [f"{path}: null is not a valid {shape.name} ({t})"]
    if t == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected a {shape.name} object, got {type(value).__name__} {value!r:.80}"]
        for name in shape.required_members:
            if name not in value:
                errs.append(f"{path}: required member {name!r} of {shape.name} is missing")
        present = 0
        for name, member_value in value.items():
            if path == "$" and name == "ResponseMetadata" and not wire:
                continue
            if name not in shape.members:
                # boto3 drops unknown members while parsing, so this only fires on wire bodies.
                errs.append(f"{path}: member {name!r} is not in the model's {shape.name}")
                continue
            present += 1
            errs += shape_errors(shape.members[name], member_value, f"{path}.{name}", wire)
        if meta.get("union") and present != 1:
            errs.append(f"{path}: union {shape.name} must have exactly one member set, has {present}")
    elif t == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list ({shape.name}), got {type(value).__name__}"]
        if "min" in meta and len(value) < meta["min"]:
            errs.append(f"{path}: {len(value)} items, model minimum {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            errs.append(f"{path}: {len(value)} items, model maximum {meta['max']}")
        for i, item in enumerate(value):
            errs += shape_errors(shape.member, item, f"{path}[{i}]", wire)
            if len(errs) > 20:
                break
    elif t == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map ({shape.name}), got {type(value).__name__}"]
        for k, v in value.items():
            errs += shape_errors(shape.key, k, f"{path}<key {k!r}>", wire)
            errs += shape_errors(shape.value, v, f"{path}[{k!r}]", wire)
    elif t == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string ({shape.name}), got {type(value).__name__} {value!r:.80}"]
        if shape.enum and value not in shape.enum:
            errs.append(f"{path}: {value!r} is not one of the model's {shape.name} values {shape.enum}")
        if "min" in meta and len(value) < meta["min"]:
            errs.append(f"{path}: length {len(value)} below the model minimum {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            errs.append(f"{path}: length {len(value)} above the model maximum {meta['max']}")
        if "pattern" in meta and not pattern_matches(meta["pattern"], value):
            errs.append(f"{path}: {value!r} does not match the model pattern {meta['pattern']!r}")
    elif t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{path}: expected an integer ({shape.name}), got {type(value).__name__} {value!r}"]
        if "min" in meta and value < meta["min"]:
            errs.append(f"{path}: {value} below the model minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            errs.append(f"{path}: {value} above the model maximum {meta['max']}")
    elif t in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{path}: expected a number ({shape.name}), got {type(value).__name__} {value!r}"]
        if not math.isfinite(value):
            errs.append(f"{path}: non-finite number {value!r}")
    elif t == "boolean":
        if not isinstance(value, bool):
            errs.append(f"{path}: expected a boolean, got {type(value).__name__} {value!r}")
    elif t == "timestamp":
        if wire:
            # restJson1 default timestamp format in bodies: epoch seconds as a JSON number.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errs.append(f"{path}: timestamp must be an epoch-seconds number on the wire, got {value!r}")
        elif not isinstance(value, datetime.datetime) or value.tzinfo is None:
            errs.append(f"{path}: timestamp was not parsed into an aware datetime: {value!r}")
    elif t == "blob":
        if not isinstance(value, (bytes, str)):
            errs.append(f"{path}: expected a blob, got {type(value).__name__}")
    else:
        errs.append(f"{path}: shape type {t!r} not handled by shape_errors()")
    return errs
