"""First-party rlm plugins, registered through the ``rlm`` entry-point group like any other.

- ``local``: the in-process REPL environment (the default).
- ``scripted``: a backend that replays given replies, for tests and docs.
- ``compaction``: the ``summarize`` compaction strategy.
- ``sinks``: the ``console`` logger sink used by ``verbose=True``.
- ``context-tools``: the opt-in ``context`` tool provider (chunking and search over ``context``).
"""
