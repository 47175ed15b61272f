"""A local emulator (this distribution's tests' own, on 127.0.0.1 only) of the Daytona HTTP APIs
the ``daytona`` SDK uses (point the SDK at it with ``DAYTONA_API_URL``); sandbox commands really
run, each sandbox confined with bubblewrap.

    from daytona_emulator import DaytonaEmulator

    with DaytonaEmulator(api_key="k") as emu:
        os.environ.update(DAYTONA_API_URL=emu.api_url, DAYTONA_API_KEY="k")
        ...  # use the SDK; emu.flow(), emu.requests, emu.fail(...), emu.kill_sandbox(...)
"""

from .server import DaytonaEmulator, Recorded, shared_emulator

__all__ = ["DaytonaEmulator", "Recorded", "shared_emulator"]
