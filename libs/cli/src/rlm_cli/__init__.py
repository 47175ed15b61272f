"""The ``rlm`` command line: :func:`main` is the console script; :func:`batch` runs a JSONL file.

Importing this package is cheap: each command loads what it needs when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batching import BatchReport, batch


def main(argv: list[str] | None = None) -> int:
    """Run the ``rlm`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    from .cli import main as _main

    return _main(argv)


def __getattr__(name: str) -> Any:
    if name in ("batch", "BatchReport"):
        from . import batching as _batch_module

        return getattr(_batch_module, name)
    raise AttributeError(f"module 'rlm_cli' has no attribute {name!r}")


__all__ = ["BatchReport", "batch", "main"]
