"""rlm environment ``docker``: the REPL worker in a locked-down container, one per run."""
