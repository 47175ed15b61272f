"""The shared environment conformance class and the escape suite, run against E2BREPL with the
real E2B SDK talking to the local emulator."""

from __future__ import annotations

import rlm_env_e2b.plugin
from _e2b_support import emulator_kwargs, needs_bwrap
from rlm_testkit.environments import EnvironmentTests, EscapeTests

pytestmark = needs_bwrap


class TestE2BConformance(EnvironmentTests):
    plugin = rlm_env_e2b.plugin
    environment_name = "e2b"
    environment_kwargs = emulator_kwargs()
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}
    outlives_killed_host = ("an E2B sandbox is killed by its host; one whose host was killed "
                            "outright stops by itself once its lifetime without activity runs "
                            "out (timeout, 600 s by default)")


class TestE2BEscapes(EscapeTests):
    plugin = rlm_env_e2b.plugin
    environment_name = "e2b"
    environment_kwargs = emulator_kwargs(disk_limit="64m")
    not_blocked = {
        "udp-and-raw": "an E2B sandbox has its own network stack: a UDP datagram to 127.0.0.1 "
                       "goes to the sandbox's own loopback, not the host's (raw sockets are "
                       "refused; internet access is off unless allow_internet_access=True)",
        "fork": "an E2B sandbox is a whole VM: cells may start processes inside it (they cannot "
                "leave it; the emulator runs them in the sandbox's pid namespace)",
        "unprivileged-syscalls": "the sandbox is a machine of the provider's: memory a cell "
                                 "parks in memfd or System V IPC is the sandbox's, within its "
                                 "plan, never the host's; pidfd_open reaches only the "
                                 "sandbox's own processes",
        "fill-every-writable-place": "the sandbox's filesystem and memory are the provider's (its "
                                     "plan's disk and memory caps), never the host's",
    }
