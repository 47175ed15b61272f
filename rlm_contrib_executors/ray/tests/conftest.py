"""One two-node Ray cluster for the session, started the way a user starts one (`ray start
--head`, then `ray start --address` for a worker node), every process on 127.0.0.1, token
authentication on. The test process connects to it through RayExecutor (address + auth_token),
so every test that builds a ray executor without an address reuses that connection."""

from __future__ import annotations

import os

import pytest

# Read by Ray at import time: the driver's own node address stays 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): tests that run on one xdist worker")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``) every test here runs on one worker: one cluster
    for the session, not one per worker (two clusters would share the machine's two cores)."""
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    pytest.importorskip("ray")
    from rlm_executor_ray.executor import RayExecutor
    from rlm_executor_ray.testing import LocalCluster

    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        os.environ.pop(var, None)
    c = LocalCluster(tmp_path_factory.mktemp("ray-cluster"), workers=1)
    c.start()
    driver = None
    try:
        driver = RayExecutor(c.address, auth_token=c.token)
        c.driver = driver
        yield c
    finally:
        import ray

        if driver is not None:
            driver.close()
        ray.shutdown()
        c.stop()
        left = c.pids()
        assert not left, f"Ray processes left behind: {left}"


@pytest.fixture(scope="session")
def ray_cluster(cluster):
    import ray

    return ray
