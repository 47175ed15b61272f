"""Gating tests that use a real, paid service ("live" tests) behind ``RLM_LIVE_TESTS=1``.

A plugin for a cloud provider is tested in CI against a local emulator; the same suites can run
against the real service, but only when someone asks for it and has credentials. One marker does
both checks and says, in the skip reason, exactly what to set::

    from rlm_testkit.live import live_only

    pytestmark = live_only("Daytona", ["DAYTONA_API_KEY"])

The flag is read from the process environment; the credentials from ``environ`` (default: the
process environment too), so a test directory that clears the provider's variables at import
(to keep everything else on the emulator) can hand over the values it kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import pytest

#: The variable that turns live tests on (``RLM_LIVE_TESTS=1``); nothing else does.
LIVE_FLAG = "RLM_LIVE_TESTS"


def live_requested() -> bool:
    """Whether live tests were asked for (``RLM_LIVE_TESTS=1`` in the environment)."""
    return os.environ.get(LIVE_FLAG) == "1"


def live_skip_reason(service: str, credentials: Sequence[str] = (), *,
                     environ: Mapping[str, str | None] | None = None,
                     check: Callable[[], str | None] | None = None,
                     hint: str = "") -> str | None:
    """Why live tests of ``service`` cannot run now, or ``None`` when they can.

    Args:
        service: the service's name, as the reason shows it ("Modal").
        credentials: the variables that must all be non-empty (named in every reason).
        environ: where the credentials are looked up (default: ``os.environ``).
        check: a further condition, run last: a reason to skip, or ``None``.
        hint: appended to the reasons about credentials (another way to provide them).
    """
    names = " and ".join(credentials)
    extra = f" ({hint})" if hint else ""
    if not live_requested():
        need = f"{LIVE_FLAG}=1" + (f" and {names}{extra}" if names else "")
        return (f"live {service} tests: set {need} to run them against the real service (they "
                "create real resources on that account; CI never sets them)")
    source = os.environ if environ is None else environ
    missing = [name for name in credentials if not source.get(name)]
    if missing:
        return (f"live {service} tests: {LIVE_FLAG}=1 but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set{extra}")
    return check() if check is not None else None


def live_only(service: str, credentials: Sequence[str] = (), *,
              environ: Mapping[str, str | None] | None = None,
              check: Callable[[], str | None] | None = None,
              hint: str = "") -> pytest.MarkDecorator:
    """A ``skipif`` marker that skips unless live tests of ``service`` can run (see
    :func:`live_skip_reason`); evaluated once, when the module is imported."""
    reason = live_skip_reason(service, credentials, environ=environ, check=check, hint=hint)
    return pytest.mark.skipif(reason is not None, reason=reason or f"live {service} tests")


__all__ = ["LIVE_FLAG", "live_only", "live_requested", "live_skip_reason"]
