"""Everything a plugin author imports: the hook marker, the registrar, the protocols, the types.

    from rlm.plugin import hookimpl

    @hookimpl
    def rlm_register_backends(registrar):
        registrar.add("mybackend", "my_pkg.client:MyBackend", description="...")

See ``docs/plugins.md`` for every hook. What backends share (retries, error mapping, prices,
secrets, usage estimates) is in the ``rlm-backend-support`` distribution (``rlm_backend_support``).
"""

from __future__ import annotations

from ._base import BaseBackend, estimate_tokens
from ._hookspecs import ENTRY_POINT_GROUP, KNOWN_DISTRIBUTIONS, hookimpl, hookspec
from ._loader import iter_entry_points
from ._registrar import PluginEntry, Registrar
from .exceptions import (AuthenticationError, BackendConnectionError, BackendError,
                         BackendTimeoutError, BadResponseError, ConfigurationError,
                         ContextWindowExceededError, PluginError, RateLimitError,
                         RLMEnvironmentError, ServerError)
from .protocols import (Backend, CompactionStrategy, Environment, Executor, ExecutorRun, Host,
                        LoggerSink, ToolProvider)
from .types import (CellResult, EnvironmentCapabilities, Message, ModelResponse, Tool, Usage)

__all__ = [
    "ENTRY_POINT_GROUP", "KNOWN_DISTRIBUTIONS", "iter_entry_points", "AuthenticationError", "Backend", "BaseBackend",
    "estimate_tokens", "BackendConnectionError",
    "BackendError", "BackendTimeoutError", "BadResponseError", "CellResult", "CompactionStrategy",
    "ConfigurationError", "ContextWindowExceededError", "Environment", "EnvironmentCapabilities",
    "Executor", "ExecutorRun",
    "Host", "LoggerSink", "Message", "ModelResponse", "PluginEntry", "PluginError",
    "RLMEnvironmentError", "RateLimitError", "Registrar", "ServerError", "Tool", "ToolProvider",
    "Usage", "hookimpl", "hookspec",
]
