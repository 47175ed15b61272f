"""rlm environment ``e2b``: the REPL worker in an E2B cloud sandbox (see :mod:`.env`).

Importing this package does not import the E2B SDK; :class:`E2BREPL` loads it when a REPL is
created.
"""

__all__ = ["E2BREPL"]


def __getattr__(name: str):
    if name == "E2BREPL":
        from .env import E2BREPL

        return E2BREPL
    raise AttributeError(name)
