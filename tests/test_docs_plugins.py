"""docs/plugins.md, rlm.contract and the kit stay in step (as tests/test_docs_hooks.py does for
the hooks): the environment contract table names every standard test of EnvironmentTests and
every name rlm.contract exports; the kit imports each text constant instead of a copy; the
workers that cannot import rlm keep literal copies that still contain each text; the Environment
section gives interrupt()'s real return type; every backend helper listed exists in rlm.plugin."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import rlm.contract as contract
import rlm.plugin
from rlm.protocols import Environment
from rlm_testkit import environments as kit
from rlm_testkit._core import standard_tests

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "plugins.md").read_text()
TEXTS = ("INPUT_REFUSED", "TRUNCATED", "TIME_LIMIT", "CANCELLED", "TRACEBACK", "CODE_TOOL_FIX")


def _contract_rows() -> list[tuple[str, str, str]]:
    section = DOC.split("#### The environment contract", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("`test_"):
            rows.append((cells[0], cells[1].strip("`"), cells[2].strip("`")))
    return rows


def test_the_contract_table_names_every_environment_test_once() -> None:
    tests = [test for _, _, test in _contract_rows()]
    kit_tests = standard_tests(kit.EnvironmentTests)
    missing, stale = set(kit_tests) - set(tests), set(tests) - set(kit_tests)
    assert not missing and not stale, (
        "docs/plugins.md's environment contract table and EnvironmentTests differ: add a row "
        f"(behaviour | rlm.contract constant | test) for {sorted(missing)}; remove {sorted(stale)}")
    assert len(tests) == len(set(tests))


def test_the_contract_table_names_every_export_of_rlm_contract() -> None:
    named = {constant for _, constant, _ in _contract_rows() if constant}
    assert named <= set(contract.__all__), named - set(contract.__all__)
    assert named == set(contract.__all__), f"not in the table: {set(contract.__all__) - named}"


def test_the_kit_imports_the_texts_rather_than_copying_them() -> None:
    source = inspect.getsource(kit)
    for name in TEXTS:
        value = getattr(contract, name)
        assert getattr(kit, name) is value, f"the kit does not import rlm.contract.{name}"
        assert repr(value) not in source and f'"{value}"' not in source, (
            f"the kit copies the text of {name} instead of using the constant")


def test_workers_that_cannot_import_rlm_still_say_each_text() -> None:
    # The local environment runs on the worker's REPL core: its texts are the worker's.
    for where in ("libs/isolation/src/rlm_isolation/worker.py",
                  "docs/examples/rlm-example-plugin/src/rlm_example"):
        path = ROOT / where
        text = "".join(p.read_text() for p in ([path] if path.is_file() else path.glob("*.py")))
        for name in ("INPUT_REFUSED", "TRUNCATED", "TIME_LIMIT", "CANCELLED"):
            assert getattr(contract, name) in text, f"{where} lost the text of {name}"
    worker = (ROOT / "libs/isolation/src/rlm_isolation/worker.py").read_text()
    assert contract.variable_not_found("%s") in worker  # the worker formats it with %


def test_interrupt_signature_is_the_protocols() -> None:
    assert "`interrupt() -> bool`" in DOC
    assert "interrupt() -> bool" in inspect.getdoc(Environment)
    assert "`interrupt() -> None`" not in DOC


def test_setup_code_is_documented_as_required() -> None:
    assert re.search(r"`setup_code: str \| None = None` \(required of every environment", DOC)


def test_every_backend_helper_listed_exists() -> None:
    import rlm_backend_support

    assert "`BaseBackend` (in `rlm.plugin`)" in DOC and "BaseBackend" in rlm.plugin.__all__
    section = DOC.split("Helpers in `rlm_backend_support` for backend authors", 1)[1].split("\n\n", 2)[1]
    names = re.findall(r"^\* `(\w+)", section, re.M)
    assert {"error_for_status", "error_message_of", "estimated_usage",
            "reported_cost", "parse_retry_after"} <= set(names)
    for name in names:
        assert name in rlm_backend_support.__all__, (
            f"plugins.md lists {name}, which rlm_backend_support does not export")


KIT_ON_THE_EXAMPLE = '''
from rlm_testkit import EnvironmentTests


class TestChildREPL(EnvironmentTests):
    plugin = "child_env.plugin"
    environment_name = "child"
    environment_kwargs = {"memory_limit": None}
    capabilities = {"memory_limit": False, "callables_as_tools": False}
'''


def test_the_isolated_repl_example_passes_the_kit(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    part = DOC.split("#### A process environment from `IsolatedREPL`", 1)[1]
    code = re.search(r"^```python\n(.*?)^```$", part, re.S | re.M).group(1)
    assert "def launch(self, run_dir, secret):" in code and "_launch" not in code
    package = tmp_path / "child_env"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "repl.py").write_text(code)
    (package / "plugin.py").write_text(
        "from rlm.plugin import hookimpl\n\n\n@hookimpl\ndef rlm_register_environments(registrar):\n"
        "    registrar.add('child', 'child_env.repl:ChildREPL')\n")
    (tmp_path / "test_child.py").write_text(KIT_ON_THE_EXAMPLE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_child.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert re.search(r"\b[34]\d passed", tail) and "failed" not in tail, tail
