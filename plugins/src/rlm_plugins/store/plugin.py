"""Registers the ``store`` sink and the ``logs`` and ``keys`` commands. Imports nothing heavy."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_logger_sinks(registrar):
    registrar.add("store", "rlm_plugins.store.sink:StoreSink",
                  description="Records every run (children, cells, sub-calls, usage) in the local "
                              "SQLite trajectory store; read it with `rlm logs` and `rlm view`.")


@hookimpl
def rlm_register_commands(registrar):
    registrar.add("logs", "rlm_plugins.store.cli:add_logs_parser",
                  description="List, show, export and import logged runs.")
    registrar.add("keys", "rlm_plugins.store.keys_cli:add_keys_parser",
                  description="Store provider keys in the user directory (mode 0600).")
