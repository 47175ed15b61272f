"""A real multi-node Ray cluster on this machine, for tests and benchmarks.

    with LocalCluster(tmp_path, workers=1) as c:       # a head and one worker node
        RayExecutor(c.address, auth_token=c.token)     # or c.client_address (Ray Client)
        c.kill_node("worker1")                          # SIGKILL every process of that node

Every node is started with ``ray start`` (exactly what a user runs), ``--node-ip-address
127.0.0.1`` and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (without it Ray replaces 127.0.0.1 by the
machine's network address), so every process listens on 127.0.0.1 only; token authentication is
on with a token file of the cluster's own (``RAY_AUTH_TOKEN_PATH``; ``~/.ray`` is not touched).
Each process started for the cluster carries a marker in its environment, inherited by the
workers Ray forks: :meth:`processes` finds them by it, and :meth:`stop` kills exactly those
(``ray stop`` would kill every Ray process of the machine, other users' included).

Lifecycle: ``start()`` (or ``with``) starts the head, then the workers; ``stop()`` kills all of
them and waits until they are gone. Not thread-safe; one instance per cluster.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MARK = "RLM_RAY_TEST_CLUSTER"
NODE = "RLM_RAY_TEST_NODE"
LOOPBACK_IPS = frozenset({"127.0.0.1", "::ffff:127.0.0.1", "::1"})
# `ray start` for a worker node: Ray refuses worker nodes when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# and otherwise rewrites 127.0.0.1 (the node's and the head's) into the machine's address. This
# runs Ray's own `ray start` with 127.0.0.1 kept as given; the variable stays 0 in the
# environment the node's processes inherit, so they resolve "this node" to 127.0.0.1 as well.
_WORKER_START = """
import sys
import ray._private.services as services
from ray._private import ray_constants
services.resolve_ip_for_localhost = lambda host: host
ray_constants.ENABLE_RAY_CLUSTER = True
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


class LocalCluster:
    """``LocalCluster(root, *, workers=1, head_cpus=1, worker_cpus=1, auth=True,
    client_server=True)``: a head and ``workers`` worker nodes under ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, workers: int = 1, head_cpus: float = 1,
                 worker_cpus: float = 1, auth: bool = True, client_server: bool = True):
        self.root = Path(root)
        self.workers = workers
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        self.auth = auth
        self.marker = secrets.token_hex(8)
        self.token = secrets.token_hex(24) if auth else None
        self.gcs_port = free_port()
        self.client_port = free_port() if client_server else None
        # Ray's sockets live under its temp dir and a socket path has at most 107 bytes: a short
        # directory of its own (removed by stop()), wherever ``root`` is.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rlmray-", dir="/tmp"))
        self.log = self.root / "ray-start.log"
        ray_bin = Path(sys.executable).with_name("ray")
        self._ray = str(ray_bin) if ray_bin.exists() else "ray"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    @property
    def token_path(self) -> Path:
        return self.root / "auth_token"

    def env(self, node: str = "driver") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                            "RAY_AUTH_MODE")}
        env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                    # A shared, loaded machine: give a node, its agents and its workers time
                    # to come up (Ray's defaults, 30 to 60 s, fail under a load of 10 on 2 cores).
                    "RAY_raylet_start_wait_time_s": "240",
                    "RAY_agent_register_timeout_ms": "240000",
                    "RAY_worker_register_timeout_seconds": "240",
                    # Idle workers stay (Ray stops them after 1 s past the soft limit): tests map a
                    # result's worker pid to its node after the batch, when it may be idle.
                    "RAY_idle_worker_killing_time_threshold_ms": "600000",
                    MARK: self.marker, NODE: node,
                    "RAY_AUTH_MODE": "token" if self.auth else "disabled"})
        if self.auth:
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)
        return env

    def _node_ports(self) -> list[str]:
        return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()),
                "--metrics-export-port", str(free_port())]

    def _ray_start(self, node: str, args: list[str]) -> None:
        with open(self.log, "a") as log:
            log.write(f"\n== {node}: ray start {' '.join(args)}\n")
            log.flush()
            cmd = ([self._ray, "start"] if node == "head" else
                   [sys.executable, "-c", _WORKER_START, "start"])
            proc = subprocess.run([*cmd, *args], env=self.env(node), stdout=log,
                                  stderr=subprocess.STDOUT, timeout=300, check=False)
        if proc.returncode != 0:
            tail = self.log.read_text()[-1500:]
            for f in sorted(self.temp_dir.glob("session_2*/logs/raylet.err"))[-1:]:
                tail += f"\n{f}:\n" + f.read_text()[-1500:]
            raise RuntimeError(f"`ray start` for {node} failed ({proc.returncode}):\n{tail}")

    def start(self) -> LocalCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.token:
            self.token_path.write_text(self.token)
            self.token_path.chmod(0o600)
        common = ["--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp_dir),
                  "--disable-usage-stats", "--log-style", "record"]
        head = ["--head", "--port", str(self.gcs_port), "--num-cpus", str(self.head_cpus),
                "--include-dashboard", "false", *common, *self._node_ports()]
        if self.client_port:
            head += ["--ray-client-server-port", str(self.client_port)]
        try:
            self._ray_start("head", head)
            for i in range(1, self.workers + 1):
                self._ray_start(f"worker{i}", ["--address", self.address, "--num-cpus",
                                               str(self.worker_cpus), *common,
                                               *self._node_ports()])
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the cluster's processes -------------------------------------------------------------
    def pids(self, node: str | None = None) -> list[int]:
        """Every live process started for this cluster (or for one ``node``: head, worker1...):
        the ones carrying the marker in their environment and all their descendants (Ray's
        agents and workers overwrite their environment block with their process title)."""
        import psutil

        mark = f"{MARK}={self.marker}".encode()
        want = f"{NODE}={node}".encode() if node else None
        roots = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            env = _environ(int(entry.name)).split(b"\0")
            if mark in env and (want is None or want in env):
                roots.append(int(entry.name))
        out = set(roots)
        for pid in roots:
            try:
                out.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                continue
        out.discard(os.getpid())
        return sorted(out)

    def processes(self, node: str | None = None) -> Iterator[Any]:
        import psutil

        for pid in self.pids(node):
            try:
                yield psutil.Process(pid)
            except psutil.Error:
                continue

    def sockets(self, pids: list[int] | None = None) -> list[tuple[int, str, str, str]]:
        """``(pid, process name, local address, remote address or '')`` of every TCP/UDP socket
        the cluster's processes (or ``pids``) hold."""
        import psutil

        out = []
        for pid in pids if pids is not None else self.pids():
            try:
                p = psutil.Process(pid)
                name = p.name()
                conns = p.net_connections(kind="inet")
            except psutil.Error:
                continue
            for c in conns:
                remote = c.raddr.ip if c.raddr else ""
                out.append((pid, name, c.laddr.ip, remote))
        return out

    def kill_node(self, node: str | None) -> list[int]:
        """SIGKILL every process of ``node`` (a machine lost; None: all); returns the pids."""
        pids = self.pids(node)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def stop(self, timeout: float = 20.0) -> None:
        """Kill this cluster's processes (workers first, the head last) and wait for them."""
        deadline = time.monotonic() + timeout
        for node in [f"worker{i}" for i in range(self.workers, 0, -1)] + ["head", None]:
            self.kill_node(node)
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not self.pids():
            shutil.rmtree(self.temp_dir, ignore_errors=True)


__all__ = ["LOOPBACK_IPS", "LocalCluster", "free_port"]
