"""Every Python example of docs/getting-started.md that needs no API key runs as written.

An example needs a key when it names a real provider backend; the others use the scripted
backend and must print what their comments say.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "getting-started.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)  # fences on lines of their own


def examples() -> list[str]:
    return [b for b in BLOCK.findall(DOC.read_text()) if 'backend="openai"' not in b]


def test_the_page_has_runnable_examples() -> None:
    assert len(examples()) >= 2


@pytest.mark.parametrize("code", examples(), ids=lambda c: c.splitlines()[0][:40])
def test_example_runs_and_prints_what_it_says(code: str, clean_plugin_env: object) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})
    printed = out.getvalue().splitlines()
    promised = [m.group(1).strip() for line in code.splitlines()
                if line.lstrip().startswith("print(") and (m := re.search(r"#\s*(.+)$", line))]
    for expected in promised:
        assert expected in printed, f"the docs say {expected!r}; the example printed {printed}"
