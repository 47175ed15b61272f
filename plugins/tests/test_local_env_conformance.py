"""The shared environment conformance class, run against the local environment."""

from __future__ import annotations

import rlm_plugins.local.plugin
from rlm_testkit.environments import EnvironmentTests


class TestLocalConformance(EnvironmentTests):
    plugin = rlm_plugins.local.plugin
    environment_name = "local"
    capabilities = {"isolated": False, "callables_as_tools": True, "memory_limit": False}


def test_deep_c_recursion_in_a_cell_is_an_error_not_a_dead_host():
    """A cell that raises the recursion limit and recurses through C code (repr of a list nested
    200,000 deep) gets a RecursionError; the host process lives (it died with SIGSEGV)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        from rlm_plugins.local.repl import LocalREPL
        env = LocalREPL()
        env.start(None, {})
        r = env.execute("import sys\\nsys.setrecursionlimit(10**9)\\nl = []\\n"
                        "for _ in range(2_000_000):\\n    l = [l]\\ns = repr(l)")
        print("ERROR:", (r.error or "none").strip().splitlines()[-1])
        r = env.execute("print(sys.getrecursionlimit())")
        print("LIMIT:", r.stdout.strip())
        env.shutdown()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"the host died: {proc.returncode} {proc.stderr[-500:]}"
    assert "ERROR: RecursionError" in proc.stdout
    assert "LIMIT: 50000" in proc.stdout
