"""The embedded default model (backend ``llamacpp``): load time, speed and task success.

    .venv/bin/python benchmarks/bench_embedded_model.py            # set A (12 tasks)
    .venv/bin/python benchmarks/bench_embedded_model.py --set B    # the held-out set
    .venv/bin/python benchmarks/bench_embedded_model.py --tasks count_errors,needle -v
    .venv/bin/python benchmarks/bench_embedded_model.py --profile default   # the kernel's prompt

Prints, for the bundled Qwen2.5-Coder-0.5B-Instruct Q4_K_M (or ``--model-path``):
* weights: time to join the parts into the cache (first run only) and to verify the SHA-256;
* load: time for llama.cpp to load the model and start its server;
* speed: prompt evaluation and generation in tokens/s, from llama.cpp's own timings;
* tasks: small RLM tasks on generated contexts with known answers (set A: 12 the ``small``
  profile was tuned on; set B: 12 held out), each a full ``RLM.completion`` on the local REPL:
  success, turns, status, seconds, and llama.cpp's prompt tokens evaluated and taken from the KV
  cache per call (the evidence that a turn pays only for its new tokens). A task succeeds when
  its answer contains the expected value.

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
    question: str | None  # None: the context is the question (no separate root_prompt)
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


def _csv() -> str:
    rows = ["id,item,amount"] + [f"{i},item{i},{(i * 37) % 50 + 1}" for i in range(1, 21)]
    return "\n".join(rows)


def _text_with(word: str, times: int) -> str:
    other = ["pear", "plum", "grape", "melon", "kiwi", "lime"]
    words = [other[i % 6] for i in range(60)]
    for k in range(times):
        words[k * 7 + 3] = word
    return " ".join(words)


def _warn_log() -> str:
    lines = []
    for i in range(50):
        level = "WARN" if i % 5 == 1 else ("DEBUG" if i % 2 else "INFO")
        lines.append(f"[{level}] worker-{i % 4} step {i} took {(i * 13) % 90} ms")
    return "\n".join(lines)


def _status_csv() -> str:
    rows = ["job,status,seconds"] + [f"job{i},{'failed' if i % 4 == 0 else 'ok'},{i * 3}" for i in range(1, 25)]
    return "\n".join(rows)


#: Set A: the tasks the small profile was tuned on (the issue's kinds: counting, max, sum, word
#: frequency, a needle line, a CSV column, a text's language, a line count, no separate context).
TASKS = [
    Task("count_errors", _log(), "How many lines say ERROR?", "6"),
    Task("config_lookup", "name=billing\nhost=db.internal\nport=5432\nuser=admin\nretries=3",
         "What is the value of port?", "5432"),
    Task("sum_list", [12, 7, 30, 1, 50, 4, 9, 22], "What is the sum of the numbers?", "135"),
    Task("oldest", {"Ana": 31, "Bo": 58, "Cy": 44, "Di": 27}, "Who is the oldest person?", "Bo"),
    Task("needle", _filler(200, 137), "What is the secret code?", "4817"),
    Task("language", "Le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville.",
         "Which language is the text written in?", "French"),
    Task("max_list", [3, 91, 14, 55, 8, 67], "What is the largest number?", "91"),
    Task("line_count", _log(), "How many lines are there?", "40"),
    Task("no_context", "What is 2**100?", None, "1267650600228229401496703205376"),
    Task("csv_column", _csv(), "What is the total of the amount column?",
         str(sum((i * 37) % 50 + 1 for i in range(1, 21)))),
    Task("word_frequency", _text_with("apple", 5), "How many times does the word apple appear?", "5"),
    Task("dict_lookup", {"host": "db.internal", "port": 6543, "user": "admin"}, "What is the value of port?", "6543"),
]

#: Set B: written after set A passed, never tuned on (held out).
HELDOUT = [
    Task("count_warn", _warn_log(), "How many lines are warnings (WARN)?", "10"),
    Task("min_list", [44, 19, 73, 5, 38, 61], "What is the smallest number?", "5"),
    Task("list_len", ["red", "green", "blue", "cyan", "magenta", "yellow", "black", "white", "grey"],
         "How many colours are in the list?", "9"),
    Task("top_city", {"Lyon": 522000, "Paris": 2102000, "Nice": 342000, "Lille": 236000},
         "Which city has the largest population?", "Paris"),
    Task("multiply", "What is 17 * 23?", None, "391"),
    Task("api_key", _filler(120, 64).replace("The secret code is 4817.", "api key: XK-9921"),
         "What is the api key?", "XK-9921"),
    Task("failed_jobs", _status_csv(), "How many jobs have status failed?", "6"),
    Task("word_count", "the quick brown fox jumps over the lazy dog and runs far away",
         "How many words are in the text?", "13"),
    Task("german", "Der Hund schläft im Garten, während die Kinder in der Schule lernen.",
         "Which language is the text written in?", "German"),
    Task("count_worker", _warn_log(), "How many lines mention worker-2?", "12"),
    Task("max_value_key", {"mon": 12, "tue": 31, "wed": 7, "thu": 18}, "Which day has the largest value?", "tue"),
    Task("sum_small", [2, 4, 6, 8, 10], "What is the total of the numbers?", "30"),
]

SETS = {"A": TASKS, "B": HELDOUT, "all": TASKS + HELDOUT}


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
    ap.add_argument("--set", default="A", choices=sorted(SETS),
                    help="A: the tasks the small profile was tuned on; B: held out; all: both")
    ap.add_argument("--tasks", help="comma-separated task names (default: all of the set)")
    ap.add_argument("--profile", default="small", help="prompt profile: small (default) or default")
    ap.add_argument("--prompt-file", help="a system prompt to try instead of the profile")
    ap.add_argument("--model-path", help="a GGUF file instead of the bundled model")
    ap.add_argument("--max-iterations", type=int, default=6)
    ap.add_argument("--task-timeout", type=float, default=150.0,
                    help="max_timeout of each task in seconds (default 150)")
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
    for task in SETS[args.set]:
        if wanted and task.name not in wanted:
            continue
        turns: list[int] = []
        sampling = {} if args.temperature is None else {"temperature": args.temperature, "seed": 7}
        rlm = RLM(backend="llamacpp", backend_kwargs=kwargs, max_iterations=args.max_iterations,
                  verbose=args.verbose, sampling_args=sampling, max_timeout=args.task_timeout,
                  on_iteration_complete=lambda *a, turns=turns, **k: turns.append(1))
        timings = rlm._default_backend()[0].timings  # llama.cpp's per-call timings
        timings.clear()
        # Share the already-running server: the backend instance is per RLM, the server per process.
        t0 = time.perf_counter()
        error = None
        try:
            result = rlm.completion(task.context, root_prompt=task.question)
            answer, usage, status = result.response, result.usage_summary, result.status.value
        except Exception as exc:  # noqa: BLE001 - a failed task is a data point
            answer, usage, error = getattr(exc, "partial_answer", None), None, f"{type(exc).__name__}: {exc}"
            status = str(getattr(exc, "status", "error"))
        finally:
            rlm.close()
        seconds = time.perf_counter() - t0
        ok = task.check(answer)
        evaluated = [t.get("prompt_n") for t in timings]  # prompt tokens evaluated per call
        cached = [t.get("cache_n") for t in timings]  # prompt tokens taken from the KV cache
        rows.append({"task": task.name, "ok": ok, "seconds": round(seconds, 1), "turns": len(turns),
                     "status": status, "prompt_evaluated": evaluated, "prompt_cached": cached,
                     "input_tokens": usage.total_input_tokens if usage else None,
                     "output_tokens": usage.total_output_tokens if usage else None,
                     "answer": (answer or "")[:80], "expected": task.expected, "error": error})
        print(f"task {task.name:14s} {'OK  ' if ok else 'FAIL'} {seconds:6.1f} s  turns={len(turns)}  "
              f"{status:14s} evaluated/cached per call={list(zip(evaluated, cached, strict=True))}  "
              f"answer={(answer or '')[:60]!r}  expected={task.expected!r}"
              + (f"  error={error[:120]}" if error else ""), flush=True)
    solved = sum(r["ok"] for r in rows)
    report["tasks"] = rows
    report["solved"] = f"{solved}/{len(rows)}"
    if rows:
        report["median_task_seconds"] = round(statistics.median(r["seconds"] for r in rows), 1)
        at_limit = sum(r["status"] != "completed" for r in rows)
        report["not_completed"] = at_limit
        print(f"set {args.set}: solved {solved}/{len(rows)}; median {report['median_task_seconds']} s "
              f"per task; {at_limit} not completed (a limit); machine: {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
