"""The tutorial's example plugin (docs/examples/rlm-example-plugin) and the tutorial itself.

* Every listing of docs/tutorial.md titled with a file path is that file, byte for byte, and
  every file of the plugin is listed: the tutorial cannot drift from the code CI runs
  (scripts/ci/example_plugin.sh installs the plugin in a fresh venv and runs its kit tests).
* A broken copy of the plugin, made here from the real files by a small patch (wrong usage
  numbers in the backend, an output-capture bug in the environment), fails exactly the kit tests
  that name those bugs and passes all the others.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "rlm-example-plugin"
TUTORIAL = ROOT / "docs" / "tutorial.md"
LISTING = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.S | re.M)

# (file, the correct line, the bug) -- each correct line must occur exactly once.
BUGS = [
    ("src/rlm_example/backend.py",  # counts the reply's tokens as input too
     'counted = Usage(input_tokens=int(usage["prompt_tokens"]),',
     'counted = Usage(input_tokens=int(usage["prompt_tokens"]) + '
     'int(usage.get("completion_tokens") or 0),'),
    ("src/rlm_example/_worker.py",  # stderr ends up in stdout
     "sys.stdout, sys.stderr = out, err",
     "sys.stdout, sys.stderr = out, out"),
]
EXPECTED_FAILURES = {
    "TestMiniChat": {"test_usage_is_reported", "test_async_usage_is_reported",
                     "test_runs_an_rlm_completion"},
    # stderr sent to stdout: the output test fails, and so does the lone-surrogate test, which
    # checks that text printed to each stream arrives in that stream.
    "TestSubREPL": {"test_output_is_captured", "test_lone_surrogates_cross_and_the_repl_survives"},
}


def listings() -> dict[str, str]:
    found: dict[str, str] = {}
    for _lang, path, body in LISTING.findall(TUTORIAL.read_text()):
        assert path not in found, f"docs/tutorial.md lists {path} twice"
        found[path] = body
    return found


def plugin_files() -> list[str]:
    return sorted(str(p.relative_to(EXAMPLE)) for p in EXAMPLE.rglob("*")
                  if p.is_file() and p.suffix in (".py", ".toml")
                  and "__pycache__" not in p.parts and p.name != "__init__.py")


def test_every_tutorial_listing_is_the_real_file() -> None:
    found = listings()
    assert found, "docs/tutorial.md has no listing titled with a file path"
    for path, body in found.items():
        real = EXAMPLE / path
        assert real.is_file(), f"docs/tutorial.md lists {path}, which the example plugin lacks"
        assert body == real.read_text(), (
            f"the listing of {path} in docs/tutorial.md differs from "
            f"docs/examples/rlm-example-plugin/{path}: copy the file into the page again")


def test_the_tutorial_lists_every_file_of_the_plugin() -> None:
    missing = set(plugin_files()) - set(listings())
    assert not missing, f"docs/tutorial.md does not show {sorted(missing)}"


def test_the_tutorial_is_in_the_site_navigation() -> None:
    assert re.search(r"^\s*- .+: tutorial\.md\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)


@pytest.fixture(scope="module")
def broken_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("broken") / "rlm-example-plugin"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name, good, bad in BUGS:
        path = copy / name
        text = path.read_text()
        assert text.count(good) == 1, (
            f"the bug patch for {name} no longer applies: {good!r} occurs {text.count(good)} "
            "times; update BUGS in this test to the plugin's current code")
        path.write_text(text.replace(good, bad))
    return copy


def run_kit(plugin_dir: Path, report: Path) -> dict[str, dict[str, set[str]]]:
    """The plugin's own tests in a subprocess, with ``plugin_dir/src`` first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_dir / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_backend.py", "tests/test_environment.py",
         "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
        capture_output=True, text=True, errors="replace", timeout=300, env=env, cwd=plugin_dir)
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for case in ET.parse(report).getroot().iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        name = case.get("name", "").split("[", 1)[0]
        if case.find("failure") is not None or case.find("error") is not None:
            result[cls]["failed"].add(name)
        elif case.find("skipped") is None:
            result[cls]["passed"].add(name)
    return result


def test_the_real_plugin_passes_the_kit_under_the_same_harness(tmp_path: Path) -> None:
    outcomes = run_kit(EXAMPLE, tmp_path / "report.xml")
    assert set(outcomes) == set(EXPECTED_FAILURES), dict(outcomes)
    for cls, got in outcomes.items():
        assert not got["failed"], f"{cls} fails {sorted(got['failed'])}"
        assert len(got["passed"]) >= 10, got


def test_the_broken_copy_fails_exactly_the_named_kit_tests(broken_copy: Path,
                                                           tmp_path: Path) -> None:
    outcomes = run_kit(broken_copy, tmp_path / "report.xml")
    assert set(outcomes) == set(EXPECTED_FAILURES), dict(outcomes)
    for cls, expected in EXPECTED_FAILURES.items():
        got = outcomes[cls]
        assert got["failed"] == expected, (
            f"{cls}: the kit failed {sorted(got['failed'])}, expected exactly {sorted(expected)}")
        assert len(got["passed"]) >= 10, f"{cls}: the other standard tests did not run: {got}"
        # a test that failed for one parameter passed for none: the whole test names the bug
        assert not (got["failed"] & got["passed"]), got


def test_the_broken_copy_is_what_the_kit_imported(broken_copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(broken_copy / "src")}
    proc = subprocess.run([sys.executable, "-c", "import rlm_example.backend as b; print(b.__file__)"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=broken_copy)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(broken_copy), proc.stdout
