"""Bug: the plugin module (what the entry point names) imports an HTTP library at import time,
so every ``import rlm`` that loads plugins pays for it. It registers the correct backend."""

import httpx  # noqa: F401 - the bug: this belongs in the backend module, imported on use
from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add("good", "broken_impl:GoodBackend", description="a correct backend")
