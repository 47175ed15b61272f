"""Real third-party distributions, built and installed into the running venv with uv.

``rlm-backend-echo-test`` registers the backend ``echo-test``; ``rlm-broken-plugin-test`` has a
plugin module that raises at import. Every check runs in a fresh interpreter, so discovery goes
through the installed distributions' metadata exactly as for a user. Both distributions are
uninstalled when the module's tests end (and any leftover from a killed run is removed first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

ECHO_DIST = "rlm-backend-echo-test"
ECHO_VERSION = "0.1.0"
ECHO_EP = "echo-test"
BROKEN_DIST = "rlm-broken-plugin-test"
BROKEN_VERSION = "0.0.1"
BROKEN_EP = "broken-test"
MARKER_ENV = "RLM_BROKEN_PLUGIN_TEST_MARKER"

pytestmark = pytest.mark.slow

ECHO_FILES = {
    "pyproject.toml": f"""
        [project]
        name = "{ECHO_DIST}"
        version = "{ECHO_VERSION}"
        description = "A tiny rlm backend that echoes the last user message (test fixture)."
        requires-python = ">=3.11"
        dependencies = ["rlm-kernel"]

        [project.entry-points.rlm]
        {ECHO_EP} = "rlm_backend_echo_test.plugin"

        [build-system]
        requires = ["hatchling>=1.24"]
        build-backend = "hatchling.build"

        [tool.hatch.build.targets.wheel]
        packages = ["src/rlm_backend_echo_test"]
    """,
    "src/rlm_backend_echo_test/__init__.py": '''
        """Echo backend for rlm."""
    ''',
    "src/rlm_backend_echo_test/plugin.py": '''
        """Imported by rlm at start-up: keep it cheap (no SDK, no backend module)."""
        from rlm.plugin import hookimpl


        @hookimpl
        def rlm_register_backends(registrar):
            registrar.add("echo-test", "rlm_backend_echo_test.backend:EchoBackend",
                          description="Replies with the last user message.", aliases=("echo",))
    ''',
    "src/rlm_backend_echo_test/backend.py": '''
        from __future__ import annotations

        from rlm.plugin import ModelResponse, Usage


        class EchoBackend:
            """Implements rlm.protocols.Backend: the reply is the last user message."""

            def __init__(self, model_name: str = "echo-1", prefix: str = ""):
                self.model_name = model_name
                self.prefix = prefix
                self.closed = False

            def completion(self, messages, **sampling):
                last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
                text = self.prefix + str(last)
                usage = Usage(input_tokens=sum(len(str(m.get("content", "")).split()) for m in messages),
                              output_tokens=len(text.split()), cost=0.0)
                return ModelResponse(text=text, usage=usage, model=self.model_name,
                                     finish_reason="stop")

            async def acompletion(self, messages, **sampling):
                return self.completion(messages, **sampling)

            def close(self):
                self.closed = True
    ''',
}

BROKEN_FILES = {
    "pyproject.toml": f"""
        [project]
        name = "{BROKEN_DIST}"
        version = "{BROKEN_VERSION}"
        description = "An rlm plugin whose module raises at import (test fixture)."
        requires-python = ">=3.11"

        [project.entry-points.rlm]
        {BROKEN_EP} = "rlm_broken_plugin_test.plugin"

        [build-system]
        requires = ["hatchling>=1.24"]
        build-backend = "hatchling.build"

        [tool.hatch.build.targets.wheel]
        packages = ["src/rlm_broken_plugin_test"]
    """,
    "src/rlm_broken_plugin_test/__init__.py": "",
    "src/rlm_broken_plugin_test/plugin.py": f'''
        import os

        _marker = os.environ.get("{MARKER_ENV}")
        if _marker:
            with open(_marker, "a") as fh:
                fh.write("imported\\n")
        raise RuntimeError("boom from broken plugin")
    ''',
}


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    uv = shutil.which("uv")
    assert uv is not None
    return subprocess.run([uv, "pip", *args, "-p", sys.executable], capture_output=True,
                          text=True, timeout=600)


def _has_module(name: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True)
    return probe.returncode == 0


@contextlib.contextmanager
def _venv_lock():
    """Serialise test sessions that install into the same venv."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    key = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"rlm-third-party-test-{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Build and install both distributions once; uninstall them when this module is done.

    The scope is the module (the only user) rather than the session, so other test files in
    the same run never see the broken plugin.
    """
    if shutil.which("uv") is None:
        pytest.skip("uv is needed to install the test distributions")
    root = tmp_path_factory.mktemp("third_party")
    echo = _write_tree(root / "echo", ECHO_FILES)
    broken = _write_tree(root / "broken", BROKEN_FILES)
    # With hatchling in the venv, build without isolation (no index needed); otherwise let uv
    # provide hatchling, from its cache first and from PyPI if it must.
    attempts = ([["--no-build-isolation"]] if _has_module("hatchling")
                else [["--offline"], []])
    with _venv_lock():
        _uv("uninstall", ECHO_DIST, BROKEN_DIST)  # leftovers of a killed run
        try:
            errors = []
            for flags in attempts:
                result = _uv("install", "--no-deps", *flags, str(echo), str(broken))
                if result.returncode == 0:
                    break
                errors.append(f"uv pip install {' '.join(flags)}:\n{result.stderr}")
            else:
                pytest.fail("could not install the test distributions:\n" + "\n".join(errors))
            yield {"root": root, "echo": echo, "broken": broken}
        finally:
            result = _uv("uninstall", ECHO_DIST, BROKEN_DIST)
            assert result.returncode == 0, result.stderr


def run_python(code: str, env: dict[str, str] | None = None, *args: str
               ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this venv, with no RLM_* variable inherited."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, *(["-c", textwrap.dedent(code)] if code else []), *args],
                          capture_output=True, text=True, env=full_env, timeout=120)


# Loads the plugins in a fresh interpreter and prints what happened as JSON.
PROBE = """
    import json, sys, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import rlm
        from rlm._loader import RLMPluginWarning
        try:
            pm = rlm.PluginManager()
        except rlm.PluginError as exc:
            print(json.dumps({"raised": type(exc).__name__, "message": str(exc),
                              "distribution": exc.distribution, "plugin": exc.plugin}))
            sys.exit(0)
    print(json.dumps({
        "raised": None,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RLMPluginWarning)],
        "loaded": sorted(p.name for p in pm.loaded),
        "failed": [f.to_dict() for f in pm.failed],
        "skipped": sorted(pm.skipped),
        "broken_module_imported": "rlm_broken_plugin_test.plugin" in sys.modules,
    }))
"""


def probe(env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    out = run_python(PROBE, env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def test_echo_backend_is_found_and_works_in_a_fresh_interpreter(installed):
    out = run_python("""
        import asyncio, json, sys, warnings
        warnings.simplefilter("ignore")
        import rlm
        from rlm.protocols import Backend
        from rlm.types import ModelResponse, Usage
        pm = rlm.PluginManager()
        entry = pm.entry("backend", "echo-test")
        lazy = "rlm_backend_echo_test.backend" not in sys.modules
        backend = pm.create("backend", "echo", model_name="echo-7")
        messages = [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "an answer"},
                    {"role": "user", "content": "say this back"}]
        reply = backend.completion(messages, temperature=0)
        areply = asyncio.run(backend.acompletion(messages))
        backend.close()
        print(json.dumps({
            "entry": entry.to_dict(), "lazy_before_create": lazy,
            "imported_after_create": "rlm_backend_echo_test.backend" in sys.modules,
            "is_backend": isinstance(backend, Backend),
            "types_ok": isinstance(reply, ModelResponse) and isinstance(reply.usage, Usage),
            "text": reply.text, "atext": areply.text, "model": reply.model,
            "usage": [reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.cost],
            "closed": backend.closed,
        }))
    """)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    entry = result["entry"]
    assert entry["name"] == "echo-test" and entry["aliases"] == ["echo"]
    assert entry["plugin"] == ECHO_EP
    assert (entry["distribution"], entry["version"]) == (ECHO_DIST, ECHO_VERSION)
    assert entry["target"] == "rlm_backend_echo_test.backend:EchoBackend"
    assert result["lazy_before_create"] is True and result["imported_after_create"] is True
    assert result["is_backend"] and result["types_ok"]
    assert result["text"] == result["atext"] == "say this back"
    assert result["model"] == "echo-7"
    assert result["usage"] == [9, 3, 0.0]
    assert result["closed"] is True


def test_report_lists_the_distribution_its_version_and_names(installed):
    out = run_python("""
        import json, warnings
        warnings.simplefilter("ignore")
        import rlm
        print(json.dumps(rlm.PluginManager().report()))
    """, {"RLM_DISABLE_PLUGINS": BROKEN_EP})
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["distribution"] == ECHO_DIST]
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == ECHO_EP and row["version"] == ECHO_VERSION
    assert row["status"] == "ok"
    assert row["entry_point"] == "rlm_backend_echo_test.plugin"
    assert row["hooks"] == ["rlm_register_backends"]
    assert row["registered"] == {"backend": ["echo", "echo-test"]}


def _find_rows(node: Any, distribution: str) -> list[dict[str, Any]]:
    """Every dict anywhere in ``node`` whose ``distribution`` is ``distribution``."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("distribution") == distribution:
            found.append(node)
        for value in node.values():
            found.extend(_find_rows(value, distribution))
    elif isinstance(node, list):
        for value in node:
            found.extend(_find_rows(value, distribution))
    return found


def test_cli_plugins_json_lists_the_distribution(installed):
    pytest.importorskip("rlm_cli.cli", reason="the CLI (rlm_cli.cli) is not written yet")
    out = run_python("", {"RLM_DISABLE_PLUGINS": BROKEN_EP}, "-m", "rlm", "plugins", "--json")
    assert out.returncode == 0, out.stderr
    rows = _find_rows(json.loads(out.stdout), ECHO_DIST)
    assert rows, out.stdout
    row = rows[0]
    assert row.get("version") == ECHO_VERSION
    assert "echo-test" in json.dumps(row)


def test_broken_plugin_warns_is_recorded_and_the_others_still_load(installed, tmp_path):
    marker = tmp_path / "imported.txt"
    with_broken, _ = probe({MARKER_ENV: str(marker)})
    assert marker.read_text() == "imported\n"  # the marker works: the module ran and raised
    assert with_broken["raised"] is None
    [warning] = [w for w in with_broken["warnings"] if BROKEN_DIST in w]
    assert f"'{BROKEN_EP}'" in warning and BROKEN_VERSION in warning
    assert "RuntimeError: boom from broken plugin" in warning
    assert f"RLM_DISABLE_PLUGINS={BROKEN_EP}" in warning and f"pip uninstall {BROKEN_DIST}" in warning
    [failure] = [f for f in with_broken["failed"] if f["distribution"] == BROKEN_DIST]
    assert failure["name"] == BROKEN_EP and failure["version"] == BROKEN_VERSION
    assert failure["error"] == "RuntimeError: boom from broken plugin"
    assert failure["entry_point"] == "rlm_broken_plugin_test.plugin"
    assert ECHO_EP in with_broken["loaded"]

    # Everything that loads without the broken plugin also loads with it.
    without_broken, _ = probe({"RLM_DISABLE_PLUGINS": BROKEN_EP})
    assert with_broken["loaded"] == without_broken["loaded"]
    others = [f for f in with_broken["failed"] if f["distribution"] != BROKEN_DIST]
    assert others == without_broken["failed"]


def test_strict_mode_makes_the_broken_plugin_fatal(installed):
    result, _ = probe({"RLM_STRICT_PLUGINS": "1", "RLM_LOAD_PLUGINS": f"{ECHO_EP},{BROKEN_EP}"})
    assert result["raised"] == "PluginError"
    assert result["distribution"] == BROKEN_DIST and result["plugin"] == BROKEN_EP
    assert "boom from broken plugin" in result["message"] and BROKEN_DIST in result["message"]


@pytest.mark.parametrize("selector", [BROKEN_EP, BROKEN_DIST, BROKEN_DIST.replace("-", "_")])
def test_disabled_plugin_is_never_imported(installed, tmp_path, selector):
    marker = tmp_path / "imported.txt"
    result, _ = probe({MARKER_ENV: str(marker), "RLM_DISABLE_PLUGINS": selector,
                       "RLM_STRICT_PLUGINS": "0"})
    assert not marker.exists()
    assert result["broken_module_imported"] is False
    assert BROKEN_EP in result["skipped"]
    assert not [w for w in result["warnings"] if BROKEN_DIST in w]
    assert not [f for f in result["failed"] if f["distribution"] == BROKEN_DIST]
    assert ECHO_EP in result["loaded"]


def test_empty_load_list_loads_nothing(installed, tmp_path):
    marker = tmp_path / "imported.txt"
    result, _ = probe({MARKER_ENV: str(marker), "RLM_LOAD_PLUGINS": ""})
    assert result["loaded"] == [] and result["failed"] == [] and result["warnings"] == []
    assert {ECHO_EP, BROKEN_EP} <= set(result["skipped"])
    assert not marker.exists()


def test_load_list_selects_plugins(installed):
    result, _ = probe({"RLM_LOAD_PLUGINS": ECHO_DIST})
    assert result["loaded"] == [ECHO_EP] and result["failed"] == []


def test_trace_prints_load_lines_to_stderr(installed):
    result, stderr = probe({"RLM_TRACE_PLUGINS": "1"})
    assert ECHO_EP in result["loaded"]
    assert (f"rlm: loaded plugin {ECHO_EP} (distribution {ECHO_DIST} {ECHO_VERSION}) from "
            "rlm_backend_echo_test.plugin in ") in stderr
    assert (f"rlm: failed plugin {BROKEN_EP} (distribution {BROKEN_DIST} {BROKEN_VERSION}): "
            "RuntimeError: boom from broken plugin") in stderr
    _, quiet = probe({"RLM_DISABLE_PLUGINS": BROKEN_EP})
    assert "rlm: loaded plugin" not in quiet
