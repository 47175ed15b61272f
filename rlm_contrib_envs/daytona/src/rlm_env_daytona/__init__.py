"""rlm environment ``daytona``: the REPL worker in a Daytona cloud sandbox (see ``env``)."""
