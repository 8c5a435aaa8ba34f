"""A real client measured while `quiver-chaos siege` holds hostile connections to a process.

Used by tests/api/test_front_door.py (`quiver dev`) and tests/cluster/test_cluster.py (a
coordinator of the local cluster, HTTP and QUIC ports).

Environment: QUIVER_CHAOS_BIN = the quiver-chaos binary (default: the debug build).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path


DEFAULT_CHAOS_BIN = Path.home() / ".cache" / "quiver" / "target" / "debug" / "quiver-chaos"
# How long the siege ramps up before the client is measured.
RAMP_S = 4.0
# Log lines that mean a descriptor shortage reached storage or the runtime.
STARVED = ("Too many open files", "os error 24")


def chaos_bin() -> str:
    path = os.environ.get("QUIVER_CHAOS_BIN", str(DEFAULT_CHAOS_BIN))
    assert os.path.exists(path), f"quiver-chaos not built at {path} (set QUIVER_CHAOS_BIN)"
    return path


class Siege:
    """`quiver-chaos siege` in the background; `finish()` returns its JSON report."""

    def __init__(self, report: Path, seconds: int, *, http: str, quic: str | None = None,
                 tls_dir: str | None = None, idle: int = 2000, trickle: int = 200,
                 stalled: int = 1500, strangers: int = 100):
        self.report = report
        self.seconds = seconds
        self.args = [chaos_bin(), "siege", "--http", http, "--idle", str(idle),
                     "--trickle", str(trickle), "--duration-secs", str(seconds),
                     "--report", str(report)]
        if quic:
            self.args += ["--quic", quic, "--tls-dir", tls_dir, "--tls-name", "admin",
                          "--stalled", str(stalled), "--strangers", str(strangers)]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Siege":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)
        time.sleep(RAMP_S)
        assert self.proc.poll() is None, f"siege exited early: {self.proc.returncode}"
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def finish(self) -> dict:
        assert self.proc is not None
        code = self.proc.wait(timeout=self.seconds + 60)
        assert code == 0, f"siege failed with {code}"
        return json.loads(self.report.read_text())


def drive(s3v, bucket: str, index: str, dimension: int, seconds: float) -> tuple[list[float], list[str]]:
    """Puts, queries and gets for `seconds`, one request at a time; (latencies, errors)."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        key = f"live-{n}"
        vector = [float((n + i) % 7) for i in range(dimension)]
        calls = [
            lambda: s3v.put_vectors(vectorBucketName=bucket, indexName=index,
                                    vectors=[{"key": key, "data": {"float32": vector}}]),
            lambda: s3v.query_vectors(vectorBucketName=bucket, indexName=index, topK=5,
                                      queryVector={"float32": vector}),
            lambda: s3v.get_vectors(vectorBucketName=bucket, indexName=index, keys=[key]),
        ]
        for call in calls:
            started = time.perf_counter()
            try:
                call()
            except Exception as error:  # noqa: BLE001 -- every failure is the finding
                errors.append(f"{type(error).__name__}: {error}")
            latencies.append(time.perf_counter() - started)
        n += 1
    return latencies, errors


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def metric(text: str, name: str) -> float:
    """The value of an unlabelled metric in a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
