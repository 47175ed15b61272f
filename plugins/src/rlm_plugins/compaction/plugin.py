"""Registers the ``summarize`` and ``recent`` compaction strategies."""

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_compaction_strategies(registrar):
    registrar.add(
        "summarize", "rlm_plugins.compaction.summarize:SummarizeCompaction",
        description="At threshold_pct of the context window, replace the turns with a model-written "
                    "summary; the full trajectory stays in the REPL's `history`.")
    registrar.add(
        "recent", "rlm_plugins.compaction.recent:RecentTurnsCompaction",
        description="At threshold_pct of the context window, keep the last keep_turns turns "
                    "verbatim and fold older ones into a running summary.")
