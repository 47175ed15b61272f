"""The ``ray`` executor: each job is a Ray task.

    rlm batch tasks.jsonl -o out.jsonl --executor ray                          # local cluster
    rlm batch tasks.jsonl -o out.jsonl --executor ray --address 127.0.0.1:6379
    rlm batch tasks.jsonl -o out.jsonl --executor ray --address ray://head:10001
    RLM(..., subcall_executor="ray", subcall_executor_kwargs={"address": "head:6379"})

Connection (:mod:`rlm_executor_ray.cluster`): ``address`` (else ``$RAY_ADDRESS``) names an
existing cluster: ``ray://HOST:10001`` through Ray Client, ``HOST:6379`` (the head's GCS) or
``"auto"`` from a node of the cluster. The cluster is probed first (one gRPC round trip): an
unreachable address, a missing or rejected token and a version mismatch each fail at once with
one line. The token (Ray's token authentication) is ``auth_token`` or what Ray itself reads
(``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), presented only when the
cluster asks for it. Given a loopback address of a cluster whose nodes listen on 127.0.0.1, the
driver stays on 127.0.0.1 too (Ray would otherwise substitute the machine's network address).
Without an address, a private local cluster is started with ``num_cpus`` CPUs (default 2),
listening on 127.0.0.1 only, and stopped by :meth:`RayExecutor.close`. If this process is
already connected (``ray.init`` was called), that connection is used and left open.

Jobs: ``map`` keeps at most ``concurrency`` tasks in flight, and all maps of one executor
together at most ``max_in_flight`` (the bound of a whole RLM tree: an RLM builds its
``subcall_executor`` once per tree). Each task asks for ``task_cpus`` CPUs (default 0.25: an
RLM line waits on the model, so four share a core) and is spread over the nodes
(``scheduling_strategy="SPREAD"``). Large values inside a job (strings, bytes of at least
``share_bytes``, default 64 KiB: a context, a system prompt, tool code) are put in Ray's object
store once per map and passed by reference, so a value shared by many jobs crosses the wire
once, not once per task. A task whose worker process or node dies is re-executed by Ray up to
``max_retries`` times (default 3); its result reaches the caller once, from the attempt that
finished. Exceptions raised by the job itself are not retried: they come back as the item's
error.

Threading: ``map`` may be called from several threads at once (concurrent ``rlm_query_batched``
calls of one tree); each returned run is iterated by one thread, ``cancel()`` from any thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rlm.exceptions import ConfigurationError

from . import cluster

_SLICE = 0.05  # ray.wait timeout: how often the iteration notices cancel() and free slots
_SHARE_DEPTH = 3  # how deep inside a job shared values are looked for


def _import_ray(loopback: bool) -> Any:
    if loopback:
        # Read by Ray at import time (keep_loopback also fixes it up after an earlier import).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - a dependency of this distribution
        raise ConfigurationError(
            f"the ray executor needs Ray ({exc}); install it with: pip install rlm-executor-ray"
        ) from exc
    return ray


class _Shared:
    """A placeholder for the ``k``-th object-store argument of a task."""

    __slots__ = ("k",)

    def __init__(self, k: int):
        self.k = k

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (_Shared, (self.k,))


def _restore(value: Any, shared: tuple[Any, ...]) -> Any:
    if isinstance(value, _Shared):
        return shared[value.k]
    if isinstance(value, dict):
        return {k: _restore(v, shared) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, shared) for v in value]
    if isinstance(value, tuple):
        return tuple(_restore(v, shared) for v in value)
    return value


def _task_of(fn: Callable[[Any], Any]) -> Callable[..., Any]:
    def task(item: Any, *shared: Any) -> Any:
        # Ray resolves the top-level ObjectRef arguments (from this node's object store).
        return fn(_restore(item, shared) if shared else item)

    task.__name__ = getattr(fn, "__name__", "task")
    task.__qualname__ = task.__name__
    return task


class _Sharer:
    """Puts large values in the object store once per map and swaps them for placeholders."""

    def __init__(self, ray: Any, min_bytes: int):
        self._ray = ray
        self._min = min_bytes
        self._refs: dict[int, tuple[Any, Any]] = {}  # id(value) -> (value, ObjectRef)
        self.puts = 0

    def split(self, item: Any) -> tuple[Any, list[Any]]:
        refs: list[Any] = []
        index: dict[int, int] = {}

        def walk(value: Any, depth: int) -> Any:
            if isinstance(value, (str, bytes)) and len(value) >= self._min:
                key = id(value)
                slot = index.get(key)
                if slot is None:
                    held = self._refs.get(key)
                    if held is None or held[0] is not value:
                        held = self._refs[key] = (value, self._ray.put(value))
                        self.puts += 1
                    slot = index[key] = len(refs)
                    refs.append(held[1])
                return _Shared(slot)
            if depth >= _SHARE_DEPTH:
                return value
            if isinstance(value, dict):
                return {k: walk(v, depth + 1) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v, depth + 1) for v in value]
            if isinstance(value, tuple):
                return tuple(walk(v, depth + 1) for v in value)
            return value

        if self._min <= 0:
            return item, refs
        return walk(item, 0), refs


class _Slots:
    """The executor-wide bound on tasks in flight (``max_in_flight``; None: no bound)."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self._lock = threading.Lock()
        self.used = 0
        self.peak = 0

    def try_take(self) -> bool:
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                return False
            self.used += 1
            self.peak = max(self.peak, self.used)
            return True

    def give(self, n: int = 1) -> None:
        with self._lock:
            self.used -= n


class _RayRun:
    def __init__(self, ray: Any, remote: Any, items: Iterable[Any], concurrency: int,
                 slots: _Slots, sharer: _Sharer):
        self._ray = ray
        self._remote = remote
        self._items = iter(items)
        self._concurrency = concurrency
        self._slots = slots
        self._sharer = sharer
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

    def _submit(self, next_pos: int) -> tuple[bool, int]:
        """Start items while both bounds allow; returns (exhausted, next_pos)."""
        while not self._cancelled.is_set() and len(self._in_flight) < self._concurrency:
            if not self._slots.try_take():
                return False, next_pos
            try:
                item = next(self._items)  # decided now: e.g. the budget left at this moment
            except StopIteration:
                self._slots.give()
                return True, next_pos
            except BaseException:
                self._slots.give()
                raise
            try:
                body, refs = self._sharer.split(item)
                ref = self._remote.remote(body, *refs)
            except BaseException:
                self._slots.give()
                raise
            with self._lock:
                self._in_flight[ref] = next_pos
            next_pos += 1
        return False, next_pos

    def __iter__(self) -> Iterator[tuple[int, Any, BaseException | None]]:
        ray = self._ray
        exhausted = False
        next_pos = 0
        try:
            while True:
                if not exhausted:
                    exhausted, next_pos = self._submit(next_pos)
                if self._cancelled.is_set() or (exhausted and not self._in_flight):
                    return
                if not self._in_flight:  # every slot of the executor is held by other maps
                    time.sleep(_SLICE)
                    continue
                ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=_SLICE)
                for ref in ready:
                    with self._lock:
                        pos = self._in_flight.pop(ref)
                    self._slots.give()
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
                with self._lock:
                    n = len(self._in_flight)
                    self._in_flight.clear()
                self._slots.give(n)


class RayExecutor:
    """``RayExecutor(address=None, *, auth_token=None, connect_timeout=10, num_cpus=2,
    task_cpus=0.25, max_retries=3, max_in_flight=None, scheduling_strategy="SPREAD",
    share_bytes=65536, runtime_env=None, namespace=None, init_kwargs=None)``.

    Lifecycle: connects (or starts a local cluster) in the constructor, ``close()`` disconnects
    (and stops a cluster it started). ``address``/``auth_token`` semantics: module docstring.
    """

    def __init__(self, address: str | None = None, *, auth_token: str | None = None,
                 connect_timeout: float = 10.0, num_cpus: int | None = 2,
                 task_cpus: float = 0.25, max_retries: int = 3, max_in_flight: int | None = None,
                 scheduling_strategy: str | None = "SPREAD", share_bytes: int = 65536,
                 runtime_env: dict[str, Any] | None = None, namespace: str | None = None,
                 init_kwargs: dict[str, Any] | None = None):
        if not isinstance(task_cpus, (int, float)) or task_cpus < 0:
            raise ConfigurationError(f"ray executor: task_cpus must be >= 0, got {task_cpus!r}.")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(
                f"ray executor: max_retries must be an integer >= 0, got {max_retries!r}.")
        if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
            raise ConfigurationError(
                f"ray executor: max_in_flight must be an integer >= 1, got {max_in_flight!r}.")
        if not isinstance(share_bytes, int) or share_bytes < 0:
            raise ConfigurationError(
                f"ray executor: share_bytes must be an integer >= 0, got {share_bytes!r}.")
        if auth_token is not None and (not isinstance(auth_token, str) or not auth_token.strip()):
            raise ConfigurationError("ray executor: auth_token must be a non-empty string.")
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address == "local":
            address = None
        target = cluster.parse_address(address) if address else None
        if target is not None and target.kind == "auto":
            recorded = cluster.recorded_address()
            if recorded:
                target = cluster.parse_address(recorded)
        ray = _import_ray(loopback=target is None or target.loopback)
        self._ray = ray
        self.task_cpus = float(task_cpus)
        self.max_retries = max_retries
        self.scheduling_strategy = scheduling_strategy
        self.share_bytes = share_bytes
        self._slots = _Slots(max_in_flight)
        self._remotes: dict[Any, Any] = {}
        self._remotes_lock = threading.Lock()
        self._owns = False
        self.address = "ray"
        if ray.is_initialized():
            self.address = self._connected_address()
            return
        kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False,
                                  "configure_logging": False, **(init_kwargs or {})}
        if runtime_env is not None:
            kwargs["runtime_env"] = runtime_env
        if namespace is not None:
            kwargs["namespace"] = namespace
        if target is None:
            cluster.keep_loopback()
            kwargs.setdefault("num_cpus", num_cpus)
            kwargs.setdefault("_node_ip_address", "127.0.0.1")
            self._init(ray, None, None, kwargs)
            return
        kwargs.pop("include_dashboard", None)  # not an option when connecting
        if target.kind == "client":
            kwargs.pop("log_to_driver", None)  # the server's business: Ray Client logs it
        token, source = cluster.find_token(auth_token)
        if target.kind != "auto":
            info = cluster.probe(target, token, source, float(connect_timeout))
            if info.token_required and token:
                cluster.use_token(token, explicit=auth_token is not None)
            if target.kind == "gcs" and target.loopback and (
                    not info.node_ips or any(ip in cluster.LOOPBACK_HOSTS for ip in info.node_ips)):
                cluster.keep_loopback()
                kwargs.setdefault("_node_ip_address", "127.0.0.1")
        elif token:
            cluster.use_token(token, explicit=auth_token is not None)
        init_address = target.address if target.kind in ("client", "auto") else target.endpoint
        self._init(ray, target, init_address, kwargs)

    def _init(self, ray: Any, target: cluster.Target | None, address: str | None,
              kwargs: dict[str, Any]) -> None:
        try:
            for attempt in range(3):
                try:
                    ray.init(address=address, **kwargs)
                    break
                except ConnectionAbortedError as exc:
                    # Ray Client's proxy answers "Initialization failure from server" while the
                    # server it starts for this client is still coming up: a passing state,
                    # tried again twice (1 s, 2 s) before it is reported.
                    if attempt == 2 or "Initialization failure" not in str(exc):
                        raise
                    time.sleep(1.0 + attempt)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {target.address!r}" if target else "a local Ray cluster"
            versions = cluster.version_mismatch_from(exc)
            if versions is not None:
                raise ConfigurationError(cluster.version_line(where, *versions)) from None
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            fix = ("Check the address: ray://HOST:10001 (Ray Client) or HOST:6379 / 'auto' from "
                   "a node of the cluster; `ray status --address HOST:6379` on the head says "
                   "whether it is up." if target else
                   "Run `ray start --head` yourself and pass its address, or check the log "
                   "under /tmp/ray/session_latest/logs.")
            raise ConfigurationError(f"ray executor: cannot start or reach {where}: "
                                     f"{type(exc).__name__}: {first}. {fix}") from None
        self._owns = True
        self.address = self._connected_address(target)

    def _connected_address(self, target: cluster.Target | None = None) -> str:
        if target is not None and target.kind == "client":
            return target.address
        try:
            return str(self._ray.get_runtime_context().gcs_address)
        except Exception:  # noqa: BLE001 - Ray Client has no GCS address to report
            return target.address if target is not None else "ray"

    @property
    def max_in_flight(self) -> int | None:
        return self._slots.limit

    @property
    def peak_in_flight(self) -> int:
        """The most tasks this executor has had in flight at once (all maps together)."""
        return self._slots.peak

    def describe(self) -> str:
        try:
            cpus = self._ray.cluster_resources().get("CPU", 0)
            nodes = sum(1 for n in self._ray.nodes() if n.get("Alive"))
        except Exception:  # noqa: BLE001
            return f"ray ({self.address})"
        return f"ray ({self.address}, {nodes} node(s), {cpus:g} CPUs)"

    def _remote_of(self, fn: Callable[[Any], Any]) -> Any:
        with self._remotes_lock:
            return self._remote_locked(fn)

    def _remote_locked(self, fn: Callable[[Any], Any]) -> Any:
        remote = self._remotes.get(fn)
        if remote is None:  # one export per function, not one per map
            options: dict[str, Any] = {"num_cpus": self.task_cpus,
                                       "max_retries": self.max_retries,
                                       "retry_exceptions": False}
            if self.scheduling_strategy:
                options["scheduling_strategy"] = self.scheduling_strategy
            remote = self._remotes[fn] = self._ray.remote(_task_of(fn)).options(**options)
        return remote

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
            concurrency: int) -> _RayRun:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}.")
        return _RayRun(self._ray, self._remote_of(fn), items, concurrency, self._slots,
                       _Sharer(self._ray, self.share_bytes))

    def close(self) -> None:
        self._remotes.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


