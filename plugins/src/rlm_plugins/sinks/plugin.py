"""Registers the logger sinks: ``console`` (what ``verbose=True`` prints, rendered with rich),
``jsonl`` (every event as a JSON line) and ``structlog`` (structured log entries).

Importing this module imports neither rich nor structlog: each sink's module is imported only
when a run uses it.
"""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_logger_sinks(registrar):
    registrar.add("console", "rlm_plugins.sinks.console:ConsoleSink",
                  description="Human-readable progress of every turn on stderr, rendered with rich "
                              "(verbose=True).")
    registrar.add("jsonl", "rlm_plugins.sinks.jsonl:JSONLSink",
                  description="Every event of the run tree as one JSON line, flushed per line "
                              "(./rlm_logs or $RLM_LOG_DIR).")
    registrar.add("structlog", "rlm_plugins.sinks.structlog_sink:StructlogSink",
                  description="Structured log entries (iteration, cell, sub-call, limit, final "
                              "answer) through structlog.get_logger('rlm').")
