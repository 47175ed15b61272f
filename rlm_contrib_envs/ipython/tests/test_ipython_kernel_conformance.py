"""The shared conformance class and the escape suite, run against ``environment="ipython-kernel"``."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import rlm_env_ipython.plugin
from rlm_testkit.environments import ESCAPE_ATTEMPTS, EnvironmentTests, EscapeTests

pytest.importorskip("ipykernel", reason="mode 'ipython-kernel' needs rlm-env-ipython[kernel]")
pytest.importorskip("jupyter_client", reason="mode 'ipython-kernel' needs rlm-env-ipython[kernel]")

ECHO_REASON = ("IPython echoes a cell's last expression: the kit's last line "
               "sys.stdout.write('raw\\n') returns 4, shown as 'Out[1]: 4'. test_ipython_both_modes.py checks "
               "that exact output, and the kit's exact one with ast_node_interactivity='none'")
SURROGATE_REASON = ("the Jupyter protocol carries a kernel's output as UTF-8 JSON: ipykernel "
                    "replaces a lone surrogate (U+D800-U+DFFF) on stdout with U+FFFD, and one on "
                    "stderr can leave the cell's reply unsent (the kit's check then waits forever): "
                    "a known deviation of ipython-kernel, declared and not run")
_SAME_USER = ("the kernel is an ordinary subprocess of the host, as the host's user with the host's "
              "environment and filesystem: not a security boundary")
# These only search the cell's own process memory for the host's key: the kernel is another
# process, so they run (and must find nothing). Every other attempt succeeds by design.
_MEMORY_ONLY = {"generator-frame-walk", "traceback-frame-walk", "helper-closures", "gc-objects"}


class TestKernelConformance(EnvironmentTests):
    plugin = rlm_env_ipython.plugin
    environment_name = "ipython-kernel"
    capabilities: ClassVar[dict[str, bool]] = {"callables_as_tools": False}

    @pytest.mark.xfail(strict=True, reason=ECHO_REASON)
    def test_output_is_captured(self, env: Any) -> None:
        super().test_output_is_captured(env)

    @pytest.mark.xfail(reason=SURROGATE_REASON, run=False)
    def test_lone_surrogates_cross_and_the_repl_survives(self, env: Any) -> None:
        super().test_lone_surrogates_cross_and_the_repl_survives(env)


class TestKernelEscapes(EscapeTests):
    plugin = rlm_env_ipython.plugin
    environment_name = "ipython-kernel"
    not_blocked: ClassVar[dict[str, str]] = {a.id: _SAME_USER for a in ESCAPE_ATTEMPTS if a.id not in _MEMORY_ONLY}
