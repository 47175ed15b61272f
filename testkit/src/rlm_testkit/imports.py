"""Checking that a plugin stays cheap to import: loading ``rlm`` and a plugin's ``plugin``
module must not pull in its heavy SDK (that happens when the environment or backend is first
used). The check runs in a fresh interpreter, so what this test process imported does not count::

    from rlm_testkit.imports import packages_imported_by

    def test_the_plugin_does_not_import_the_sdk():
        assert packages_imported_by("import rlm, rlm_env_acme.plugin", ["acme_sdk"]) == []

:func:`third_party_imports` asks the wider question ``BackendTests.test_plugin_module_is_cheap``
asks of every module a distribution's ``rlm`` entry points name: which packages outside the
standard library, ``rlm`` and the plugin's own package does importing it load?
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable

_REPORT = ("\nimport json as _j, sys as _s\n"
           "print(_j.dumps(sorted(m for m in _s.modules if m.split('.')[0] in {packages!r})))")


def packages_imported_by(code: str, packages: Iterable[str], *, timeout: float = 60.0) -> list[str]:
    """The modules of the top-level ``packages`` that running ``code`` in a fresh interpreter (this
    one's executable) leaves imported, sorted; ``[]`` when none.

    Raises:
        AssertionError: ``code`` failed (its stderr is quoted).
    """
    wanted = sorted(set(packages))
    script = code + _REPORT.format(packages=wanted)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise AssertionError(f"the import check's code failed (exit {out.returncode}):\n"
                             f"{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


_THIRD_PARTY = r"""
import importlib, json, sys
import rlm, rlm.plugin
free = set(sys.stdlib_module_names) | {m.split(".")[0] for m in sys.modules} | set(%(allowed)r)
found = {}
for name in %(modules)r:
    before = set(sys.modules)
    importlib.import_module(name)
    own = name.split(".")[0]
    tops = {m.split(".")[0] for m in set(sys.modules) - before}
    found[name] = sorted(t for t in tops - free
                         if t != own and not t.startswith(("rlm", "_")))
print(json.dumps(found))
"""


def third_party_imports(modules: Iterable[str], *, allowed: Iterable[str] = (),
                        timeout: float = 60.0) -> dict[str, list[str]]:
    """``{module: [top-level packages]}``: what importing each of ``modules`` (in order, in one
    fresh interpreter, after ``import rlm, rlm.plugin``) loads beyond the standard library, what
    ``rlm`` already loaded, the module's own top-level package, the project's ``rlm*`` packages
    and ``allowed``. A plugin module that loads an SDK, ``numpy`` or ``httpx`` at import makes
    every ``import rlm`` pay for it; each list should be empty.

    Raises:
        AssertionError: a module failed to import (its stderr is quoted).
    """
    script = _THIRD_PARTY % {"modules": list(dict.fromkeys(modules)),
                             "allowed": sorted(set(allowed))}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise AssertionError(f"importing the plugin modules failed (exit {out.returncode}):\n"
                             f"{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


__all__ = ["packages_imported_by", "third_party_imports"]
