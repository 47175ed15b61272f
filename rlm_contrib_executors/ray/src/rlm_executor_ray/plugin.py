"""Registers the ``ray`` executor. Importing this module does not import Ray."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_executors(registrar):
    registrar.add(
        "ray", "rlm_executor_ray.executor:RayExecutor",
        description="Runs jobs as Ray tasks: a local cluster, or an existing one (address=).")
