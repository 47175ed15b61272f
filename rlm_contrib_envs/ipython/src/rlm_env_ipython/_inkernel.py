"""The part of ``environment="ipython-kernel"`` that runs inside the ipykernel process.

The host starts the kernel, then runs one silent cell that calls :func:`attach`. It connects to
the Unix socket the host listens on in the run's private directory and speaks the isolation
worker's protocol there (:class:`rlm_isolation.worker.Worker`: HMAC handshake with the per-run
secret, framed JSON, concurrent helper calls from any thread). Over that link the host sends
the tools, then contexts (files it wrote into the run directory, loaded here once) and
histories; the kernel sends ``llm_query`` and friends.

The helpers, ``answer``, ``FINAL`` / ``FINAL_VAR`` / ``SHOW_VARS`` and the restoring of reserved
names are the worker's own (:class:`rlm_isolation.worker.REPLCore`) bound to the kernel shell's
``user_ns``. Cells themselves arrive as ordinary Jupyter ``execute_request`` messages; after each
one a ``post_run_cell`` hook restores the reserved names and publishes a summary (final answer,
answer content, variables) as a ``display_data`` of type :data:`~._names.SUMMARY_MIME`, which the
host takes out of the cell's output.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from rlm_isolation.worker import (
    REPLCore,
    Worker,
    _exit,
    _no_breakpoint,
    _no_input,
    answer_fields,
    format_exception,
)

from ._names import SUMMARY_MIME, user_variables

#: The session of this kernel (one per kernel process; replaced if the host attaches again).
SESSION: Session | None = None

_OVERRIDES = {"exit": _exit, "quit": _exit, "input": _no_input, "breakpoint": _no_breakpoint}


class ShellCore(REPLCore):
    """The worker's REPL core, working on an IPython shell's namespace instead of its own."""

    def __init__(self, call_host: Any, ns: dict[str, Any], hidden: dict[str, Any]):
        # REPLCore.__init__ makes a namespace of its own; this sets up the same state on ``ns``.
        self.call_host = call_host
        self.max_output_chars = 0  # output is the kernel's business (iopub), not the core's
        self.ctx_dir = "."
        self.lock = threading.Lock()
        self.sources: dict[str, list[str]] = {}
        self.cell_index = 0
        self.builtins = None  # IPython's namespace keeps the builtins module
        self.ns = ns
        self.hidden = hidden
        self.answer = {"content": "", "ready": False}
        self.fixed: dict[str, Any] = {}
        self.tool_names: set[str] = set()
        self.last_history = -1
        helpers = self._helpers()
        self.fixed.update(helpers)
        ns.update(helpers)
        ns["answer"] = self.answer

    def user_variables(self) -> list[str]:
        return user_variables(super().user_variables(), self.ns, self.hidden)

    def restore(self) -> None:
        super().restore()
        for name, value in _OVERRIDES.items():
            if self.ns.get(name) is not value:
                self.ns[name] = value
        self.hidden.update(self.fixed)  # %who lists only the model's own names
        self.hidden.update(_OVERRIDES)
        self.hidden["answer"] = self.ns.get("answer")

    def summary(self) -> dict[str, Any]:
        final_answer, answer_content = answer_fields(self.ns.get("answer"))
        return {"final_answer": final_answer, "answer_content": answer_content,
                "variables": self.user_variables()}


class Session:
    """The kernel's link to the host and the REPL state on the shell."""

    def __init__(self, shell: Any, run_dir: str):
        self.shell = shell
        with open(os.path.join(run_dir, "secret"), "rb") as f:
            secret = f.read().strip()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(os.path.join(run_dir, "host.sock"))
        self.worker = Worker(self.sock.recv, self.sock.sendall, secret)
        config = self.worker.handshake()
        self.core = ShellCore(self.worker.call_host, shell.user_ns, shell.user_ns_hidden)
        self.core.ctx_dir = run_dir
        self.worker.core = self.core  # contexts and histories arrive as worker control messages
        error = None
        try:
            self.core.set_tools(config.get("tools") or {})
        except BaseException as exc:  # noqa: BLE001 - reported to the host, which raises
            error = format_exception(exc, {})
        self.core.restore()
        shell.events.register("pre_run_cell", self._before)
        shell.events.register("post_run_cell", self._after)
        self.thread = threading.Thread(target=self.worker.serve, name="rlm-host-link",
                                       daemon=True)
        self.worker.send({"t": "ready", "error": error, "pid": os.getpid(), "cwd": os.getcwd()})
        self.thread.start()

    def _before(self, info: Any = None) -> None:
        self.core.restore()

    def _after(self, result: Any = None) -> None:
        self.core.restore()
        from IPython.display import publish_display_data

        publish_display_data({SUMMARY_MIME: self.core.summary()})

    def detach(self) -> None:
        self.shell.events.unregister("pre_run_cell", self._before)
        self.shell.events.unregister("post_run_cell", self._after)
        try:
            self.sock.close()
        except OSError:
            pass


def attach(run_dir: str) -> None:
    """Connect this kernel to the host (called by the host's bootstrap cell)."""
    global SESSION
    import warnings

    from IPython import get_ipython

    # IPython's advice after a SystemExit is for a terminal user; the host says what exit() does.
    warnings.filterwarnings("ignore", message="To exit: use 'exit', 'quit', or Ctrl-D",
                            category=UserWarning)

    if SESSION is not None:
        SESSION.detach()
    SESSION = Session(get_ipython(), run_dir)
