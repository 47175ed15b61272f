"""Checking that a plugin stays cheap to import: loading ``rlm`` and a plugin's ``plugin``
module must not pull in its heavy SDK (that happens when the environment or backend is first
used). The check runs in a fresh interpreter, so what this test process imported does not count::

    from rlm_testkit.imports import packages_imported_by

    def test_the_plugin_does_not_import_the_sdk():
        assert packages_imported_by("import rlm, rlm_env_acme.plugin", ["acme_sdk"]) == []
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


__all__ = ["packages_imported_by"]
