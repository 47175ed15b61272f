"""The local cloud emulators ``bench_environments.py`` measures ``modal``, ``e2b`` and ``daytona``
against, served from a process of their own.

    python benchmarks/_bench_emulators.py NAME

starts the emulator of ``rlm_contrib_envs/NAME/tests/NAME_emulator`` (the one that distribution's
tests use) on
127.0.0.1, prints one JSON line ``{"env": {...}, "kwargs": {...}}`` -- the environment variables
that point the provider's SDK at it and the ``environment_kwargs`` that do -- and serves until its
stdin is closed. A process of its own, so the emulator's server threads (and its copy of a
streamed context) do not count in the host's CPU time or peak memory, as a provider's servers
would not.

Each emulator is pointed at the way its distribution's tests do it:

* ``modal``: ``MODAL_SERVER_URL`` / ``MODAL_TOKEN_ID`` / ``MODAL_TOKEN_SECRET``
  (``rlm_contrib_envs/modal/tests/conftest.py``);
* ``e2b``: ``api_key`` / ``api_url`` / ``sandbox_url`` kwargs, with ``E2B_API_URL`` /
  ``E2B_SANDBOX_URL`` as a safety net (``rlm_contrib_envs/e2b/tests/_e2b_support.py``);
* ``daytona``: ``api_url`` / ``api_key`` / ``target`` kwargs, sandboxes started at once
  (``start_delay=0``, as ``rlm_contrib_envs/daytona/tests`` do).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: environment name -> (the SDK's import name, the distribution's import name)
EMULATED = {"modal": ("modal", "rlm_env_modal"), "e2b": ("e2b_code_interpreter", "rlm_env_e2b"),
            "daytona": ("daytona", "rlm_env_daytona")}

#: Variables of the providers' SDKs, cleared in the measuring process so nothing but the emulator
#: can be reached.
PROVIDER_PREFIXES = ("MODAL_", "E2B_", "DAYTONA_")


@contextlib.contextmanager
def emulator(name: str) -> Iterator[dict[str, dict[str, str]]]:
    """Run the emulator of ``name``; yield the variables and kwargs that point the SDK at it."""
    tests = str(ROOT / "rlm_contrib_envs" / name / "tests")  # where NAME_emulator lives
    if tests not in sys.path:
        sys.path.insert(0, tests)
    if name == "modal":
        from modal_emulator import ModalEmulator

        with ModalEmulator() as emu:
            yield {"env": dict(emu.env), "kwargs": {"app_name": "rlm-bench"}}
    elif name == "e2b":
        from e2b_emulator import E2BEmulator

        with E2BEmulator() as emu:
            yield {"env": dict(emu.env_vars), "kwargs": dict(emu.connection_kwargs)}
    elif name == "daytona":
        from daytona_emulator import DaytonaEmulator

        key = "bench-" + secrets.token_hex(6)
        with DaytonaEmulator(api_key=key, start_delay=0.0) as emu:
            yield {"env": {"DAYTONA_API_URL": emu.api_url, "DAYTONA_API_KEY": key},
                   "kwargs": {"api_url": emu.api_url, "api_key": key, "target": "us"}}
    else:
        raise ValueError(f"no emulator for {name!r}; emulated: {', '.join(EMULATED)}")


def main() -> None:
    name = sys.argv[1]
    with emulator(name) as settings:
        print(json.dumps(settings), flush=True)
        sys.stdin.read()  # serve until the benchmark closes our stdin


if __name__ == "__main__":
    main()
