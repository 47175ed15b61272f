"""The kernel process of ``environment="ipython-kernel"`` and what belongs to it.

:class:`KernelProcess` owns the private run directory (0700), the host's listening Unix socket in
it, the ``jupyter_client`` :class:`KernelManager` and its blocking client, and the channel to the
kernel; :meth:`KernelProcess.release` frees all of it. It is held by a ``weakref.finalize`` of the
REPL, so it never refers to the REPL.
"""

from __future__ import annotations

import os
import shutil

from rlm_isolation.leftovers import make_run_dir, reap_run_dirs
import socket
from typing import Any

from rlm_isolation.channel import Channel
from rlm.plugin import ConfigurationError


def import_jupyter() -> Any:
    try:
        from jupyter_client.kernelspec import KernelSpec
        from jupyter_client.manager import KernelManager
    except ImportError as exc:
        raise ConfigurationError(
            "environment='ipython-kernel' needs ipykernel and jupyter_client: "
            "pip install 'rlm-env-ipython[kernel]'") from exc
    try:
        import ipykernel  # noqa: F401 - only to say what is missing now, not at start-up
    except ImportError as exc:
        raise ConfigurationError(
            "environment='ipython-kernel' needs ipykernel in this Python environment (the kernel "
            "runs with this interpreter): pip install 'rlm-env-ipython[kernel]'") from exc
    return KernelManager, KernelSpec


class KernelProcess:
    """The kernel process, its client, the host's listening socket and the run directory.

    Held by a ``weakref.finalize`` of the REPL, so it must not refer to the REPL itself.
    """

    def __init__(self) -> None:
        # 0700, locked for this process's life: the next host reaps it if this one is killed.
        reap_run_dirs()
        self._lock: int | None
        self.run_dir, self._lock = make_run_dir("rlm-ipykernel-")
        self.manager: Any = None
        self.client: Any = None
        self.channel: Channel | None = None
        self.conn: socket.socket | None = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(os.path.join(self.run_dir, "host.sock"))
        os.chmod(os.path.join(self.run_dir, "host.sock"), 0o600)
        self.listener.listen(1)

    def kill_process(self) -> None:
        """Kill the kernel process now (from any thread; the client is left alone)."""
        process = getattr(getattr(self.manager, "provisioner", None), "process", None)
        if process is not None:
            try:
                process.kill()
            except OSError:
                pass

    def stop_process(self) -> None:
        """Close the link and the client, kill the kernel. The run directory stays."""
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.close("the kernel was stopped")
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
        client, self.client = self.client, None
        if client is not None:
            try:
                client.stop_channels()
            except Exception:  # noqa: BLE001 - already closed
                pass
        manager, self.manager = self.manager, None
        if manager is not None:
            try:
                manager.shutdown_kernel(now=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def release(self) -> None:
        self.stop_process()
        try:
            self.listener.close()
        except OSError:
            pass
        shutil.rmtree(self.run_dir, ignore_errors=True)
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)


def _make_manager_class() -> Any:
    KernelManager, _ = import_jupyter()

    class Manager(KernelManager):  # type: ignore[misc, valid-type]
        """A KernelManager that starts exactly the given kernel spec (no lookup by name)."""

        def __init__(self, spec: Any, **kwargs: Any):
            super().__init__(**kwargs)
            self._rlm_spec = spec

        @property
        def kernel_spec(self) -> Any:
            return self._rlm_spec

    return Manager


def make_manager(spec: Any, **kwargs: Any) -> Any:
    """A KernelManager for exactly ``spec`` (the class is made on first use: lazy import)."""
    global _manager_class
    if _manager_class is None:
        _manager_class = _make_manager_class()
    return _manager_class(spec, **kwargs)


_manager_class: Any = None
