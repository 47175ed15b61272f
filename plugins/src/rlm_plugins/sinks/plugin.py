"""Registers the ``console`` logger sink (what ``verbose=True`` prints)."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_logger_sinks(registrar):
    registrar.add("console", "rlm_plugins.sinks.console:ConsoleSink",
                  description="Human-readable progress of every turn on stderr (verbose=True).")
