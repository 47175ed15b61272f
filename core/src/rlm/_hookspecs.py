"""The hook specifications: one registration hook per extension kind.

Each hook receives a registrar and calls ``registrar.add(...)`` for every name the plugin offers.
Registration must be cheap: pass factories as ``"module:attribute"`` strings so the module that
imports a provider SDK is imported only when a run chooses that name.

The kernel calls each plugin's implementation on its own with the argument named ``registrar``
(an implementation may also take no argument). Return values are ignored. If an implementation
raises, whatever it added in that call is rolled back, the failure is reported with the plugin's
distribution, and every other plugin still registers.

The signatures below are the contract; ``docs/plugins.md`` documents each one and
``tests/test_docs_hooks.py`` checks that the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._registrar import Registrar

PROJECT_NAME = "rlm"
ENTRY_POINT_GROUP = "rlm"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RLMHookSpecs:
    """Namespace of the kernel's hookspecs (registered with ``add_hookspecs``)."""

    @hookspec
    def rlm_register_backends(self, registrar: Registrar) -> None:
        """Register model backends.

        ``registrar.add(name, factory, description=..., aliases=(...))`` where
        ``factory(**backend_kwargs)`` returns an object implementing :class:`rlm.protocols.Backend`.
        Pass the factory as a ``"package.module:attribute"`` string so the provider SDK is
        imported only when a run uses the backend.
        """

    @hookspec
    def rlm_register_environments(self, registrar: Registrar) -> None:
        """Register REPL environments.

        ``factory(**environment_kwargs)`` returns an :class:`rlm.protocols.Environment`.
        """

    @hookspec
    def rlm_register_tool_providers(self, registrar: Registrar) -> None:
        """Register tool providers.

        ``factory()`` returns a :class:`rlm.protocols.ToolProvider`. Pass ``default=True`` to
        ``add`` for a provider that contributes to every run; others apply when a run names them
        in ``tool_providers=[...]``.
        """

    @hookspec
    def rlm_register_compaction_strategies(self, registrar: Registrar) -> None:
        """Register compaction strategies.

        ``factory(threshold_pct=..., **compaction_kwargs)`` returns a
        :class:`rlm.protocols.CompactionStrategy`.
        """

    @hookspec
    def rlm_register_logger_sinks(self, registrar: Registrar) -> None:
        """Register logger sinks.

        ``factory()`` (called with no arguments when a run names the sink in ``sinks=[...]``)
        returns a :class:`rlm.protocols.LoggerSink`.
        """

    @hookspec
    def rlm_register_executors(self, registrar: Registrar) -> None:
        """Register executors: engines that run many independent jobs (batch lines, remote child
        RLMs) with bounded concurrency.

        ``factory(**executor_kwargs)`` returns an :class:`rlm.protocols.Executor`.
        """

    @hookspec
    def rlm_register_commands(self, registrar: Registrar) -> None:
        """Register CLI subcommands.

        ``factory(subparsers)`` adds an ``argparse`` subparser and sets ``func`` on it with
        ``parser.set_defaults(func=handler)``; ``handler(args) -> int`` is the exit code.
        """


HOOK_KINDS: dict[str, str] = {
    "backend": "rlm_register_backends",
    "environment": "rlm_register_environments",
    "tool_provider": "rlm_register_tool_providers",
    "compaction": "rlm_register_compaction_strategies",
    "sink": "rlm_register_logger_sinks",
    "command": "rlm_register_commands",
    "executor": "rlm_register_executors",
}
"""Extension kind -> the hook that registers it."""

# Names the project publishes (or plans) as their own distributions: an unknown name that is
# one of these gets the exact `pip install` line.
KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {
    ("backend", "openai"): "rlm-backend-openai",
    ("backend", "azure_openai"): "rlm-backend-openai",
    ("backend", "anthropic"): "rlm-backend-anthropic",
    ("backend", "vllm"): "rlm-backend-vllm",
    ("backend", "openrouter"): "rlm-backend-openrouter",
    ("backend", "portkey"): "rlm-backend-portkey",
    ("backend", "litellm"): "rlm-backend-litellm",
    ("backend", "llamacpp"): "rlm-backend-llamacpp",
    ("backend", "gemini"): "rlm-backend-gemini",
    ("environment", "docker"): "rlm-env-docker",
    ("environment", "sandbox"): "rlm-env-sandbox",
    ("environment", "pyodide"): "rlm-env-pyodide",
    ("environment", "modal"): "rlm-env-modal",
    ("environment", "daytona"): "rlm-env-daytona",
    ("environment", "e2b"): "rlm-env-e2b",
    ("environment", "ipython"): "rlm-env-ipython",
    ("executor", "ray"): "rlm-executor-ray",
}
