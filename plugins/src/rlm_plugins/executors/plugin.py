"""Registers the ``threads`` executor. Importing this module imports nothing else."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_executors(registrar):
    registrar.add(
        "threads", "rlm_plugins.executors.threads:ThreadExecutor",
        description="Runs jobs on a pool of threads in this process (the default).",
        aliases=("local",))
