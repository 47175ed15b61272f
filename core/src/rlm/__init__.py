"""rlm: Recursive Language Models.

``from rlm import RLM`` and call ``RLM(...).completion(prompt)``: the prompt becomes the REPL
variable ``context`` and the root model works on it with code. Backends, environments, tool
providers, compaction strategies and logger sinks are plugins found through the ``rlm``
entry-point group.

Importing this package is cheap: the loop, the plugin manager and every plugin load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import (BackendError, BudgetExceededError, CancellationError, ConfigurationError,
                         ErrorThresholdExceededError, PluginError, RLMError, TimeoutExceededError,
                         TokenLimitExceededError, UnknownPluginError)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._manager import PluginManager, get_plugin_manager, reset_plugin_manager
    from ._rlm import RLM
    from .logger import RLMLogger
    from rlm_cli.batching import BatchReport, batch
    from .types import AnswerSource, RLMChatCompletion, RunStatus, UsageSummary

_LAZY = {
    "RLM": ("._rlm", "RLM"),
    "RLMLogger": (".logger", "RLMLogger"),
    "RLMChatCompletion": (".types", "RLMChatCompletion"),
    "UsageSummary": (".types", "UsageSummary"),
    "RunStatus": (".types", "RunStatus"),
    "AnswerSource": (".types", "AnswerSource"),
    "ModelUsageSummary": (".types", "ModelUsageSummary"),
    "PluginManager": ("._manager", "PluginManager"),
    "get_plugin_manager": ("._manager", "get_plugin_manager"),
    "reset_plugin_manager": ("._manager", "reset_plugin_manager"),
}

# ``rlm.batch`` is the batch runner of the rlm-cli distribution, looked up by name on first use
# (the kernel does not import the CLI); without rlm-cli, the error says what to install.
_FROM_CLI = {"batch", "BatchReport"}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if name in _FROM_CLI:
        import importlib

        try:
            module = importlib.import_module("rlm_cli.batching")
        except ModuleNotFoundError as exc:
            if exc.name not in ("rlm_cli", "rlm_cli.batching"):
                raise
            raise ImportError(f"rlm.{name} is in the rlm-cli distribution, which is not installed. "
                              "Fix: pip install rlm-cli  (or pip install rlm)") from None
        value = getattr(module, name)
        globals()[name] = value
        return value
    if target is None:
        raise AttributeError(f"module 'rlm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0], __name__), target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _FROM_CLI)


__all__ = [
    "RLM", "AnswerSource", "BackendError", "BatchReport", "batch", "BudgetExceededError",
    "CancellationError", "ConfigurationError",
    "ErrorThresholdExceededError", "ModelUsageSummary", "PluginError", "PluginManager",
    "RLMChatCompletion", "RLMError", "RLMLogger", "RunStatus", "TimeoutExceededError",
    "TokenLimitExceededError", "UnknownPluginError", "UsageSummary", "get_plugin_manager",
    "reset_plugin_manager",
]
