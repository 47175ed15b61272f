"""llama.cpp's own OpenAI-compatible HTTP server, run in this process through ``xllamacpp``.

One server per configuration (model file, context size, threads, slots) per process: started on
first use, shared by every backend instance that asks for the same configuration, and shut down
when the process exits (or by :func:`shutdown_all`). It listens on 127.0.0.1 on a port the OS
picks, and every endpoint except ``/health`` requires an API key that is made here from
``secrets`` and never leaves the process: other local users and processes cannot use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rlm.exceptions import BackendError, ConfigurationError

__all__ = ["EmbeddedServer", "ServerConfig", "default_threads", "get_server", "running_servers",
           "shutdown_all"]

log = logging.getLogger("rlm_backend_llamacpp")

#: The xllamacpp release this package is built and tested against (date-versioned; pinned).
XLLAMACPP_VERSION = "2026.10.11549"


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerConfig:
    model_path: str
    model_name: str
    n_ctx: int = 8192
    n_threads: int = field(default_factory=default_threads)
    n_parallel: int = 1
    n_batch: int = 512
    extra: tuple[tuple[str, Any], ...] = ()  # further CommonParams attributes, name -> value

    def __post_init__(self) -> None:
        for name in ("n_ctx", "n_threads", "n_parallel", "n_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"llamacpp: {name} must be an integer >= 1, got {value!r}.")
        if self.n_ctx < 512:
            raise ConfigurationError(
                f"llamacpp: n_ctx={self.n_ctx} is too small for an RLM (its system prompt and a few "
                "turns need about 2,000 tokens); use n_ctx >= 2048.")


class EmbeddedServer:
    """One running llama.cpp server. Use :func:`get_server` rather than building one yourself."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self._api_key = secrets.token_urlsafe(32)
        self._server: Any = None
        self.base_url: str | None = None
        self.load_seconds: float | None = None

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def running(self) -> bool:
        return self._server is not None

    def __repr__(self) -> str:
        return (f"EmbeddedServer(model={self.config.model_name!r}, base_url={self.base_url!r}, "
                f"n_ctx={self.config.n_ctx}, n_threads={self.config.n_threads}, api_key='***')")

    def start(self) -> None:
        # llama.cpp's threads meet at a barrier after every step; with OpenMP's default busy-wait,
        # one other busy process on the machine stalls them all. Measured on 2 cores, generation
        # with 2 threads: 41 tok/s idle, 12 tok/s next to one busy process; passive waiting: 37
        # and 20. Passive is the robust default; set OMP_WAIT_POLICY=ACTIVE to override.
        # (Read by libgomp when it loads, i.e. on the first import of xllamacpp.)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import xllamacpp
        except ImportError as exc:
            raise ConfigurationError(
                "llamacpp: the llama.cpp runtime is not installed: pip install "
                f"'xllamacpp=={XLLAMACPP_VERSION}' (rlm-backend-llamacpp depends on it). "
                f"({exc})") from None
        cfg = self.config
        params = xllamacpp.CommonParams()
        params.model.path = cfg.model_path
        params.model_alias = {cfg.model_name}
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # the OS picks a free port
        params.api_keys = [self._api_key]
        params.offline = True  # never reach a model hub
        params.ui = False
        params.endpoint_metrics = True  # used below as a readiness barrier
        params.n_ctx = cfg.n_ctx
        params.n_parallel = cfg.n_parallel
        params.n_batch = cfg.n_batch
        params.n_ubatch = min(cfg.n_batch, 512)
        params.cpuparams.n_threads = cfg.n_threads
        params.cpuparams_batch.n_threads = cfg.n_threads
        params.verbosity = -1 if not log.isEnabledFor(logging.DEBUG) else 3
        for name, value in cfg.extra:
            if not hasattr(params, name):
                raise ConfigurationError(
                    f"llamacpp: server_params has {name!r}, which is not a llama.cpp server "
                    "parameter (see xllamacpp.CommonParams).")
            setattr(params, name, value)
        t0 = time.perf_counter()
        try:
            server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise BackendError(
                f"llamacpp: llama.cpp could not load {cfg.model_path} ({exc}). Check that it is a "
                "GGUF model llama.cpp supports and that there is memory for n_ctx="
                f"{cfg.n_ctx}; set the logger 'rlm_backend_llamacpp' to DEBUG to see llama.cpp's "
                "own log.", backend="llamacpp", model=cfg.model_name) from None
        # The constructor returns before the server's task loop runs; destroying it in that window
        # can hang. A metrics request goes through the task loop, so once it returns the server is
        # fully up (and safe to shut down).
        server.handle_metrics()
        self.load_seconds = time.perf_counter() - t0
        self._server = server
        self.base_url = server.listening_address.rstrip("/") + "/v1"
        log.info("llamacpp: %s loaded in %.2f s, serving on %s (n_ctx=%d, threads=%d)",
                 cfg.model_name, self.load_seconds, self.base_url, cfg.n_ctx, cfg.n_threads)

    def stop(self) -> None:
        server, self._server = self._server, None
        self.base_url = None
        if server is not None:
            del server  # the native destructor stops the HTTP thread and frees the model


_LOCK = threading.Lock()
_SERVERS: dict[ServerConfig, EmbeddedServer] = {}
_ATEXIT = False


def get_server(config: ServerConfig) -> EmbeddedServer:
    """The running server for ``config``, started on first use (once per process)."""
    global _ATEXIT
    with _LOCK:
        server = _SERVERS.get(config)
        if server is not None and server.running:
            return server
        server = EmbeddedServer(config)
        server.start()
        _SERVERS[config] = server
        if not _ATEXIT:
            # Before the interpreter tears modules down: destroying the native server during
            # module teardown can deadlock.
            atexit.register(shutdown_all)
            _ATEXIT = True
        return server


def running_servers() -> list[EmbeddedServer]:
    with _LOCK:
        return [s for s in _SERVERS.values() if s.running]


def shutdown_all() -> None:
    """Stop every embedded server of this process (also registered with ``atexit``)."""
    with _LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        try:
            server.stop()
        except Exception:  # shutting down must not raise
            log.debug("llamacpp: error while stopping %r", server, exc_info=True)
