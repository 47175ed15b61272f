"""Under pytest-xdist (``--dist loadgroup``) every test here runs on one worker: they share one
Docker daemon, and creating a container reaps the containers of dead hosts, so a test that
checks what a reap removes cannot run beside another test starting containers."""

from __future__ import annotations

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): tests that run on one xdist worker")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.xdist_group("docker"))
