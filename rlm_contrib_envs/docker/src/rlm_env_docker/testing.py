"""For test suites: is a Docker daemon with a usable image here?

``ready()`` returns ``(image, None)`` or ``(None, reason)``. The image is ``RLM_DOCKER_IMAGE``
(default ``rlm-python:3.11-local``), built locally (no registry) when the daemon lacks it.
Suites skip on a reason locally and fail under ``CI=true``:

    image, reason = ready()
    pytestmark = pytest.mark.skipif(reason is not None and os.environ.get("CI") != "true",
                                    reason=reason or "")
"""

from __future__ import annotations

import functools
import os

from .image import DEFAULT_TAG


@functools.lru_cache(maxsize=1)
def ready() -> tuple[str | None, str | None]:
    image = os.environ.get("RLM_DOCKER_IMAGE", DEFAULT_TAG)
    try:
        import docker

        client = docker.from_env(version="auto", timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any reason means: no daemon here
        return None, (f"no Docker daemon reachable ({type(exc).__name__}); scripts/ci/docker.sh "
                      "starts a private one and exports DOCKER_HOST")
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        from .image import build_image

        try:
            build_image(client, tag=image)
        except Exception as exc:  # noqa: BLE001
            return None, f"the test image {image} is missing and could not be built: {exc}"
    finally:
        client.close()
    return image, None


@functools.lru_cache(maxsize=1)
def runsc_registered() -> bool:
    """Whether the daemon :func:`ready` found has gVisor's ``runsc`` runtime registered."""
    if ready()[0] is None:
        return False
    import docker

    client = docker.from_env(version="auto")
    try:
        return "runsc" in (client.api.info().get("Runtimes") or {})
    finally:
        client.close()
