"""Every distribution this repository defines has a name that is ours, and every `rlm*` requirement
names one of them (a stale name such as the kernel's old `rlm-core`, taken on PyPI by an unrelated
project, would make plain pip install that project instead: scripts/ci/pip_install.sh proves it
end to end). The registry check needs a list of PyPI's names (`name<TAB>...` lines, the file named
by RLM_PYPI_NAME_LIST); without one it is skipped."""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAME_LIST = Path(os.environ.get("RLM_PYPI_NAME_LIST", "/work/.library/env/packages/pypi.tsv"))
SKIP = {".venv", "node_modules", "build", "dist", ".git"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _projects() -> dict[str, dict]:
    found = {}
    for path in ROOT.rglob("pyproject.toml"):
        if SKIP & set(path.relative_to(ROOT).parts):
            continue
        project = tomllib.loads(path.read_text()).get("project")
        if project:
            found[_norm(project["name"])] = {"path": path, **project}
    return found


def _requirement_names(project: dict) -> set[str]:
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_norm(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in reqs}


def test_every_rlm_requirement_names_a_distribution_of_this_repository():
    projects = _projects()
    assert {"rlm", "rlm-kernel", "rlm-plugins", "rlm-testkit"} <= set(projects)
    stale = {(str(p["path"].relative_to(ROOT)), name) for p in projects.values()
             for name in _requirement_names(p) if name.startswith("rlm") and name not in projects}
    assert not stale, f"requirements naming no distribution of this repository: {sorted(stale)}"


@pytest.mark.skipif(not NAME_LIST.is_file(), reason="no list of PyPI's names (set RLM_PYPI_NAME_LIST)")
def test_no_distribution_name_is_taken_on_pypi():
    ours = set(_projects())
    taken = set()
    with NAME_LIST.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line[:3].lower() == "rlm":
                name = _norm(line.split("\t", 1)[0])
                if name in ours:
                    taken.add(name)
    assert "rlm-core" not in ours
    assert not taken, f"distribution names already taken on PyPI by other projects: {sorted(taken)}"
