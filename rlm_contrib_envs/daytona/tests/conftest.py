"""The per-test Daytona emulator fixture (see ``_daytona_support`` for the shared settings)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _daytona_support import BWRAP_REASON, NO_BWRAP


@pytest.fixture
def emulator() -> Iterator[object]:
    """A fresh emulator of its own (its request record starts empty)."""
    if NO_BWRAP:
        pytest.skip(BWRAP_REASON)
    from daytona_emulator import DaytonaEmulator

    with DaytonaEmulator(api_key="test-key", start_delay=0.0) as emu:
        yield emu
