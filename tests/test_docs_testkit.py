"""docs/testkit.md stays true: its opening example runs as written and passes, and its reference
section ("The standard tests, by class") is exactly what the kit classes say (every class, every
setting, every capability, every standard test, inherited ones included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from rlm_testkit import _reference
from rlm_testkit._core import standard_tests

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "testkit.md"
EXAMPLE_SRC = ROOT / "docs" / "examples" / "rlm-example-plugin" / "src"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def test_reference_section_matches_the_kit() -> None:
    text = DOC.read_text()
    assert _reference.HEADING in text, f"docs/testkit.md lost its heading {_reference.HEADING!r}"
    section = text[text.index(_reference.HEADING):]
    assert section == _reference.render(), (
        "docs/testkit.md's reference differs from the kit: replace everything from "
        f"{_reference.HEADING!r} on with the output of `python -m rlm_testkit._reference`")


def test_every_standard_test_of_every_class_is_listed() -> None:
    section = DOC.read_text().split(_reference.HEADING, 1)[1]
    for cls in _reference.kit_classes():
        part = section.split(f"### `{cls.__name__}`", 1)[1].split("\n### ", 1)[0]
        listed = re.findall(r"^\* `(test_\w+)`", part, re.M)
        assert listed == standard_tests(cls), cls.__name__
        assert "| capability |" in part or "Capabilities: none." in part, cls.__name__


def test_opening_example_runs_as_written(tmp_path: Path) -> None:
    example = BLOCK.search(DOC.read_text()).group(1)
    assert example.startswith("# tests/test_conformance.py")
    (tmp_path / "test_conformance.py").write_text(example)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLE_SRC), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_conformance.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error|errors)", tail)}
    assert counts.get("passed", 0) >= 30 and not counts.get("failed") and not counts.get("error"), tail
