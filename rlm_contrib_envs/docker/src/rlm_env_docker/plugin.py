"""Registers the ``docker`` environment and the ``rlm docker`` command.

Cheap to import: neither the Docker SDK nor the environment is loaded until used.
"""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_environments(registrar):
    registrar.add(
        "docker", "rlm_env_docker.env:DockerREPL",
        description="Long-lived REPL worker in a container per run: --network none, memory/pids/"
                    "CPU caps, all capabilities dropped, no-new-privileges, non-root, seccomp; "
                    "optional gVisor (runtime='runsc'). Needs a Docker daemon.")


@hookimpl
def rlm_register_commands(registrar):
    registrar.add("docker", "rlm_env_docker.cli:add_docker_parser",
                  description="Build the docker environment's image locally, without a registry.")
