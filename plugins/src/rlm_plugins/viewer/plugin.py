"""Registers the ``view`` command and the ``progress`` sink. Imports nothing heavy."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_logger_sinks(registrar):
    registrar.add("progress", "rlm_plugins.viewer.progress:ProgressSink",
                  description="One live status line on stderr (turn i/N, sub-calls, tokens, cost, "
                              "elapsed) when stderr is a terminal.")


@hookimpl
def rlm_register_commands(registrar):
    registrar.add("view", "rlm_plugins.viewer.cli:add_view_parser",
                  description="Browse logged runs (or a .jsonl file) in the browser.")
