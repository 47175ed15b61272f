"""Registers the ``daytona`` environment.

Cheap to import: neither the Daytona SDK nor the environment is loaded until one is created.
"""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_environments(registrar):
    registrar.add(
        "daytona", "rlm_env_daytona.env:DaytonaREPL",
        description="Long-lived REPL worker in a Daytona cloud sandbox per run (network blocked "
                    "by default), over the SDK's session command logs and stdin; the sandbox is "
                    "deleted at the end. Needs DAYTONA_API_KEY.")
