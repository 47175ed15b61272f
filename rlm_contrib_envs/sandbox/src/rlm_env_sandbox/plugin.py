"""Registers the ``sandbox`` environment. Cheap to import: nothing runs until a run uses it."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_environments(registrar):
    registrar.add(
        "sandbox", "rlm_env_sandbox.env:SandboxREPL",
        description="Long-lived REPL worker under bubblewrap: no network, read-only filesystem, "
                    "private tmpfs, rlimits, cgroup memory/pids caps, seccomp. Needs 'bwrap'.")
