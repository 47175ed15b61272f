"""The host end of the channel to a REPL worker (see :mod:`rlm_isolation.worker`).

One :class:`Channel` per worker process: it authenticates the worker with the per-run secret,
then a reader thread takes every frame the worker sends. Helper calls (``llm_query`` and friends,
from any number of threads in the sandbox) are served concurrently on a small thread pool that
calls the run's :class:`~rlm.protocols.Host`, where depth, budget and time are enforced; cell
results and acknowledgements are matched to the waiting request by id.

Everything the worker sends is untrusted: frames are size-limited, every field is checked, and a
worker that breaks the protocol is cut off (the environment then reports it and restarts).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .worker import (CALL_METHODS, KIND_JSON, PROTOCOL, FrameReader, ProtocolError, encode_blob,
                     encode_json, mac)

BLOB_CHUNK = 1 << 20
#: Prompts of helper calls in flight (running or waiting) on one channel: ``llm_query_batched``
#: counts each of its prompts, so one small frame of 150,000 prompts cannot hold the host's memory.
MAX_PENDING_ITEMS = 10_000
#: Bytes of helper-call frames in flight on one channel (one frame of any size up to the frame
#: limit is always admitted when nothing else is in flight).
MAX_CALL_BYTES = 128 * 1024 * 1024


def new_secret() -> bytes:
    """A fresh per-run secret (64 hex characters)."""
    return secrets.token_hex(32).encode("ascii")


class ChannelClosed(Exception):
    """The worker went away (its process died or broke the protocol)."""


class Channel:
    """Talks to one worker over ``read(n) -> bytes`` / ``write(bytes)``.

    Args:
        read, write: the transport (a pipe, a Unix socket, a container's attached streams).
        host: the run's Host; ``None`` until :meth:`set_host` (calls are refused meanwhile).
        secret: the per-run secret the worker was given.
        max_concurrent_calls: how many helper calls run on the host at once; more wait in line.
        max_pending_calls: how many may be running or waiting at once; a call beyond that is
            answered at once with an error string (a worker flooding ``call`` frames cannot grow
            the host's memory without bound).
        max_pending_items: how many prompts those calls may carry in all (a batched call counts
            each of its prompts); a call that would pass it is answered with an error string.
        max_call_bytes: how many bytes of call frames may be in flight at once; likewise.
    """

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], Any], host: Any,
                 secret: bytes, *, max_concurrent_calls: int = 16, max_pending_calls: int = 256,
                 max_pending_items: int = MAX_PENDING_ITEMS, max_call_bytes: int = MAX_CALL_BYTES,
                 name: str = "rlm-worker"):
        self._reader = FrameReader(read)
        self._write = write
        self.host = host
        self._secret = secret
        self._name = name
        self._send_lock = threading.Lock()
        self._waiters: dict[int, list[Any]] = {}
        self._waiters_lock = threading.Lock()
        self._next_id = 0
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent_calls,
                                        thread_name_prefix=f"{name}-call")
        self._thread: threading.Thread | None = None
        self.closed = threading.Event()
        self.close_reason: str | None = None
        self.worker_info: dict[str, Any] = {}
        self.calls_served = 0
        self._max_pending = max_pending_calls
        self._pending_calls = 0
        self._max_items = max_pending_items
        self._pending_items = 0
        self._max_bytes = max_call_bytes
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    def handshake(self, config: dict[str, Any]) -> dict[str, Any]:
        """Authenticate both ways, send ``config``, return the worker's ``ready`` message.

        Runs in the caller's thread; the caller bounds it in time by killing the process.
        """
        hello = self._read_json("hello")
        if hello.get("protocol") != PROTOCOL:
            raise ProtocolError(f"the worker speaks protocol {hello.get('protocol')!r}, the host "
                                f"{PROTOCOL}: install the same rlm version on both sides")
        nonce = secrets.token_hex(16)
        self.send({"t": "auth", "mac": mac(self._secret, "host", str(hello.get("nonce", ""))),
                   "nonce": nonce})
        reply = self._read_json("auth")
        import hmac

        if not hmac.compare_digest(str(reply.get("mac", "")), mac(self._secret, "worker", nonce)):
            raise ProtocolError("the worker failed to authenticate (wrong per-run secret)")
        self.send({"t": "config", **config})
        ready = self._read_json("ready")
        self.worker_info = {"pid": hello.get("pid"), "python": hello.get("python"),
                            "cwd": ready.get("cwd")}
        self._thread = threading.Thread(target=self._read_loop, name=f"{self._name}-reader",
                                        daemon=True)
        self._thread.start()
        return ready

    def _read_json(self, expected: str) -> dict[str, Any]:
        kind, msg = self._reader.read()
        if kind != KIND_JSON or msg.get("t") != expected:
            got = msg.get("t") if kind == KIND_JSON else "a binary frame"
            raise ProtocolError(f"expected {expected!r} from the worker, got {got!r}")
        return msg

    def close(self, reason: str = "closed by the host") -> None:
        self._fail_all(reason)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- sending -------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        data = encode_json(message)
        with self._send_lock:
            self._write(data)

    def send_file(self, name: str, chunks: Any) -> None:
        """Stream a file into the worker's context directory (``chunks`` yields bytes)."""
        file_id = self._new_id()
        self.request({"t": "file_open", "id": file_id, "path": name}, wait=False)
        for chunk in chunks:
            for start in range(0, len(chunk), BLOB_CHUNK):
                data = encode_blob(file_id, bytes(chunk[start:start + BLOB_CHUNK]))
                with self._send_lock:
                    self._write(data)
        self.request({"t": "file_close", "id": file_id})

    def _new_id(self) -> int:
        with self._waiters_lock:
            self._next_id += 1
            return self._next_id

    def request(self, message: dict[str, Any], *, timeout: float | None = None,
                wait: bool = True) -> dict[str, Any] | None:
        """Send a message with a fresh id and wait for the worker's answer with that id.

        Raises :class:`ChannelClosed` if the worker goes away and :class:`TimeoutError` when
        ``timeout`` passes first.
        """
        if "id" not in message:
            message = {**message, "id": self._new_id()}
        slot: list[Any] = [threading.Event(), None]
        if wait:
            with self._waiters_lock:
                if self.closed.is_set():
                    raise ChannelClosed(self.close_reason or "the worker is gone")
                self._waiters[message["id"]] = slot
        try:
            self.send(message)
        except OSError as exc:
            self._fail_all(f"writing to the worker failed: {exc}")
            raise ChannelClosed(self.close_reason or str(exc)) from exc
        if not wait:
            return None
        if not slot[0].wait(timeout):
            with self._waiters_lock:
                self._waiters.pop(message["id"], None)
            raise TimeoutError(f"the worker did not answer {message['t']!r} in {timeout:g} s")
        if isinstance(slot[1], ChannelClosed):
            raise slot[1]
        return slot[1]

    # --- receiving -----------------------------------------------------------------------

    def _read_loop(self) -> None:
        reason = "the worker closed the channel"
        try:
            while True:
                kind, msg = self._reader.read()
                if kind != KIND_JSON:
                    raise ProtocolError("the worker sent a binary frame")
                t = msg["t"]
                if t == "call":
                    cost = (_items(msg), self._reader.last_size)
                    refusal = self._admit(*cost)
                    if refusal is not None:
                        self.send({"t": "reply", "id": msg.get("id"), "v": refusal})
                    else:
                        self._pool.submit(self._serve_call, msg, cost)
                        del msg  # the call's thread holds it now, and drops it when it ends
                elif t in ("result", "ack"):
                    with self._waiters_lock:
                        slot = self._waiters.pop(msg.get("id"), None)
                    if slot is not None:
                        slot[1] = msg
                        slot[0].set()
                else:
                    raise ProtocolError(f"unexpected message {t!r} from the worker")
        except EOFError:
            pass
        except (ProtocolError, OSError, ValueError) as exc:
            reason = f"the worker broke the channel protocol: {exc}"
        except RuntimeError:  # the pool was shut down while the loop still ran
            reason = "the channel was closed"
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        with self._waiters_lock:
            if not self.closed.is_set():
                self.close_reason = reason
                self.closed.set()
            waiters, self._waiters = self._waiters, {}
        for slot in waiters.values():
            slot[1] = ChannelClosed(reason)
            slot[0].set()

    def _admit(self, items: int, size: int) -> str | None:
        """Count a call in (None), or say why it is refused: the host holds at most
        ``max_pending_calls`` calls, ``max_pending_items`` prompts and ``max_call_bytes`` bytes
        of call frames at once, whatever the worker sends."""
        with self._pending_lock:
            if self._pending_calls >= self._max_pending:
                return (f"Error: {self._max_pending} helper calls are already running or waiting "
                        "on the host; wait for some to finish (fewer threads, or one "
                        "llm_query_batched call for many prompts)")
            if items > self._max_items:
                return (f"Error: {items:,} prompts in one call is more than the host takes at "
                        f"once ({self._max_items:,}); split the list into batches of at most "
                        f"{self._max_items:,} prompts")
            if self._pending_items + items > self._max_items:
                return (f"Error: helper calls waiting on the host already carry "
                        f"{self._pending_items:,} prompts (the limit is {self._max_items:,}); "
                        "wait for them to finish")
            if self._pending_bytes and self._pending_bytes + size > self._max_bytes:
                return (f"Error: helper calls waiting on the host already carry "
                        f"{self._pending_bytes // 2**20:,} MB (the limit is "
                        f"{self._max_bytes // 2**20:,} MB); wait for them to finish, or send "
                        "smaller prompts")
            self._pending_calls += 1
            self._pending_items += items
            self._pending_bytes += size
            return None

    def _serve_call(self, msg: dict[str, Any], cost: tuple[int, int] = (1, 0)) -> None:
        call_id = msg.get("id")
        try:
            value = self._dispatch(msg)
        except Exception as exc:  # noqa: BLE001 - helpers never raise into model code
            value = f"Error: {type(exc).__name__}: {exc}"
        finally:
            del msg  # release the prompts before the reply is sent
            with self._pending_lock:
                self._pending_calls -= 1
                self._pending_items -= cost[0]
                self._pending_bytes -= cost[1]
        try:
            self.send({"t": "reply", "id": call_id, "v": value})
        except (OSError, ProtocolError, TypeError, ValueError) as exc:
            try:
                self.send({"t": "reply", "id": call_id,
                           "v": f"Error: the reply could not be sent back: {exc}"})
            except Exception:  # noqa: BLE001 - the worker is gone; the reader notices
                pass

    def _dispatch(self, msg: dict[str, Any]) -> Any:
        # The prompts leave ``msg`` here: the caller's ``msg`` must not keep them alive.
        method, args = msg.pop("m", None), msg.pop("a", None)
        if method not in CALL_METHODS:
            return f"Error: unknown helper {method!r}"
        if not isinstance(args, list) or len(args) != 2:
            return f"Error: {method} takes (prompt, model=None)"
        prompt, model = args
        args.clear()
        if model is not None and not isinstance(model, str):
            return f"Error: model must be a string or None, not {type(model).__name__}"
        host = self.host
        if host is None:
            return "Error: the REPL is not attached to a run"
        self.calls_served += 1
        if method.endswith("_batched"):
            if not isinstance(prompt, list):
                return f"Error: {method} takes a list of prompts"
            return list(getattr(host, method)(prompt, model))
        return getattr(host, method)(prompt, model)


def _items(msg: dict[str, Any]) -> int:
    """How many prompts a call frame carries (a batched call: each of its prompts)."""
    args = msg.get("a")
    if isinstance(args, list) and args and isinstance(args[0], list) and \
            str(msg.get("m", "")).endswith("_batched"):
        return max(1, len(args[0]))
    return 1
