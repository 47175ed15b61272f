"""Registration: both names through the installed entry point, and cheap to load."""

from __future__ import annotations

import textwrap

import rlm_env_ipython.plugin
from rlm_testkit.helpers import isolated_plugin_manager
from rlm_testkit.imports import packages_imported_by


def test_both_names_are_registered() -> None:
    pm = isolated_plugin_manager(rlm_env_ipython.plugin)
    assert {"ipython", "ipython-kernel"} <= set(pm.names("environment"))


def test_loading_the_plugins_imports_neither_ipython_nor_jupyter() -> None:
    code = textwrap.dedent("""
        import rlm
        pm = rlm.get_plugin_manager()
        names = pm.names("environment")
        assert "ipython" in names and "ipython-kernel" in names, names
    """)
    assert packages_imported_by(code, ["IPython", "ipykernel", "jupyter_client", "zmq"]) == []
