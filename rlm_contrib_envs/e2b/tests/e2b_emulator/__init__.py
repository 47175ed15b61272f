"""An emulator of the E2B HTTP APIs (control plane and the in-sandbox ``envd``) for tests: the
real ``e2b`` SDK talks to it on 127.0.0.1, and sandboxes are local bubblewrap jails.

    with E2BEmulator() as emu:
        sandbox = Sandbox.create(**emu.connection_kwargs)
        ...
        assert emu.ops(sandbox.sandbox_id)[:2] == ["create", "upload"]
"""

from .server import DEFAULT_KEY, E2BEmulator, Recorded

__all__ = ["DEFAULT_KEY", "E2BEmulator", "Recorded"]
