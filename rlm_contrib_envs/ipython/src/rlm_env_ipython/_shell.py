"""An ``InteractiveShell`` that can live next to others in one process, in any thread.

IPython's shell is built for one interactive session that owns the process, so a plain
``InteractiveShell()`` changes process-wide state: it puts its module in
``sys.modules['__main__']``, sets ``sys.ps1``, swaps ``sys.displayhook`` and patches the
``builtins`` module around every cell (``BuiltinTrap`` / ``DisplayTrap``), keeps a SQLite history
in ``~/.ipython``, and registers itself with ``atexit`` (so it is never freed). Two REPLs running
cells in two threads would then take each other's display hook and builtins.

:class:`Shell` (a fresh instance per REPL, never ``InteractiveShell.instance()``) turns each of
those off: the traps do nothing, history is in memory, the profile directory is private, and
``sys.displayhook`` is replaced once, process-wide, by :func:`route_displayhook`, which sends a
cell's last-expression value to the shell of the thread that runs it (a context variable, like
the local REPL's output capture). Tracebacks are recorded for the REPL instead of printed (see :data:`ERRORS`).
"""

from __future__ import annotations

import atexit
import contextvars
import sys
import threading
import warnings
from typing import Any

from IPython.core.builtin_trap import BuiltinTrap
from IPython.core.display_trap import DisplayTrap
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

#: The shell whose cell the current thread runs (None elsewhere).
CURRENT: contextvars.ContextVar[Shell | None] = contextvars.ContextVar(
    "rlm_ipython_shell", default=None)
#: Where the current thread's cell puts its traceback texts (per cell, so that a cell abandoned
#: in a thread that finishes late cannot report its error as the next cell's).
ERRORS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "rlm_ipython_errors", default=None)

# IPython warns "To exit: use 'exit', 'quit', or Ctrl-D." after a SystemExit: advice for a
# terminal user that would mislead a model (the REPL says what exit() does instead).
warnings.filterwarnings("ignore", message="To exit: use 'exit', 'quit', or Ctrl-D",
                        category=UserWarning)


class _NoBuiltinTrap(BuiltinTrap):
    """Leaves the ``builtins`` module alone: the REPL's namespace has builtins of its own."""

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass


class _NoDisplayTrap(DisplayTrap):
    """Leaves ``sys.displayhook`` alone: :func:`route_displayhook` finds the shell instead."""

    def set(self) -> None:
        pass

    def unset(self) -> None:
        pass


class Shell(InteractiveShell):
    """One REPL's IPython shell (see the module docstring for what differs from IPython's)."""

    def __init__(self, *, user_ns: dict[str, Any], ipython_dir: str, xmode: str = "Plain"):
        config = Config()
        config.HistoryManager.enabled = False  # in memory: no SQLite file, no saving thread
        config.InteractiveShell.colors = "nocolor"
        config.InteractiveShell.xmode = xmode
        config.InteractiveShell.warn_venv = False
        super().__init__(ipython_dir=ipython_dir, user_ns=user_ns, config=config)
        self.builtin_trap = _NoBuiltinTrap(shell=self)
        self.display_trap = _NoDisplayTrap(hook=self.displayhook)
        # IPython's exit/quit would ask a terminal to end the session; the namespace's own
        # builtins (the REPL's, where exit() ends only the cell) take over.
        for name in ("exit", "quit"):
            self.user_ns.pop(name, None)
            self.user_ns_hidden.pop(name, None)
        display = self.display  # one bound method, so that %who sees it is IPython's
        self.user_ns["display"] = display
        self.user_ns_hidden["display"] = display

    # --- process-wide state this shell must not touch ---------------------------------------

    def init_sys_modules(self) -> None:
        pass  # sys.modules['__main__'] stays the host's

    def init_prompts(self) -> None:
        pass  # sys.ps1 / sys.ps2 stay as they are

    def init_virtualenv(self) -> None:
        pass  # never changes sys.path

    def init_builtins(self) -> None:
        self.builtin_trap = _NoBuiltinTrap(shell=self)

    def close(self) -> None:
        """Let go of what the shell registered globally (its ``atexit`` hook)."""
        atexit.unregister(self.atexit_operations)
        try:
            if self.history_manager is not None:
                self.history_manager.end_session()
        except Exception:  # noqa: BLE001 - an in-memory history has nothing to lose
            pass
        self.user_ns_hidden.clear()
        self.displayhook.flush()

    # --- output -------------------------------------------------------------------------------

    def display(self, *objs: Any, **kwargs: Any) -> None:
        """``display(obj)`` in a cell: the object's text representation, like ``Out``."""
        formatter = self.display_formatter
        assert formatter is not None  # made by InteractiveShell.__init__
        for obj in objs:
            data, _ = formatter.format(obj, include=("text/plain",))
            print(data.get("text/plain", repr(obj)))

    def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
        # Recorded for the REPL (which reports it as the cell's error), not printed.
        sink = ERRORS.get()
        text = self.InteractiveTB.stb2text(stb).strip("\n")
        if sink is not None:
            sink.append(text)
        else:
            print(text, file=sys.stderr)

    def run_cell_here(self, code: str, errors: list[str]) -> None:
        """Run one cell in the calling thread, its display hook and tracebacks routed here."""
        install_displayhook()
        CURRENT.set(self)
        ERRORS.set(errors)
        self.run_cell(code, store_history=True)

    def get_ipython(self) -> Shell:
        return self


# --- the process-wide display hook ------------------------------------------------------------

_install_lock = threading.Lock()
_previous_hook: Any = None


def route_displayhook(value: Any) -> None:
    """``sys.displayhook``: the running cell's shell shows the value; elsewhere the previous
    hook does (the interactive interpreter, pytest, ...)."""
    shell = CURRENT.get()
    if shell is not None:
        shell.displayhook(value)
    elif _previous_hook is not None:
        _previous_hook(value)


def install_displayhook() -> None:
    """Put :func:`route_displayhook` in place (again, if something replaced it)."""
    global _previous_hook
    if sys.displayhook is route_displayhook:
        return
    with _install_lock:
        if sys.displayhook is not route_displayhook:
            _previous_hook = sys.displayhook
            sys.displayhook = route_displayhook
