#!/usr/bin/env python3
"""A local multi-process Quiver cluster on 127.0.0.1: 3 coordinators and 3 nodes by default.

    scripts/cluster.py start [--dir DIR] [--binary PATH] ...   start (or restart) every process
    scripts/cluster.py stop [--dir DIR]                         stop every process (SIGTERM, then SIGKILL)
    scripts/cluster.py status [--dir DIR]                       `quiver admin status` through coordinator 1
    scripts/cluster.py kill NAME [--dir DIR]                    kill -9 one process (coordinator-2, node-1, ...)
    scripts/cluster.py restart NAME [--dir DIR]                 start one stopped process again

`start` creates a cluster CA and certificates, a join token and one TOML config per process under
DIR (default ./quiver-cluster), starts the processes, waits until each is ready and writes
DIR/cluster.json listing each process's role, pid, ports, data directory, config and log. Running
`start` again on the same DIR reuses certificates, configs and data (a whole-cluster restart).

The coordinators serve HTTP on ports 8277, 8278, 8279 (--http-base) with the documented dev
credentials (quiverdev / quiverdevsecret), which is only acceptable because everything listens
on loopback. Only the Python standard library is used, so the chaos and load tools (and tests)
can import this module.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_BINARY = Path.home() / ".cache" / "quiver" / "target" / "release" / "quiver"
READY_TIMEOUT_S = 60.0


def open_file_limit(n: int | None):
    """A `preexec_fn` setting a child's soft and hard RLIMIT_NOFILE to `n` (None: inherited)."""
    if n is None:
        return None

    def apply() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


class Cluster:
    def __init__(
        self,
        directory: Path | str,
        binary: Path | str | None = None,
        coordinators: int = 3,
        nodes: int = 3,
        http_base: int = 8277,
        cluster_base: int = 7277,
        node_base: int = 7301,
        node_http_base: int = 9301,
        shards_per_index: int | None = None,
        extra_env: dict[str, str] | None = None,
        replication_factor: int | None = None,
    ) -> None:
        self.dir = Path(directory).resolve()
        self.binary = Path(binary or os.environ.get("QUIVER_BIN", DEFAULT_BINARY))
        self.coordinators = coordinators
        self.nodes = nodes
        self.http_base = http_base
        self.cluster_base = cluster_base
        self.node_base = node_base
        self.node_http_base = node_http_base
        self.shards_per_index = shards_per_index or 2 * nodes
        self.replication_factor = replication_factor or min(3, nodes)
        self.extra_env = extra_env or {}
        self.tls = self.dir / "tls"
        self.state_file = self.dir / "cluster.json"

    # -- layout ------------------------------------------------------------------------------

    def coordinator_names(self) -> list[str]:
        return [f"coordinator-{i}" for i in range(1, self.coordinators + 1)]

    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in range(1, self.nodes + 1)]

    def http_endpoint(self, i: int) -> str:
        return f"http://127.0.0.1:{self.http_base + i - 1}"

    def cluster_addr(self, i: int) -> str:
        return f"127.0.0.1:{self.cluster_base + i - 1}"

    def spec(self, name: str) -> dict:
        role, number = name.rsplit("-", 1)
        i = int(number)
        config = self.dir / f"{name}.toml"
        data_dir = self.dir / name
        log = self.dir / f"{name}.log"
        if role == "coordinator":
            return {
                "name": name, "role": role, "id": i, "config": str(config), "data_dir": str(data_dir),
                "log": str(log), "http": self.http_endpoint(i), "cluster_addr": self.cluster_addr(i),
            }
        return {
            "name": name, "role": role, "id": name, "config": str(config), "data_dir": str(data_dir),
            "log": str(log), "addr": f"127.0.0.1:{self.node_base + i - 1}",
            "http": f"http://127.0.0.1:{self.node_http_base + i - 1}",
        }

    # -- set-up ------------------------------------------------------------------------------

    def run_quiver(self, *args: str) -> None:
        subprocess.run([str(self.binary), *args], check=True, capture_output=True, text=True)

    def prepare(self) -> None:
        if not self.binary.exists():
            raise SystemExit(f"cluster.py: {self.binary} not found (build it, or pass --binary)")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.tls / "ca.key").exists():
            self.run_quiver("cert", "ca", "--out", str(self.tls), "--name", "Quiver local cluster CA")
        for name in [*self.coordinator_names(), *self.node_names(), "admin"]:
            if not (self.tls / f"{name}.pem").exists():
                role = name.split("-", 1)[0]  # coordinator-1 -> coordinator, node-2 -> node, admin
                self.run_quiver("cert", "issue", "--ca-dir", str(self.tls), "--name", name, "--role", role,
                                "--san", "127.0.0.1", "--san", "localhost", "--out", str(self.tls))
        token_file = self.dir / "join-token"
        if not token_file.exists():
            token_file.write_text(secrets.token_hex(24))
            token_file.chmod(0o600)
        token = token_file.read_text().strip()
        members = "".join(
            f'\n[[initial_members]]\nid = {i}\ncluster_addr = "{self.cluster_addr(i)}"\n'
            f'http_addr = "127.0.0.1:{self.http_base + i - 1}"\n'
            for i in range(1, self.coordinators + 1)
        )
        for name in self.coordinator_names():
            spec = self.spec(name)
            Path(spec["config"]).write_text(
                f"# Written by scripts/cluster.py (local test cluster on loopback).\n"
                f"id = {spec['id']}\n"
                f'http_listen = "{spec["http"].removeprefix("http://")}"\n'
                f'cluster_listen = "{spec["cluster_addr"]}"\n'
                f'data_dir = "{spec["data_dir"]}"\n'
                f'join_token = "{token}"\n'
                f"allow_dev_credentials = true\n"
                f"shards_per_index = {self.shards_per_index}\n"
                f"replication_factor = {self.replication_factor}\n"
                f"max_write_requests_per_index = 0\n"
                f"max_write_vectors_per_index = 0\n"
                f'\n[tls]\ndir = "{self.tls}"\nname = "{name}"\n{members}'
            )
        coordinators = ", ".join(f'"{self.cluster_addr(i)}"' for i in range(1, self.coordinators + 1))
        for name in self.node_names():
            spec = self.spec(name)
            Path(spec["config"]).write_text(
                f"# Written by scripts/cluster.py (local test cluster on loopback).\n"
                f'id = "{name}"\n'
                f'listen = "{spec["addr"]}"\n'
                f'http_listen = "{spec["http"].removeprefix("http://")}"\n'
                f'data_dir = "{spec["data_dir"]}"\n'
                f"coordinators = [{coordinators}]\n"
                f'join_token = "{token}"\n'
                f'\n[tls]\ndir = "{self.tls}"\nname = "{name}"\n'
            )

    # -- processes ---------------------------------------------------------------------------

    def load_state(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"processes": []}

    def save_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def launch(self, name: str, fresh: bool = False, open_files: int | None = None) -> dict:
        # `restart` keeps a process's recorded layout (ports, paths) whatever arguments this
        # invocation was given; `start` (fresh) has just written the configs from them.
        saved = {} if fresh else {p["name"]: p for p in self.load_state()["processes"]}
        spec = {k: v for k, v in saved[name].items() if k != "pid"} if name in saved else self.spec(name)
        log = open(spec["log"], "ab")
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), **self.extra_env}
        proc = subprocess.Popen(
            [str(self.binary), spec["role"], "--config", spec["config"]],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, preexec_fn=open_file_limit(open_files),
        )
        log.close()
        return {**spec, "pid": proc.pid}

    def start(self, wait: bool = True) -> dict:
        self.prepare()
        state = {
            "processes": [self.launch(n, fresh=True) for n in [*self.coordinator_names(), *self.node_names()]],
            "endpoints": [self.http_endpoint(i) for i in range(1, self.coordinators + 1)],
            "access_key_id": "quiverdev",
            "secret_access_key": "quiverdevsecret",
            "region": "us-east-1",
            "tls_dir": str(self.tls),
            "admin_cert": "admin",
            "binary": str(self.binary),
        }
        self.save_state(state)
        if wait:
            self.wait_ready([p["name"] for p in state["processes"]])
        return state

    def process(self, name: str) -> dict:
        for p in self.load_state()["processes"]:
            if p["name"] == name:
                return p
        raise KeyError(name)

    def restart(self, name: str, wait: bool = True, open_files: int | None = None) -> dict:
        """Starts `name` again with its recorded layout; `open_files` sets its soft and hard
        open-file limit (default: inherited)."""
        state = self.load_state()
        entry = self.launch(name, open_files=open_files)
        state["processes"] = [entry if p["name"] == name else p for p in state["processes"]]
        self.save_state(state)
        if wait:
            self.wait_ready([name])
        return entry

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        pid = self.process(name)["pid"]
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + 10
        while time.time() < deadline and alive(pid):
            time.sleep(0.05)
        if alive(pid):
            raise RuntimeError(f"{name} (pid {pid}) still runs 10 s after signal {sig}")

    def stop(self) -> None:
        processes = self.load_state()["processes"]
        for p in processes:
            try:
                os.kill(p["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 15
        while time.time() < deadline and any(alive(p["pid"]) for p in processes):
            time.sleep(0.1)
        for p in processes:
            if alive(p["pid"]):
                os.kill(p["pid"], signal.SIGKILL)

    def wait_ready(self, names: list[str], timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.time() + timeout
        pending = list(names)
        while pending:
            name = pending[0]
            p = self.process(name)
            if not alive(p["pid"]):
                raise RuntimeError(f"{name} exited; see {p['log']}:\n{tail(p['log'])}")
            if http_ok(p["http"] + "/ready"):
                pending.pop(0)
                continue
            if time.time() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout}s; see {p['log']}:\n{tail(p['log'])}")
            time.sleep(0.1)

    def admin(self, *args: str, coordinator: int = 1) -> str:
        result = subprocess.run(
            [str(self.binary), "admin", "--coordinator", self.cluster_addr(coordinator),
             "--tls-dir", str(self.tls), "--tls-name", "admin", *args],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return result.stdout


def alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that is not our child still answers kill(0); check its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for(what: str, check, timeout: float, interval: float = 0.2):
    """Calls `check` until it returns something truthy (exceptions count as not yet) and returns
    that; fails after `timeout` seconds naming `what` and the last error. Used by the tests."""
    deadline = time.time() + timeout
    last_error = None
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - the check is retried until the deadline
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout}s (last error: {last_error})")


def tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "kill", "restart"])
    parser.add_argument("name", nargs="?", help="process for kill/restart, e.g. coordinator-2 or node-1")
    parser.add_argument("--dir", default="./quiver-cluster")
    parser.add_argument("--binary", default=None)
    parser.add_argument("--coordinators", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--http-base", type=int, default=8277)
    parser.add_argument("--cluster-base", type=int, default=7277)
    parser.add_argument("--node-base", type=int, default=7301)
    parser.add_argument("--node-http-base", type=int, default=9301)
    parser.add_argument("--shards-per-index", type=int, default=None)
    parser.add_argument("--replication-factor", type=int, default=None,
                        help="replicas per shard of new indexes (default: 3, or the node count if smaller)")
    args = parser.parse_args()
    cluster = Cluster(args.dir, args.binary, args.coordinators, args.nodes, args.http_base,
                      args.cluster_base, args.node_base, args.node_http_base, args.shards_per_index,
                      replication_factor=args.replication_factor)
    if args.command == "start":
        state = cluster.start()
        print(f"Quiver cluster is ready ({cluster.state_file}):\n")
        for p in state["processes"]:
            print(f"  {p['name']:<14} pid {p['pid']:<8} {p.get('http', '')}")
        print("\nS3 Vectors endpoints: " + ", ".join(state["endpoints"]))
        print("Credentials: quiverdev / quiverdevsecret (dev credentials, loopback only)")
        print(f"Status: scripts/cluster.py status --dir {args.dir}   Stop: make cluster-stop")
    elif args.command == "stop":
        cluster.stop()
        print("stopped")
    elif args.command == "status":
        print(cluster.admin("status"), end="")
    elif args.name is None:
        parser.error(f"{args.command} needs a process name")
    elif args.command == "kill":
        cluster.kill(args.name)
        print(f"killed {args.name}")
    else:
        cluster.restart(args.name)
        print(f"restarted {args.name}")


if __name__ == "__main__":
    sys.exit(main())
