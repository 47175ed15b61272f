"""Repository-wide pytest hooks (loaded for every run inside this checkout, whichever directory it
starts from): the table of skipped groups at the end of a run, and, under pytest-xdist's
``--dist loadgroup`` (scripts/test.sh), each module whose tests share a module- or class-scoped
fixture kept on one worker, so that fixture (a cluster, a container, a sub-run of pytest) is set
up once, not once per worker.

A test skips when something it needs is not on this machine (bubblewrap, a Docker daemon, Pyodide,
Chromium, tmux, Ray) or not asked for (live services). The table groups the skips by their reason
and names the one command that enables each group, so a newcomer sees what did not run without
``-rs``. Skips no command can enable (a capability a plugin does not have, a declared deviation)
are counted on one line. Works with pytest-xdist: the reports are the controller's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

DOCKER_HOST = "export DOCKER_HOST=unix:///tmp/rlm-ci-docker/docker.sock"

#: (group, reason pattern, the command that enables it): the first matching pattern wins.
SKIP_GROUPS: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (group, re.compile(pattern, re.I), command) for group, pattern, command in (
        ("live services", r"\blive\b|RLM_LIVE_TESTS",
         "RLM_LIVE_TESTS=1 and the service's credentials (named in each reason; -rs shows them)"),
        ("docker", r"docker|gvisor|runsc|the test image", f"bash scripts/ci/docker.sh && {DOCKER_HOST}"),
        ("pyodide", r"pyodide|deno", "bash scripts/ci/pyodide.sh"),
        ("bubblewrap", r"bubblewrap|bwrap|setpriv", "bash scripts/ci/sandbox.sh"),
        ("chromium", r"chromium", "bash scripts/ci/chromium.sh"),
        ("tmux", r"tmux", "bash scripts/ci/tmux.sh"),
        ("ray", r"\bray\b", "bash scripts/ci/ray.sh"),
        ("embedded model", r"xllamacpp|weights", "bash scripts/bootstrap.sh"),
        ("PyPI name list", r"list of PyPI", "RLM_PYPI_NAME_LIST=<a name<TAB>... list of PyPI>"),
        ("uv on PATH", r"\buv is needed",
         'PATH="$PWD/.venv/bin:$PATH" bash scripts/test.sh tests/test_third_party_plugin.py'),
        ("python packages", r"not installed|SDK|could not import", "bash scripts/bootstrap.sh"),
    ))


#: Skips no command enables: what a plugin declares it does not have or do.
BY_DESIGN = re.compile(r"^capability '|is off for|declares no|sets no|takes no|cannot produce|"
                       r"does not record|has no interrupt|takes Python callables|"
                       r"in a process of their own|cannot have their own", re.I)


SHARED_SCOPES = {"module", "class", "package"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): tests that run on one xdist worker")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue  # a group of its own (the Ray cluster's)
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d and d[-1].scope in SHARED_SCOPES for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped report gives (``Skipped: `` dropped)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, (tuple, list)) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def skip_group(reason: str) -> tuple[str, str] | None:
    """``(group, command)`` for a skip reason, or ``None``: nothing enables it here."""
    if BY_DESIGN.search(reason):
        return None
    for group, pattern, command in SKIP_GROUPS:
        if pattern.search(reason):
            return group, command
    return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """After pytest's own summary (so the table is the last thing before the final line)."""
    yield
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        write_skip_table(terminalreporter, skipped)


def write_skip_table(terminalreporter: pytest.TerminalReporter,
                     skipped: list[pytest.TestReport]) -> None:
    counts: dict[tuple[str, str], int] = {}
    other = 0
    for report in skipped:
        found = skip_group(skip_reason(report))
        if found is None:
            other += 1
        else:
            counts[found] = counts.get(found, 0) + 1
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0]))  # most first, then by name
    width = max([len(group) for (group, _), _ in rows] + [len("group"), len("by design")])
    terminalreporter.write_sep("=", "skipped groups (the command that enables each)")
    terminalreporter.write_line(f"{'group':<{width}}  {'skipped':>7}  command")
    for (group, command), n in rows:
        terminalreporter.write_line(f"{group:<{width}}  {n:>7}  {command}")
    if other:
        terminalreporter.write_line(
            f"{'by design':<{width}}  {other:>7}  none: capabilities a plugin does not have, "
            "declared deviations (-rs lists them)")
