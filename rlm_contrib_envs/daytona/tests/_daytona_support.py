"""Shared by the tests here (a module name of its own: several directories have a conftest).

The emulator is the package ``daytona_emulator`` next to this file. Test classes name the
emulator's URL and key in their ``environment_kwargs`` (never through ``DAYTONA_*`` variables),
so the live tests (``RLM_LIVE_TESTS=1``) keep the real credentials of the environment.
"""

from __future__ import annotations

import os
import shutil

NO_BWRAP = shutil.which("bwrap") is None and os.environ.get("CI") != "true"
BWRAP_REASON = "the Daytona emulator runs sandbox commands under bubblewrap (scripts/ci/sandbox.sh)"

#: The escape attempts a Daytona sandbox does not block, and why (the emulator and the service).
NOT_BLOCKED = {
    "fork": "a Daytona sandbox is a whole Linux machine of the provider's; processes a cell "
            "starts stay inside it",
    "udp-and-raw": "a UDP datagram to 127.0.0.1 can be sent: it reaches the sandbox's own "
                   "loopback (its own network namespace, in the emulator as at Daytona), never "
                   "the host; raw sockets are refused",
    "unprivileged-syscalls": "the sandbox is a machine of the provider's: memory a cell parks "
                             "in memfd or System V IPC is the sandbox's, within its plan, never "
                             "the host's; pidfd_open reaches only the sandbox's own processes",
    "fill-every-writable-place": "the sandbox's filesystem and memory are the provider's (its "
                                 "plan's disk and memory caps), never the host's",
}
