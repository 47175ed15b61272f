"""Every run in this checkout ends with the table of skipped groups (the root conftest.py): each
group with how many tests it skipped and the command that enables it, with or without xdist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).resolve().parent / "data" / "skip_table_cases.py"


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_run_ends_with_the_skipped_groups_and_their_commands(workers: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *workers, str(CASES)], capture_output=True, text=True, timeout=120,
                         cwd=CASES.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "skipped groups" in line)
    table = lines[start + 1:-1]
    assert table[0].split() == ["group", "skipped", "command"]
    rows = {re.split(r"\s{2,}", row.strip())[0]: re.split(r"\s{2,}", row.strip())[1:]
            for row in table[1:]}
    assert rows["bubblewrap"] == ["3", "bash scripts/ci/sandbox.sh"]
    assert rows["docker"][0] == "1" and rows["docker"][1].startswith("bash scripts/ci/docker.sh")
    assert rows["live services"][0] == "1" and "RLM_LIVE_TESTS=1" in rows["live services"][1]
    assert rows["by design"][0] == "1"
    assert list(rows) == ["bubblewrap", "docker", "live services", "by design"]  # most first, ties by name
    assert "1 passed, 6 skipped" in lines[-1]  # the table comes right before the last line
