"""rlm-backend-openai: the ``openai`` and ``azure_openai`` backends for rlm.

The backend classes live in :mod:`rlm_backend_openai.client` and are imported lazily, so that
importing this package (which the plugin loader does) does not import the openai SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import AzureOpenAIBackend, OpenAIBackend

__all__ = ["AzureOpenAIBackend", "OpenAIBackend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'rlm_backend_openai' has no attribute {name!r}")
