"""scripts/test.sh runs the suite with pytest-xdist and --dist loadgroup: tests that share a
cluster, a daemon or a module-scoped fixture are kept on one worker by their xdist_group. This
checks that the installed pytest and pytest-xdist really do that (pytest 9.2 broke it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")

GROUPED = '''
import pytest

@pytest.mark.xdist_group("one")
@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    pass
'''


def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    out = subprocess.run([sys.executable, "-m", "pytest", "-n", "3", "--dist", "loadgroup", "-v",
                          "-p", "no:cacheprovider", "test_grouped.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    passed = [line for line in out.stdout.splitlines() if " PASSED " in line]
    workers = {line.split()[0] for line in passed}  # "[gw1] [ 16%] PASSED test_grouped.py::..."
    assert len(passed) == 6 and len(workers) == 1, f"the group ran on {sorted(workers)}: {out.stdout[-2000:]}"
