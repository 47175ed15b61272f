"""One benchmark scenario, run in a fresh interpreter of *either* library.

    python _bench_client.py SCENARIO BASE_URL [--size-mb N] [--env NAME] [--completions N]

It uses only the API the two libraries share (`from rlm import RLM`, the `openai` backend with a
`base_url`, `environment=...`, `max_depth`, `max_concurrent_subcalls`), so the same file measures
`rlm` and `rlms==0.1.3`. It prints one JSON line: wall time, peak RSS, and the response.

``leak`` is rlm only and needs no server: 1,000 completions (``--completions``) of a three-level
tree (a root, 10 children, 100 grandchildren: 111 runs each) on the in-process ``scripted``
backend, reporting RSS, live gc objects and allocated blocks at intervals.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mb() -> float:
    """The peak RSS of the largest reaped descendant (a sandbox or Deno worker)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def env_settings(env: str, size_mb: float) -> tuple[str, dict]:
    """Environment name and kwargs for the big-context scenario (limits sized to the context)."""
    mem = f"{int(max(2048, size_mb * 3))}m"
    if env == "sandbox":
        return "sandbox", {"memory_limit": mem}
    if env == "docker":
        return "docker", {"memory_limit": mem, "pull": "never",
                          "image": os.environ.get("RLM_DOCKER_IMAGE", "rlm-python:3.11-local")}
    if env == "pyodide":
        return "pyodide", {"memory_limit": f"{int(min(4096, max(2048, size_mb * 3)))}m"}
    return env, {}


LEAK_CELL = ("```repl\nrs = rlm_query_batched(['child ' + context] * 10) "
             "if context.count('child') < 2 else []\nprint(len(rs))\n```")


def leak(completions: int) -> None:
    from rlm import RLM

    def responder(messages):
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        return LEAK_CELL if turn == 0 else "FINAL(done)"

    rlm = RLM(backend="scripted", backend_kwargs={"responder": responder}, environment="local",
              max_depth=3, max_iterations=5, max_concurrent_subcalls=10)
    backend = rlm._default_backend()[0]
    samples = []
    every = max(1, completions // 20)
    t0 = time.perf_counter()
    for i in range(1, completions + 1):
        result = rlm.completion("root")
        assert result.response == "done", result.response
        # The scripted backend keeps every request it saw (tests read them): that record is the
        # benchmark's, not the framework's, so it is dropped before measuring.
        backend.calls.clear()
        backend.sampling.clear()
        if i == 1 or i % every == 0:
            gc.collect()
            samples.append({"completion": i, "s": time.perf_counter() - t0, "rss_mb": rss_mb(),
                            "gc_objects": len(gc.get_objects()),
                            "blocks": sys.getallocatedblocks()})
    rlm.close()
    print(json.dumps({"scenario": "leak", "wall": time.perf_counter() - t0, "samples": samples,
                      "runs_per_completion": 111}))


def main() -> None:
    scenario = sys.argv[1]
    if scenario == "leak":
        leak(int(arg("--completions", "1000")))
        return
    base_url = sys.argv[2]
    if scenario == "raw300":  # baseline: the same 300 sub-call requests from raw httpx, keep-alive
        import httpx

        body = {"model": "bench-model", "messages": [{"role": "user", "content": "ping"}]}
        with httpx.Client(base_url=base_url, headers={"Authorization": "Bearer bench-key"}) as c:
            for _ in range(300):
                c.post("/chat/completions", json=body).raise_for_status()
            print(json.dumps({"scenario": scenario}))
        return
    if scenario == "socket300":  # the floor: the same requests over one raw keep-alive socket
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(base_url)
        body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "ping"}]})
        conn = http.client.HTTPConnection(u.hostname, u.port)
        for _ in range(300):
            conn.request("POST", u.path + "/chat/completions", body,
                         {"Content-Type": "application/json", "Authorization": "Bearer bench-key"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        print(json.dumps({"scenario": scenario}))
        return
    size_mb = float(arg("--size-mb", "0"))
    t_import = time.perf_counter()
    from rlm import RLM

    import_s = time.perf_counter() - t_import
    kwargs = {"model_name": "bench-model", "base_url": base_url, "api_key": "bench-key"}
    extra = {}
    environment, env_kwargs = env_settings(arg("--env", "local"), size_mb)
    if env_kwargs:
        extra["environment_kwargs"] = env_kwargs
    if scenario in ("batch64", "rbatch64"):
        extra["max_concurrent_subcalls"] = 16  # both libraries take it (rlms: default 4)
    if scenario == "rbatch64":
        extra["max_depth"] = 2  # the 64 items are child RLMs, not plain calls
    rlm = RLM(backend="openai", backend_kwargs=kwargs, environment=environment, max_iterations=40,
              **extra)
    rss_before = rss_mb()
    if scenario == "bigctx":
        context = "x" * int(size_mb * 1024 * 1024)
    else:
        context = "benchmark context"
    rss_ctx = rss_mb()
    t0_wall = time.time()
    t0 = time.perf_counter()
    result = rlm.completion(context, root_prompt=f"SCENARIO:{scenario}")
    wall = time.perf_counter() - t0
    peak = peak_rss_mb()
    close = getattr(rlm, "close", None)
    if close is not None:
        close()
    print(json.dumps({"scenario": scenario, "wall": wall, "import_s": import_s, "t0_wall": t0_wall,
                      "peak_rss_mb": peak, "rss_before_mb": rss_before, "rss_ctx_mb": rss_ctx,
                      "children_peak_rss_mb": children_peak_rss_mb(),
                      "response": str(result.response)[:200]}))


if __name__ == "__main__":
    main()
