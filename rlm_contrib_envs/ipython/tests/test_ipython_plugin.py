"""Registration: both names through the installed entry point, and cheap to load."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import rlm_env_ipython.plugin
from rlm_testkit.helpers import isolated_plugin_manager


def test_both_names_are_registered() -> None:
    pm = isolated_plugin_manager(rlm_env_ipython.plugin)
    assert {"ipython", "ipython-kernel"} <= set(pm.names("environment"))


def test_loading_the_plugins_imports_neither_ipython_nor_jupyter() -> None:
    code = textwrap.dedent("""
        import sys
        import rlm
        pm = rlm.get_plugin_manager()
        names = pm.names("environment")
        assert "ipython" in names and "ipython-kernel" in names, names
        heavy = sorted(m for m in ("IPython", "ipykernel", "jupyter_client", "zmq")
                       if m in sys.modules)
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
