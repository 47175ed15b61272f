"""The shared environment conformance class and the escape suite, run on the ``modal``
environment with the real Modal SDK talking to the emulator (``modal_emulator``)."""

from __future__ import annotations

import rlm_env_modal.plugin
from rlm_testkit.environments import EnvironmentTests, EscapeTests

KWARGS = {"app_name": "rlm-conformance", "timeout": 600, "memory_limit": "512m"}

#: What a Modal sandbox allows by design: it is a container of its own (gVisor on Modal), and
#: the boundary is the container, not the process. The worker runs as the image's user (root in
#: Modal's default image) and may start processes inside the sandbox.
MODAL_ALLOWS = {
    "fork": "processes may be started inside the sandbox; they stay in it (the sandbox, not "
            "the worker process, is the boundary)",
    "namespaces-and-mounts": "the worker runs as the image's root user inside the sandbox's own "
                             "user namespace (setuid(0) is a no-op there); the sandbox is the "
                             "boundary",
    "udp-and-raw": "a UDP datagram to 127.0.0.1 is sent, to the sandbox's own loopback (with "
                   "block_network the sandbox has a network of its own with no route out); the "
                   "host's listeners stay unreachable (tcp-socket and lm-relay-without-secret "
                   "are blocked)",
    "unprivileged-syscalls": "the sandbox is a machine of the provider's: memory a cell parks "
                             "in memfd or System V IPC is the sandbox's, within its plan, never "
                             "the host's; pidfd_open reaches only the sandbox's own processes",
    "fill-every-writable-place": "the sandbox's filesystem and memory are the provider's (its "
                                 "plan's disk and memory caps), never the host's",
}


class TestModalConformance(EnvironmentTests):
    plugin = rlm_env_modal.plugin
    environment_name = "modal"
    environment_kwargs = KWARGS
    capabilities = {"isolated": True, "callables_as_tools": False, "memory_limit": True}
    outlives_killed_host = ("a Modal sandbox is terminated by its host; one whose host was killed "
                            "outright runs until its own timeout (KWARGS['timeout'] = 600 s)")


class TestModalEscapes(EscapeTests):
    plugin = rlm_env_modal.plugin
    environment_name = "modal"
    environment_kwargs = {**KWARGS, "disk_limit": "64m"}
    not_blocked = MODAL_ALLOWS
