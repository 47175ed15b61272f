"""rlm environment ``modal``: the REPL worker in a Modal sandbox, one per run."""
