"""``rlm-env-docker build-image`` (also ``rlm docker build-image``): the image, without a registry."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .image import DEFAULT_TAG


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="docker_command", metavar="COMMAND")
    b = sub.add_parser(
        "build-image", help="build a Python image from this machine's interpreter (no registry)",
        description="Builds a minimal image (the interpreter, its standard library, the shared "
                    "libraries they load, /etc/passwd with nobody, /tmp) from this machine's "
                    "Python and imports it into the Docker daemon. Nothing is pulled.")
    b.add_argument("--tag", default=DEFAULT_TAG, help=f"image name (default {DEFAULT_TAG})")
    b.add_argument("--python", default=None,
                   help="the interpreter to copy (default /usr/bin/python3 if usable, else this one)")
    b.add_argument("--base-url", default=None, help="the daemon (default DOCKER_HOST)")
    b.set_defaults(func=cmd_build_image)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)


def cmd_build_image(args: Any) -> int:
    from rlm.exceptions import RLMEnvironmentError

    from .env import connect
    from .image import ImageBuildError, build_image

    try:
        client = connect(args.base_url, timeout=300)
        info = build_image(client, tag=args.tag, python=args.python)
    except (RLMEnvironmentError, ImageBuildError) as exc:
        print(f"rlm-env-docker: {exc}", file=sys.stderr)
        return 1
    print(f"built {info['tag']} ({info['id'][:19]}): Python {info['python']} from "
          f"{info['interpreter']}, {info['libraries']} shared libraries, "
          f"{info['bytes'] / 2**20:.0f} MiB, in {info['seconds']:.1f} s")
    print(f"use it with environment='docker', environment_kwargs={{'image': '{info['tag']}'}}")
    return 0


def add_docker_parser(subparsers: Any) -> None:
    """The ``rlm docker`` subcommand (through the rlm_register_commands hook)."""
    _configure(subparsers.add_parser("docker", help="the docker environment's tools",
                                     description="Tools of the docker environment."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlm-env-docker",
                                     description="Tools of rlm's docker environment.")
    _configure(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
