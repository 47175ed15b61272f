"""The embedded default model (backend ``llamacpp``): load time, speed and task success.

    .venv/bin/python benchmarks/bench_embedded_model.py            # all six tasks
    .venv/bin/python benchmarks/bench_embedded_model.py --tasks count_errors,needle -v
    .venv/bin/python benchmarks/bench_embedded_model.py --profile default   # the kernel's prompt

Prints, for the bundled Qwen2.5-Coder-0.5B-Instruct Q4_K_M (or ``--model-path``):
* weights: time to join the parts into the cache (first run only) and to verify the SHA-256;
* load: time for llama.cpp to load the model and start its server;
* speed: prompt evaluation and generation in tokens/s, from llama.cpp's own timings;
* tasks: six small RLM tasks with known answers, each a full ``RLM.completion`` on the local REPL:
  success, turns, tokens, seconds. A task succeeds when its answer contains the expected value.

It is a plumbing-and-demo model: expect some failures; the point is to measure, not to pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Task:
    name: str
    context: Any
    question: str
    expected: str

    def check(self, answer: str | None) -> bool:
        if not answer:
            return False
        if re.fullmatch(r"-?\d+", self.expected):
            return self.expected in re.findall(r"-?\d+", answer.replace(",", ""))
        return self.expected.lower() in answer.lower()


def _log() -> str:
    lines = []
    for i in range(40):
        level = "ERROR" if i % 7 == 3 else "INFO"
        lines.append(f"2026-03-0{i % 9 + 1} 10:{i:02d} {level} svc{i % 3}: event {i}")
    return "\n".join(lines)


def _filler(n: int, needle_at: int) -> str:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    lines = [" ".join(words[(i + k) % 8] for k in range(6)) + f" {i}." for i in range(n)]
    lines[needle_at] = "The secret code is 4817."
    return "\n".join(lines)


TASKS = [
    Task("count_errors", _log(), "How many lines say ERROR?", "6"),
    Task("config_lookup", "name=billing\nhost=db.internal\nport=5432\nuser=admin\nretries=3",
         "What is the value of port?", "5432"),
    Task("sum_list", [12, 7, 30, 1, 50, 4, 9, 22], "What is the sum of the numbers?", "135"),
    Task("oldest", {"Ana": 31, "Bo": 58, "Cy": 44, "Di": 27}, "Who is the oldest person?", "Bo"),
    Task("needle", _filler(200, 137), "What is the secret code?", "4817"),
    Task("language", "Le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville.",
         "Which language is the text written in?", "French"),
]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure_speed(backend: Any) -> dict[str, float]:
    """Prompt-eval and generation speed from llama.cpp's own timings (raw HTTP, no cache)."""
    import httpx

    server = backend.server
    prompt = ("Write a Python function that returns the n-th Fibonacci number, with a docstring "
              "and two examples. ") * 4
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 128,
            "temperature": 0, "cache_prompt": False}
    r = httpx.post(server.base_url + "/chat/completions", json=body, timeout=600,
                   headers={"Authorization": f"Bearer {server.api_key}"})
    r.raise_for_status()
    t = r.json()["timings"]
    return {"prompt_tokens": t["prompt_n"], "prompt_tok_s": round(t["prompt_per_second"], 1),
            "gen_tokens": t["predicted_n"], "gen_tok_s": round(t["predicted_per_second"], 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", help="comma-separated task names (default: all)")
    ap.add_argument("--profile", default="small", help="prompt profile: small (default) or default")
    ap.add_argument("--prompt-file", help="a system prompt to try instead of the profile")
    ap.add_argument("--model-path", help="a GGUF file instead of the bundled model")
    ap.add_argument("--max-iterations", type=int, default=6)
    ap.add_argument("--temperature", type=float, default=None,
                    help="sampling temperature (default: the backend's, 0)")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("-v", "--verbose", action="store_true", help="show every turn")
    args = ap.parse_args(argv)

    from rlm import RLM
    from rlm_backend_llamacpp import weights
    from rlm_backend_llamacpp.backend import LlamaCppBackend

    report: dict[str, Any] = {}
    if not args.model_path:
        target = weights.cache_dir() / weights.BUNDLED.file_name
        fresh = not target.exists()
        _, t = _timed(weights.ensure_bundled)
        report["weights"] = {"joined": fresh, "seconds": round(t, 2), "path": str(target)}
        print(f"weights: {'joined and verified' if fresh else 'verified'} {target} in {t:.2f} s")

    kwargs: dict[str, Any] = {"prompt_profile": args.profile}
    if args.model_path:
        kwargs["model_path"] = args.model_path
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as fh:
            kwargs["system_prompt"] = fh.read()
    backend = LlamaCppBackend(**kwargs)
    _, t = _timed(backend.start)
    report["load_seconds"] = round(backend.server.load_seconds or t, 2)
    print(f"load: {backend.model_name} in {report['load_seconds']:.2f} s "
          f"(n_ctx={backend.n_ctx}, threads={backend.server.config.n_threads})")
    speed = measure_speed(backend)
    report["speed"] = speed
    print(f"speed: prompt {speed['prompt_tok_s']} tok/s ({speed['prompt_tokens']} tokens), "
          f"generation {speed['gen_tok_s']} tok/s ({speed['gen_tokens']} tokens)")

    wanted = set(args.tasks.split(",")) if args.tasks else None
    rows = []
    for task in TASKS:
        if wanted and task.name not in wanted:
            continue
        turns = []
        sampling = {} if args.temperature is None else {"temperature": args.temperature, "seed": 7}
        rlm = RLM(backend="llamacpp", backend_kwargs=kwargs, max_iterations=args.max_iterations,
                  verbose=args.verbose, sampling_args=sampling, on_iteration_complete=lambda *a, **k: turns.append(1))
        # Share the already-running server: the backend instance is per RLM, the server per process.
        t0 = time.perf_counter()
        error = None
        try:
            result = rlm.completion(task.context, root_prompt=task.question)
            answer, usage = result.response, result.usage_summary
        except Exception as exc:  # noqa: BLE001 - a failed task is a data point
            answer, usage, error = getattr(exc, "partial_answer", None), None, f"{type(exc).__name__}: {exc}"
        finally:
            rlm.close()
        seconds = time.perf_counter() - t0
        ok = task.check(answer)
        rows.append({"task": task.name, "ok": ok, "seconds": round(seconds, 1), "turns": len(turns),
                     "input_tokens": usage.total_input_tokens if usage else None,
                     "output_tokens": usage.total_output_tokens if usage else None,
                     "answer": (answer or "")[:80], "expected": task.expected, "error": error})
        print(f"task {task.name:14s} {'OK  ' if ok else 'FAIL'} {seconds:6.1f} s  turns={len(turns)}  "
              f"answer={(answer or '')[:60]!r}  expected={task.expected!r}"
              + (f"  error={error[:120]}" if error else ""), flush=True)
    solved = sum(r["ok"] for r in rows)
    report["tasks"] = rows
    report["solved"] = f"{solved}/{len(rows)}"
    if rows:
        report["median_task_seconds"] = round(statistics.median(r["seconds"] for r in rows), 1)
        print(f"solved {solved}/{len(rows)}; median {report['median_task_seconds']} s per task; "
              f"machine: {os.cpu_count()} cores")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
