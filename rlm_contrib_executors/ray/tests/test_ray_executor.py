"""The ray executor on a real local cluster: a batch, a fan-out of rlm_query_batched, and a batch
during which a worker process is killed with SIGKILL. The model is a real HTTP server on
127.0.0.1 (rlm_testkit.servers.OpenAICompatibleServer)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

import rlm
from rlm import RLM, PluginManager
from rlm.exceptions import ConfigurationError
from rlm_testkit.servers import OpenAICompatibleServer

import rlm_executor_ray.plugin

LENGTH = re.compile(r"with (\d+) total characters")


def length_of(messages) -> int:
    return int(LENGTH.search(messages[1]["content"]).group(1))


def answer_length(messages, body):
    return "```repl\nFINAL('n=' + str(len(context)))\n```"


def backend(srv):
    return {"backend": "openai", "backend_kwargs": {"model_name": "m", "base_url": srv.base_url,
                                                  "api_key": "test"}}


def test_plugin_registers_ray_lazily():
    import sys

    pm = PluginManager(load_entrypoints=False, strict=True)
    pm.register(rlm_executor_ray.plugin, name="ray")
    assert pm.entry("executor", "ray").target == "rlm_executor_ray.executor:RayExecutor"
    with pytest.raises(ConfigurationError, match="task_cpus"):
        pm.create("executor", "ray", task_cpus=-1)
    assert "rlm_executor_ray.executor" in sys.modules  # built only when created


def test_batch_runs_lines_as_ray_tasks(ray_cluster, tmp_path):
    out = tmp_path / "out.jsonl"
    with OpenAICompatibleServer(responder=answer_length, latency=0.05) as srv:
        report = rlm.batch([{"prompt": "x" * k, "id": k} for k in range(1, 11)], output=out,
                           executor="ray", concurrency=6, ordered=True, **backend(srv))
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["response"] for r in recs] == [f"n={k}" for k in range(1, 11)]
    workers = {r["worker"].rsplit(":", 1)[1] for r in recs}
    assert str(os.getpid()) not in workers  # the lines ran in Ray worker processes
    assert report.succeeded == 10 and report.usage["m"]["total_calls"] == 10
    assert report.executor.startswith("ray (127.0.0.1:")


def fan_out(messages, body):
    if length_of(messages) >= 20:  # the root
        if any("REPL output" in m["content"] for m in messages if m["role"] == "user"):
            return "```repl\nFINAL('|'.join(r))\n```"
        return "```repl\nr = rlm_query_batched(['a', 'bb', 'ccc'])\nprint(r)\n```"
    return "```repl\nimport os\nFINAL(f'{len(context)}@{os.getpid()}')\n```"


def test_rlm_query_batched_children_run_as_ray_tasks(ray_cluster):
    seen = []
    with OpenAICompatibleServer(responder=fan_out) as srv:
        with RLM(**backend(srv), max_depth=2, subcall_executor="ray",
                 on_subcall_complete=lambda d, m, dt, err: seen.append((d, err))) as r:
            res = r.completion("r" * 40)
        n_requests = len(srv.requests)
    answers = res.response.split("|")
    assert [a.split("@")[0] for a in answers] == ["1", "2", "3"]
    assert all(int(a.split("@")[1]) != os.getpid() for a in answers)
    assert seen == [(1, None)] * 3
    # root: 2 turns; each child: 1 turn; all counted once, in the root's usage
    assert res.usage_summary.total_calls == 5 == n_requests


def _run_line_workers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::run_line"):
            pids.append(int(entry.name))
    return pids


def test_a_worker_killed_mid_batch_loses_nothing_and_counts_nothing_twice(ray_cluster, tmp_path):
    out = tmp_path / "out.jsonl"
    n = 16
    killed: list[int] = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            pids = _run_line_workers()
            if pids and len(srv.requests) >= 3:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.05)

    with OpenAICompatibleServer(responder=answer_length, latency=0.4) as srv:
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        report = rlm.batch([{"prompt": "k" * k} for k in range(1, n + 1)], output=out,
                           executor="ray", concurrency=4, **backend(srv))
        t.join(5)
        served = len(srv.requests)
    assert killed, "no Ray worker was found running a line"
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["index"] for r in recs) == list(range(n))  # nothing lost, nothing twice
    assert all(r["status"] == "ok" for r in recs), [r for r in recs if r["status"] != "ok"]
    assert {r["response"] for r in recs} == {f"n={k}" for k in range(1, n + 1)}
    # Usage counted once per line although the killed attempt's request reached the server.
    assert report.usage["m"]["total_calls"] == n
    assert served >= n
    print(f"\nkill test: killed worker {killed[0]}; {n} lines, {served} requests served, "
          f"{report.usage['m']['total_calls']} counted, {report.elapsed:.1f}s")
