"""One benchmark scenario, run in a fresh interpreter of *either* library.

    python _bench_client.py SCENARIO BASE_URL [--size-mb N]

It uses only the API the two libraries share (`from rlm import RLM`, the `openai` backend with a
`base_url`, the `local` environment), so the same file measures `rlm` and `rlms==0.1.3`. It prints
one JSON line: wall time, peak RSS, and the response.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    scenario, base_url = sys.argv[1], sys.argv[2]
    if scenario == "raw300":  # baseline: the same 300 sub-call requests from raw httpx, keep-alive
        import httpx

        body = {"model": "bench-model", "messages": [{"role": "user", "content": "ping"}]}
        with httpx.Client(base_url=base_url, headers={"Authorization": "Bearer bench-key"}) as c:
            for _ in range(300):
                c.post("/chat/completions", json=body).raise_for_status()
            print(json.dumps({"scenario": scenario}))
        return
    size_mb = float(sys.argv[sys.argv.index("--size-mb") + 1]) if "--size-mb" in sys.argv else 0
    t_import = time.perf_counter()
    from rlm import RLM

    import_s = time.perf_counter() - t_import
    kwargs = {"model_name": "bench-model", "base_url": base_url, "api_key": "bench-key"}
    extra = {}
    if scenario == "batch64":
        # rlm bounds fan-out with max_concurrent_subcalls; rlms has no such argument.
        import inspect

        if "max_concurrent_subcalls" in inspect.signature(RLM).parameters:
            extra["max_concurrent_subcalls"] = 16
    rlm = RLM(backend="openai", backend_kwargs=kwargs, environment="local", max_iterations=40, **extra)
    if scenario == "bigctx":
        context = "x" * int(size_mb * 1024 * 1024)
    else:
        context = "benchmark context"
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    result = rlm.completion(context, root_prompt=f"SCENARIO:{scenario}")
    wall = time.perf_counter() - t0
    print(json.dumps({"scenario": scenario, "wall": wall, "import_s": import_s,
                      "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before,
                      "response": str(result.response)[:200]}))


if __name__ == "__main__":
    main()
