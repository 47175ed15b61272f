"""The Modal emulator (``modal_emulator`` next to this file) for every test here, and the SDK pointed at it.

One emulator serves the whole directory: ``MODAL_SERVER_URL``, ``MODAL_TOKEN_ID`` and
``MODAL_TOKEN_SECRET`` point the real ``modal`` SDK at it for the session (restored after).
With ``RLM_LIVE_TESTS=1`` the emulator-backed tests are skipped and ``test_modal_live.py`` runs
the suites against the real service with the real credentials.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator

import pytest
from rlm_testkit.live import live_requested

if importlib.util.find_spec("rlm_env_modal") is None or importlib.util.find_spec("modal") is None:
    # Not installed (the `modal` extra): nothing here can be imported, so nothing is collected.
    collect_ignore_glob = ["test_*.py"]

LIVE = live_requested()
NO_BWRAP = shutil.which("bwrap") is None and os.environ.get("CI") != "true"
BWRAP_REASON = "the Modal emulator runs sandboxes under bubblewrap (scripts/ci/sandbox.sh)"


@pytest.fixture(scope="session")
def modal_emulator() -> Iterator[object]:
    if NO_BWRAP:
        pytest.skip(BWRAP_REASON)
    if LIVE:  # the emulator's variables would shadow the real credentials for the session
        pytest.skip("RLM_LIVE_TESTS=1: the suites run against the real service "
                    "(test_modal_live.py), not the emulator")
    from modal_emulator import ModalEmulator

    saved = {k: os.environ.get(k) for k in ("MODAL_SERVER_URL", "MODAL_TOKEN_ID",
                                             "MODAL_TOKEN_SECRET")}
    with ModalEmulator() as emulator:
        os.environ.update(emulator.env)
        try:
            yield emulator
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(autouse=True)
def _emulated(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test but the live ones talks to the emulator; faults a test injected and did not
    use do not leak into the next one."""
    if request.node.get_closest_marker("live") is not None:
        yield
        return
    emulator = request.getfixturevalue("modal_emulator")
    yield
    emulator.clear_faults()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: runs against the real Modal service")
