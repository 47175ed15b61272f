"""The kernel reaches the CLI only by name, at call time: ``python -m rlm`` and ``rlm.batch``
work with rlm-cli installed and say what to install without it."""

from __future__ import annotations

import subprocess
import sys

# Makes `import rlm_cli` fail as it does when the distribution is not installed.
BLOCK = "import sys; sys.modules['rlm_cli'] = None; "


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_python_m_rlm_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "rlm", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("rlm "), out.stderr


def test_python_m_rlm_without_the_cli_names_the_distribution() -> None:
    out = _python(BLOCK + "import runpy; runpy.run_module('rlm', run_name='__main__')")
    assert out.returncode == 1
    assert "pip install rlm-cli" in out.stderr and "Traceback" not in out.stderr


def test_rlm_batch_is_the_clis_and_names_it_when_missing() -> None:
    import rlm
    import rlm_cli

    assert rlm.batch is rlm_cli.batch
    out = _python(BLOCK + "import rlm\ntry:\n    rlm.batch\nexcept ImportError as e:\n    print(e)")
    assert "rlm-cli" in out.stdout and "pip install rlm-cli" in out.stdout, out.stdout + out.stderr


def test_the_kernel_alone_does_not_import_the_cli() -> None:
    out = _python("import sys, rlm, rlm.plugin, rlm.settings; from rlm import RLM; "
                  "print(sorted(m for m in sys.modules if m.startswith('rlm_')))")
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
