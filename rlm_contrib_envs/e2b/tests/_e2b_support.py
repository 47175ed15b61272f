"""What this directory's tests share: one E2B emulator (the package ``e2b_emulator`` next to
this file) for the whole session, and environment_kwargs that point ``E2BREPL`` at it.

The SDK is pointed at the emulator with explicit connection options, and its environment
variables are cleared, so no test can reach the real service.
"""

from __future__ import annotations

import atexit
import os
import shutil

import pytest
from rlm_testkit.live import live_requested

pytest.importorskip("e2b_code_interpreter", reason="rlm-env-e2b's tests need the E2B SDK "
                    "(pip install -e rlm_contrib_envs/e2b)")

from e2b_emulator import E2BEmulator

#: The real service's settings, kept for the live tests (RLM_LIVE_TESTS=1) before they are
#: cleared from the environment so that nothing else can reach E2B.
LIVE = {name: os.environ.pop(var, None) for name, var in (
    ("api_key", "E2B_API_KEY"), ("domain", "E2B_DOMAIN"), ("api_url", "E2B_API_URL"),
    ("sandbox_url", "E2B_SANDBOX_URL"))}
os.environ.pop("E2B_DEBUG", None)

HAVE_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP and os.environ.get("CI") != "true",
                                 reason="the E2B emulator confines its sandboxes with bubblewrap "
                                        "(scripts/ci/sandbox.sh installs it)")

EMULATOR = E2BEmulator().start()
atexit.register(EMULATOR.close)
if not live_requested():
    # A safety net: code that forgets the explicit URLs still only reaches the emulator.
    os.environ.update({"E2B_API_URL": EMULATOR.api_url, "E2B_SANDBOX_URL": EMULATOR.sandbox_url})


def emulator_kwargs(**extra: object) -> dict[str, object]:
    """environment_kwargs that point E2BREPL at the session's emulator."""
    return {**EMULATOR.connection_kwargs, "memory_limit": "512m", **extra}
