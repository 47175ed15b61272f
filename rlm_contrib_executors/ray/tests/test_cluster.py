"""The ray executor against a cluster the tests start like a user would: a head and a worker node
(`ray start`), every process on 127.0.0.1, token authentication on.

Connection (each in a fresh driver process, as a user's would be): the CLI with --address and
--executor-arg auth_token, RAY_ADDRESS with Ray Client, one line for a missing token, a wrong
token and a version mismatch. Work: a batch spread over both nodes, a child tree whose limits and
tree-wide concurrency bound hold on the cluster, and (last, it takes the worker node away) a node
killed mid-batch with every line written exactly once. Addresses: no socket of any cluster
process or of the driver uses anything but 127.0.0.1, and no node or log names the machine's
address. The model is rlm_testkit.servers.OpenAICompatibleServer on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rlm
from rlm import RLM
from rlm.exceptions import RLMError
from rlm_testkit.servers import OpenAICompatibleServer, Reply

from rlm_executor_ray.testing import LOOPBACK_IPS

ROOT = Path(__file__).resolve().parents[3]
RLM_BIN = Path(sys.executable).with_name("rlm")


def backend(srv, **extra):
    return {"backend": "openai", "backend_kwargs": {"model_name": "m", "base_url": srv.base_url,
                                                  "api_key": "test", **extra}}


def answer_length(messages, body):
    return "```repl\nFINAL('n=' + str(len(context)))\n```"


def node_of(cluster, pid: int) -> str | None:
    for node in ("head", "worker1"):
        if pid in cluster.pids(node):
            return node
    return None


def machine_address() -> str | None:
    """This machine's network address (what Ray would have used instead of 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def driver_env(cluster) -> dict[str, str]:
    env = cluster.env("driver")
    for var in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(var, None)
    env["HOME"] = str(cluster.root / "home")  # no ~/.ray/auth_token to fall back on
    return env


def driver(code: str, cluster, env: dict[str, str] | None = None, timeout: float = 120):
    """Run ``code`` in a fresh Python process (a user's driver) with a clean Ray environment."""
    full = {**driver_env(cluster), **(env or {})}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          timeout=timeout, cwd=cluster.root)


# -- connecting ---------------------------------------------------------------------------------

def test_token_and_version_failures_are_one_line_each_and_fast(cluster):
    code = f"""
import time, ray
from rlm.exceptions import ConfigurationError
from rlm_executor_ray.executor import RayExecutor
def attempt(**kw):
    t0 = time.monotonic()
    try:
        RayExecutor({cluster.address!r}, **kw)
    except ConfigurationError as exc:
        print(f"{{time.monotonic() - t0:.2f}}|{{exc}}")
attempt()
attempt(auth_token="not-the-token")
ray.__version__ = "2.0.0"  # this driver now claims another Ray than the cluster's
attempt(auth_token={cluster.token!r})
"""
    proc = driver(code, cluster)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, proc.stdout + proc.stderr
    (t1, missing), (t2, rejected), (t3, mismatch) = (ln.split("|", 1) for ln in lines)
    assert "requires an authentication token" in missing and "auth_token" in missing
    assert "RAY_AUTH_TOKEN" in missing and cluster.address in missing
    assert "rejected the authentication token from the auth_token argument" in rejected
    assert "version mismatch" in mismatch and "this process Ray 2.0.0" in mismatch
    assert max(float(t1), float(t2), float(t3)) < 5  # not Ray's 20 s retry loop
    assert "192." not in proc.stdout
    assert cluster.token not in proc.stdout + proc.stderr  # the token is never printed


def test_cli_batch_with_address_and_auth_token(cluster, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"prompt": "z" * k}) + "\n" for k in range(1, 5)))
    out = tmp_path / "out.jsonl"
    with OpenAICompatibleServer(responder=answer_length) as srv:
        proc = subprocess.run(
            [str(RLM_BIN), "batch", str(inp), "--output", str(out), "--executor", "ray",
             "--address", cluster.address, "--executor-arg", f"auth_token={cluster.token}",
             "--backend", "openai", "--backend-arg", "model_name=m",
             "--backend-arg", f"base_url={srv.base_url}", "--backend-arg", "api_key=test"],
            env=driver_env(cluster), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["response"] for r in recs) == [f"n={k}" for k in range(1, 5)]
    assert f"ray ({cluster.address}, 2 node(s)" in proc.stderr
    assert (machine_address() or "never") not in proc.stderr + proc.stdout


def test_ray_address_through_ray_client_with_the_token_in_the_environment(cluster):
    code = """
import os, rlm
from rlm_testkit.servers import OpenAICompatibleServer
with OpenAICompatibleServer(responder=lambda m, b: "```repl\\nFINAL(str(len(context)))\\n```") as srv:
    report = rlm.batch([{"prompt": "q" * k} for k in range(1, 4)], executor="ray",
                       backend="openai", backend_kwargs={"model_name": "m",
                       "base_url": srv.base_url, "api_key": "t"}, concurrency=3, ordered=True)
print(report.executor)
print([r["response"] for r in report.results])
"""
    proc = driver(code, cluster, env={"RAY_ADDRESS": cluster.client_address,
                                      "RAY_AUTH_TOKEN": cluster.token})
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, answers = proc.stdout.strip().splitlines()[-2:]
    assert where.startswith(f"ray ({cluster.client_address}, 2 node(s)")
    assert answers == "['1', '2', '3']"


# -- work on two nodes ---------------------------------------------------------------------------

def test_a_batch_spreads_over_both_nodes(cluster, tmp_path):
    out = tmp_path / "out.jsonl"
    with OpenAICompatibleServer(responder=answer_length, latency=0.3) as srv:
        report = rlm.batch([{"prompt": "s" * k} for k in range(1, 13)], output=out,
                           executor="ray", concurrency=8, **backend(srv))
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert report.succeeded == 12 and sorted(r["index"] for r in recs) == list(range(12))
    nodes = {node_of(cluster, int(r["worker"].rsplit(":", 1)[1])) for r in recs}
    assert nodes == {"head", "worker1"}, [r["worker"] for r in recs]


class Counter:
    """Concurrent child requests seen by the model server (the tree's sub-calls in flight)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.release = threading.Event()  # set: children stop waiting at once

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


ROOT_CODE = """```repl
import threading
out = {}
def fan(tag, out=out, query=rlm_query_batched):
    out[tag] = query([f"{tag}{i}" for i in range(3)])
ts = [threading.Thread(target=fan, args=(t,)) for t in "ab"]
[t.start() for t in ts]
[t.join() for t in ts]
print(out)
```"""


def tree_responder(counter: Counter, child_latency: float = 0.4):
    def respond(messages, body):
        text = " ".join(str(m.get("content")) for m in messages)
        if "with 30 total characters" in text:  # the root (its context is 30 chars)
            if "REPL output" in text:
                return Reply("```repl\nFINAL(str(sorted(out.items())))\n```", prompt_tokens=100,
                             completion_tokens=10, cost=0.01)
            return Reply(ROOT_CODE, prompt_tokens=100, completion_tokens=10, cost=0.01)
        if "REPL" not in text and "repl" not in text:  # a plain call (past max_depth)
            return Reply("leaf", prompt_tokens=100, completion_tokens=10, cost=0.01)
        if "REPL output" in text:
            return Reply("```repl\nFINAL(context + ':' + r)\n```", prompt_tokens=100,
                         completion_tokens=10, cost=0.01)
        with counter:
            counter.release.wait(child_latency)
        return Reply("```repl\nimport os\nr = rlm_query('deeper') + '@' + str(os.getpid())\n"
                     "print(r)\n```", prompt_tokens=100, completion_tokens=10, cost=0.01)
    return respond


def test_a_child_tree_on_the_cluster_holds_depth_and_the_concurrency_bound(cluster):
    counter = Counter()
    with OpenAICompatibleServer(responder=tree_responder(counter)) as srv:
        with RLM(**backend(srv), max_depth=2, max_concurrent_subcalls=3,
                 subcall_executor="ray", subcall_executor_kwargs={"max_in_flight": 2}) as r:
            res = r.completion("t" * 30)
            engine = r._resources._executors["ray"]
        served = len(srv.requests)
    answers = dict(eval(res.response))  # the test's own repr
    assert sorted(answers) == ["a", "b"]
    flat = [a for tag in "ab" for a in answers[tag]]
    assert [a.split(":")[0] for a in flat] == ["a0", "a1", "a2", "b0", "b1", "b2"]
    # depth: each child's rlm_query at depth 1 of max_depth=2 was a plain call ("leaf")
    assert all(a.split(":")[1].startswith("leaf@") for a in flat), flat
    pids = {int(a.rsplit("@", 1)[1]) for a in flat}
    assert os.getpid() not in pids and all(node_of(cluster, p) for p in pids)
    # two concurrent rlm_query_batched of 3 (max_concurrent_subcalls=3): 6 could run at once;
    # the executor's tree-wide bound kept it to 2, and the model saw no more than 2 children
    assert engine.peak_in_flight == 2 and counter.peak <= 2
    assert res.usage_summary.total_calls == 2 + 6 * 3 == served


@pytest.mark.parametrize("limit, kwargs", [("budget", {"max_budget": 0.035}),
                                           ("tokens", {"max_tokens": 380})])
def test_root_budget_and_tokens_hold_across_remote_children(cluster, limit, kwargs):
    # Every call costs 0.01 and 110 tokens; the root's first turn spends one call and each
    # child three, so the first child (0.04, 440 tokens) already exceeds the root's limit:
    # with one child in flight at a time the others are never started.
    counter = Counter()
    with OpenAICompatibleServer(responder=tree_responder(counter, 0.1)) as srv:
        with RLM(**backend(srv), max_depth=2, subcall_executor="ray",
                 subcall_executor_kwargs={"max_in_flight": 1}, **kwargs) as r:
            try:
                res = r.completion("t" * 30)
                status = str(res.status)
            except RLMError as exc:
                status = str(getattr(exc, "status", type(exc).__name__))
        served = len(srv.requests)
    assert status == limit
    assert counter.peak == 1
    assert served < 1 + 6 * 3  # children past the limit never reached the model


def test_root_timeout_cancels_remote_children(cluster):
    counter = Counter()
    with OpenAICompatibleServer(responder=tree_responder(counter, child_latency=30)) as srv:
        with RLM(**backend(srv), max_depth=2, max_timeout=6, subcall_executor="ray") as r:
            t0 = time.monotonic()
            try:
                res = r.completion("t" * 30)
                status = str(res.status)
            except RLMError as exc:
                status = str(getattr(exc, "status", type(exc).__name__))
            took = time.monotonic() - t0
            counter.release.set()
        # the children were cancelled (ray.cancel, force): no run_child task is left running
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _task_pids(cluster, b"ray::run_child"):
            time.sleep(0.2)
        left = _task_pids(cluster, b"ray::run_child")
    assert status == "timeout"
    assert took < 20
    assert not left


def _task_pids(cluster, title: bytes) -> list[int]:
    out = []
    for pid in cluster.pids():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                out.append(pid)
        except OSError:
            continue
    return out


# -- addresses ------------------------------------------------------------------------------------

def test_every_socket_of_the_cluster_and_the_driver_is_on_loopback(cluster):
    import ray

    pids = cluster.pids()
    assert len(pids) >= 8  # gcs, 2 raylets, agents, workers...
    socks = cluster.sockets(pids + [os.getpid()])
    assert socks
    bad = [s for s in socks if s[2] not in LOOPBACK_IPS or (s[3] and s[3] not in LOOPBACK_IPS)]
    assert not bad, bad
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert ray.get_runtime_context().gcs_address == cluster.address
    ip = machine_address()
    if ip:
        hits = []
        for f in cluster.temp_dir.rglob("*"):
            if f.is_file() and f.stat().st_size < 50_000_000:
                try:
                    if ip.encode() in f.read_bytes():
                        hits.append(str(f))
                except OSError:
                    continue
        assert not hits, f"{ip} appears in {hits[:5]}"
    print(f"\naddresses: {len(socks)} sockets of {len(pids)} cluster processes and the driver, "
          f"all on 127.0.0.1; 2 nodes at 127.0.0.1; {ip or 'no network address'} in no log")


# -- last: a node lost --------------------------------------------------------------------------

def test_a_node_killed_mid_batch_writes_every_line_exactly_once(cluster, tmp_path):
    out = tmp_path / "out.jsonl"
    n = 16
    killed: list[int] = []

    def killer():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            busy = [p for p in _task_pids(cluster, b"ray::run_line")
                    if node_of(cluster, p) == "worker1"]
            if busy and len(srv.requests) >= 3:
                killed.extend(cluster.kill_node("worker1"))
                return
            time.sleep(0.05)

    with OpenAICompatibleServer(responder=answer_length, latency=0.5) as srv:
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        t0 = time.monotonic()
        report = rlm.batch([{"prompt": "k" * k} for k in range(1, n + 1)], output=out,
                           executor="ray", concurrency=6, **backend(srv))
        took = time.monotonic() - t0
        t.join(5)
        served = len(srv.requests)
    assert killed, "no line was seen running on the worker node"
    lines = out.read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert len(lines) == n and sorted(r["index"] for r in recs) == list(range(n))
    assert all(r["status"] == "ok" for r in recs), [r for r in recs if r["status"] != "ok"]
    assert {r["response"] for r in recs} == {f"n={k}" for k in range(1, n + 1)}
    assert report.usage["m"]["total_calls"] == n  # the lost attempts are not counted
    print(f"\nnode kill: worker node ({len(killed)} processes) killed mid-batch; {n} lines, "
          f"{len(lines)} written, each once, all ok; {served} requests served, "
          f"{report.usage['m']['total_calls']} counted; {took:.1f}s")
