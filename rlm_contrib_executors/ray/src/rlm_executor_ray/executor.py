"""The ``ray`` executor: each job is a Ray task.

    rlm batch tasks.jsonl -o out.jsonl --executor ray                          # local cluster
    rlm batch tasks.jsonl -o out.jsonl --executor ray --address ray://head:10001
    RLM(..., subcall_executor="ray", subcall_executor_kwargs={"address": "auto"})

Connection: ``address`` (else ``$RAY_ADDRESS``) names an existing cluster (``ray://HOST:10001``
through Ray Client, ``HOST:6379`` or ``"auto"`` from a node of the cluster). Without one, a
private local cluster is started with ``num_cpus`` CPUs (default 2), listening on 127.0.0.1
only, and stopped by :meth:`RayExecutor.close`. If this process is already connected
(``ray.init`` was called), that connection is used and left open.

Jobs: at most ``concurrency`` tasks are in flight; each asks for ``task_cpus`` CPUs (default
0.25: an RLM line spends its time waiting on the model, so four share a core). A task whose
worker process dies (OOM killer, a node lost, ``kill -9``) is re-executed by Ray up to
``max_retries`` times (default 3); its result reaches the caller once, from the attempt that
finished. Exceptions raised by the job itself are not retried: they come back as the item's
error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rlm.exceptions import ConfigurationError

_SLICE = 0.05  # ray.wait timeout: how often the iteration notices cancel()


def _import_ray(local: bool) -> Any:
    if local:
        # A cluster we start ourselves listens on the loopback interface only (read by Ray at
        # import time; a process that imported Ray already keeps its own setting).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - a dependency of this distribution
        raise ConfigurationError(
            f"the ray executor needs Ray ({exc}); install it with: pip install rlm-executor-ray"
        ) from exc
    return ray


class _RayRun:
    def __init__(self, ray: Any, remote: Any, items: Iterable[Any], concurrency: int):
        self._ray = ray
        self._remote = remote
        self._items = iter(items)
        self._concurrency = concurrency
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[Any, int] = {}

    def cancel(self) -> None:
        self._cancelled.set()
        self._cancel_in_flight()

    def _cancel_in_flight(self) -> None:
        with self._lock:
            refs = list(self._in_flight)
        for ref in refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished, or the cluster is gone
                pass

    def __iter__(self) -> Iterator[tuple[int, Any, BaseException | None]]:
        ray = self._ray
        exhausted = False
        next_pos = 0
        try:
            while True:
                while (not exhausted and not self._cancelled.is_set()
                       and len(self._in_flight) < self._concurrency):
                    try:
                        item = next(self._items)
                    except StopIteration:
                        exhausted = True
                        break
                    ref = self._remote.remote(item)
                    with self._lock:
                        self._in_flight[ref] = next_pos
                    next_pos += 1
                if self._cancelled.is_set() or not self._in_flight:
                    return
                ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=_SLICE)
                for ref in ready:
                    with self._lock:
                        pos = self._in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        # The job raised: hand back its own exception (what `fn` raised).
                        cause = getattr(exc, "cause", None)
                        yield pos, None, cause if isinstance(cause, BaseException) else exc
                    except Exception as exc:  # noqa: BLE001 - worker lost for good, cancelled
                        yield pos, None, exc
                    else:
                        yield pos, result, None
        finally:
            if self._in_flight:  # stopped early (cancel, break, an exception): stop the rest
                self._cancelled.set()
                self._cancel_in_flight()


class RayExecutor:
    """``RayExecutor(address=None, *, num_cpus=2, task_cpus=0.25, max_retries=3,
    runtime_env=None, namespace=None, init_kwargs=None)``."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = 2,
                 task_cpus: float = 0.25, max_retries: int = 3,
                 runtime_env: dict[str, Any] | None = None, namespace: str | None = None,
                 init_kwargs: dict[str, Any] | None = None):
        if not isinstance(task_cpus, (int, float)) or task_cpus < 0:
            raise ConfigurationError(f"ray executor: task_cpus must be >= 0, got {task_cpus!r}.")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(
                f"ray executor: max_retries must be an integer >= 0, got {max_retries!r}.")
        address = address or os.environ.get("RAY_ADDRESS") or None
        ray = _import_ray(local=address is None)
        self._ray = ray
        self.task_cpus = float(task_cpus)
        self.max_retries = max_retries
        self._owns = False
        if ray.is_initialized():
            self.address = ray.get_runtime_context().gcs_address
            return
        kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False,
                                  "configure_logging": False, **(init_kwargs or {})}
        if runtime_env is not None:
            kwargs["runtime_env"] = runtime_env
        if namespace is not None:
            kwargs["namespace"] = namespace
        if address is None:
            kwargs.setdefault("num_cpus", num_cpus)
            kwargs.setdefault("_node_ip_address", "127.0.0.1")
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            where = (f"the Ray cluster at {address!r}" if address else
                     "a local Ray cluster")
            fix = ("Check the address: ray://HOST:10001 (Ray Client) or HOST:6379 / 'auto' from "
                   "a node of the cluster; `ray status --address HOST:6379` on that machine "
                   "says whether it is up, and the client's Ray and Python versions must match "
                   "the cluster's." if address else
                   "Run `ray start --head` yourself and pass its address, or check the log "
                   "under /tmp/ray/session_latest/logs.")
            raise ConfigurationError(f"cannot start or reach {where}: {type(exc).__name__}: "
                                     f"{exc}. {fix}") from exc
        self._owns = True
        self.address = ray.get_runtime_context().gcs_address

    def describe(self) -> str:
        try:
            cpus = self._ray.cluster_resources().get("CPU", 0)
            nodes = sum(1 for n in self._ray.nodes() if n.get("Alive"))
        except Exception:  # noqa: BLE001
            return f"ray ({self.address})"
        return f"ray ({self.address}, {nodes} node(s), {cpus:g} CPUs)"

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
            concurrency: int) -> _RayRun:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}.")
        remote = self._ray.remote(fn).options(num_cpus=self.task_cpus,
                                              max_retries=self.max_retries,
                                              retry_exceptions=False)
        return _RayRun(self._ray, remote, items, concurrency)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False
