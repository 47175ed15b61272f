"""Registers the ``portkey`` backend with rlm. Cheap to import: the factory is a string."""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "portkey", "rlm_backend_portkey.client:PortkeyBackend",
        description="The Portkey AI gateway ('@provider/model' names, virtual keys, configs; "
                    "key: api_key or PORTKEY_API_KEY)")
