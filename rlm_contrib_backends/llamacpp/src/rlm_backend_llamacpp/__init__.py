"""rlm-backend-llamacpp: the embedded offline default model of rlm (backend ``llamacpp``).

The backend class lives in :mod:`rlm_backend_llamacpp.backend` and is imported lazily, so that
importing this package (which the plugin loader does) imports neither ``xllamacpp`` nor
``openai``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .backend import LlamaCppBackend

__all__ = ["LlamaCppBackend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'rlm_backend_llamacpp' has no attribute {name!r}")
