"""The viewer opening a run with 1,000 sub-calls.

    .venv/bin/python benchmarks/bench_viewer.py [--subcalls 1000]

A real run (scripted backend, the real loop) whose first cell makes N llm sub-calls through
llm_query_batched and one rlm_query child, recorded by the store sink; then, against
`rlm view`'s server on 127.0.0.1: the JSON API for the whole tree, and headless Chromium opening
the run page until every sub-call row is on screen, searching it, and expanding everything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subcalls", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from _browser import Browser, find_chromium
    from _trajectories import run_completion

    from rlm_plugins.store.db import Database
    from rlm_plugins.viewer.server import Viewer, make_server

    with tempfile.TemporaryDirectory() as d:
        db_path = Path(d) / "logs.db"
        t = time.perf_counter()
        _, sink = run_completion(db_path, n_llm=args.subcalls)
        print(f"recorded a run with {args.subcalls:,} llm sub-calls + 1 child run in "
              f"{time.perf_counter() - t:.2f}s ({db_path.stat().st_size / 1e6:.1f} MB)")
        run_id = sink.run_ids[0]
        server = make_server(Viewer(Database(db_path), label="bench"), port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        times, size = [], 0
        for _ in range(args.repeat):
            t = time.perf_counter()
            body = urllib.request.urlopen(f"{base}/api/runs/{run_id}").read()
            times.append(time.perf_counter() - t)
            size = len(body)
        n = sum(len(c["subcalls"]) for it in json.loads(body)["iterations"] for c in it["cells"])
        print(f"GET /api/runs/ID (whole tree, {n:,} sub-calls, {size / 1e6:.2f} MB JSON): "
              f"{statistics.median(times) * 1000:.0f} ms median of {args.repeat}")
        exe = find_chromium()
        if exe is None:
            print("chromium not installed: browser timings skipped")
            return
        b = Browser(exe)
        try:
            opens = []
            for i in range(args.repeat):
                b.goto("about:blank")
                t = time.perf_counter()
                b.send("Page.navigate", url=f"{base}/?r={i}#/run/{run_id}")
                b.wait(f"document.querySelectorAll('#tree .subcall').length >= {n}", timeout=60)
                opens.append(time.perf_counter() - t)
            print(f"open the run page until all {n:,} sub-call rows are shown: "
                  f"{statistics.median(opens) * 1000:.0f} ms median of {args.repeat} (min {min(opens) * 1000:.0f})")
            t = time.perf_counter()
            b.js("document.querySelector('#search').value = 'part 777'; "
                 "document.querySelector('#search').dispatchEvent(new Event('input'))")
            b.wait("document.querySelector('.node.focus')", timeout=30)
            print(f"search 'part 777' and open the hit: {(time.perf_counter() - t) * 1000:.0f} ms "
                  "(includes the 150 ms typing debounce)")
            t = time.perf_counter()
            b.click("#expand-all")
            b.wait("document.querySelectorAll('#tree .subcall .node-body').length >= " + str(n), timeout=60)
            print(f"expand all ({n:,} prompts and responses rendered): {(time.perf_counter() - t) * 1000:.0f} ms")
        finally:
            b.close()
            server.shutdown()


if __name__ == "__main__":
    main()
