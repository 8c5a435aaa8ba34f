#!/usr/bin/env python3
"""Replication's cost and failover, measured side by side in one run.

Starts the local multi-process cluster (3 coordinators, 3 nodes; scripts/cluster.py) twice, with
replication factor 1 and then 3, and drives each with the same `quiver-chaos load` run (ingest,
then a closed-loop mix of PutVectors and QueryVectors spread over the three coordinators). Then,
on the RF 3 cluster, kills -9 one node during a write-only load and reports how long writes failed.

Prints one table (ingest vectors/s, put and query throughput and latency percentiles, recall,
the RF 3 / RF 1 ratios) and writes it as JSON. Usage (release builds):

    scripts/bench_replication.py --quiver-bin target/release/quiver --chaos-bin target/release/quiver-chaos
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster as local_cluster  # noqa: E402

PORTS = dict(http_base=28277, cluster_base=27277, node_base=27301, node_http_base=29301)


def load(chaos: str, c: local_cluster.Cluster, args, report: Path, mix: str, duration: float,
         ingest: bool = True) -> dict:
    endpoints = [a for i in (1, 2, 3) for a in ("--endpoint", c.http_endpoint(i))]
    cmd = [chaos, "load", *endpoints, "--count", str(args.count if ingest else 1000),
           "--dimension", str(args.dimension), "--queries", "200", "--clients", str(args.clients),
           "--duration", str(duration), "--mix", mix, "--put-batch", str(args.put_batch),
           "--report", str(report), "--no-progress"]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


def measure(rf: int, args, workdir: Path) -> dict:
    c = local_cluster.Cluster(workdir / f"rf{rf}", binary=args.quiver_bin, replication_factor=rf,
                              shards_per_index=args.shards, **PORTS)
    c.start()
    try:
        out = load(args.chaos_bin, c, args, workdir / f"rf{rf}.json", args.mix, args.duration)
        result = {
            "replication_factor": rf,
            "commit": out.get("commit"),
            "ingest_vectors_per_s": out["ingest_vectors_per_s"],
            "put": out["operations"].get("PutVectors", {}),
            "query": out["operations"].get("QueryVectors", {}),
            "duration_s": out["duration_s"],
            "recall": out["recall"]["plain"],
            "errors": out["non_throttling_errors"],
        }
        if rf == 3:
            result["failover"] = failover(args, c, workdir)
        return result
    finally:
        c.stop()


def failover(args, c: local_cluster.Cluster, workdir: Path) -> dict:
    """kill -9 of node-1 (it leads a third of the shards) a few seconds into a write-only load.
    Coordinators retry a shard write through the election, so clients see a slow write rather
    than an error: the longest write is the time writes to those shards stalled."""
    report = workdir / "failover.json"
    killer = threading.Timer(8.0, lambda: c.kill("node-1"))
    killer.start()
    out = load(args.chaos_bin, c, args, report, "put=1", 25, ingest=False)
    killer.join()
    return {
        "errors": out["errors"],
        "requests": out["requests"],
        "seconds_with_errors": [w["second"] for w in out["timeline"] if w["errors"] > 0],
        "longest_write_ms": out["latency"]["max_ms"],
        "p99_ms": out["latency"]["p99_ms"],
    }


def row(name: str, one: float, three: float, fmt: str = "{:,.1f}") -> str:
    ratio = three / one if one else float("nan")
    return f"{name:<34} {fmt.format(one):>14} {fmt.format(three):>14} {ratio:>8.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quiver-bin", required=True)
    p.add_argument("--chaos-bin", required=True)
    p.add_argument("--count", type=int, default=50_000)
    p.add_argument("--dimension", type=int, default=128)
    p.add_argument("--shards", type=int, default=6)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--put-batch", type=int, default=50)
    p.add_argument("--mix", default="query=50,put=50")
    p.add_argument("--report", default="bench-replication.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="quiver-bench-rf-") as d:
        workdir = Path(d)
        one, three = measure(1, args, workdir), measure(3, args, workdir)
    print(f"\n{'':<34} {'RF 1':>14} {'RF 3':>14} {'RF3/RF1':>8}")
    print(row("ingest (vectors/s)", one["ingest_vectors_per_s"], three["ingest_vectors_per_s"]))
    for op in ("put", "query"):
        a, b = one[op], three[op]
        print(row(f"{op} requests/s", a["requests"] / one["duration_s"], b["requests"] / three["duration_s"]))
        for q in ("p50_ms", "p99_ms"):
            print(row(f"{op} {q.replace('_ms', '')} (ms)", a["latency"][q], b["latency"][q], "{:,.2f}"))
    print(row("recall@10", one["recall"] or 0, three["recall"] or 0, "{:.4f}"))
    print(f"errors (not throttling): RF 1 {one['errors']}, RF 3 {three['errors']}")
    f = three["failover"]
    print(f"failover (RF 3, kill -9 node-1 during writes): {f['errors']} of {f['requests']} writes failed "
          f"(seconds {f['seconds_with_errors']}); longest write {f['longest_write_ms']:,.0f} ms")
    Path(args.report).write_text(json.dumps({"commit": one["commit"], "rf1": one, "rf3": three,
                                            "args": vars(args)}, indent=2))
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
