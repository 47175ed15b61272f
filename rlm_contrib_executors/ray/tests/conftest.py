"""One local Ray cluster for the session: 2 CPUs, listening on 127.0.0.1 only."""

from __future__ import annotations

import os

import pytest

# Read by Ray at import time: every socket of the local cluster binds to the loopback interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
