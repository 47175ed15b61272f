"""The reply parser on hostile lines: time to find code blocks and FINAL in one reply.

    .venv/bin/python benchmarks/bench_parser.py [--mb 1] [--reference-kb 20]

For each shape (a fence marker followed by a megabyte of tag letters or blanks and a stray
backtick, a megabyte of backticks, of parentheses after ``FINAL(``/``FINAL_VAR(``, a CRLF reply of
many short lines) it prints the parser's time on a line of ``--mb`` megabytes. With
``--reference-kb`` it also times the regular expression the parser used before issue 16 on a line
of that many kilobytes (it is quadratic: 60 KB took 33 s, a megabyte would take hours), and
extrapolates to one megabyte.
"""

from __future__ import annotations

import argparse
import re
import time

from rlm.parsing import find_code_blocks, find_final_answer

SHAPES = {
    "fence + tag letters + `": lambda n: "```" + "a" * n + "`",
    "fence + blanks + `": lambda n: "```" + " " * n + "`",
    "backticks": lambda n: "`" * n + "x`",
    "FINAL_VAR( + ) + x": lambda n: "FINAL_VAR(" + ")" * n + "x",
    "FINAL( + (": lambda n: "FINAL(" + "(" * n,
    "underscores": lambda n: "_" * n + "x",
    "CRLF reply, short lines": lambda n: "```repl\r\n" + "x = 1\r\n" * (n // 7) + "```\r\n",
}

OLD_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})[ \t]*([A-Za-z0-9_+-]*)[^\n`]*$")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=1.0)
    ap.add_argument("--reference-kb", type=int, default=20)
    args = ap.parse_args()
    n = int(args.mb * 1024 * 1024)
    print(f"parser on one {args.mb:g} MB reply line (seconds)")
    for name, make in SHAPES.items():
        text = make(n)
        t = time.perf_counter()
        find_code_blocks(text)
        find_final_answer(text)
        print(f"  {name:28s} {time.perf_counter() - t:9.4f}")
    if args.reference_kb:
        k = args.reference_kb * 1024
        print(f"before issue 16: the fence regex on a {args.reference_kb} KB line (seconds)")
        for name in ("fence + tag letters + `", "fence + blanks + `"):
            line = SHAPES[name](k)
            t = time.perf_counter()
            OLD_OPEN.match(line)
            took = time.perf_counter() - t
            print(f"  {name:28s} {took:9.4f}   (quadratic: ≈ {took * (n / k) ** 2 / 3600:.1f} h "
                  f"at {args.mb:g} MB)")


if __name__ == "__main__":
    main()
