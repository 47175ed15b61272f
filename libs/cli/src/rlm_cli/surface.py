"""What every surface that hands RLM runs to other tools shares: ``rlm serve`` (OpenAI-compatible
HTTP), ``rlm mcp`` (Model Context Protocol) and the ``llm-rlm`` plugin for simonw/llm.

* :class:`Profile`: a named set of ``RLM(...)`` settings (backend, model, environment, limits),
  read from ``[profiles.NAME]`` tables of the user configuration file (``config.toml`` in
  :func:`rlm.keys.user_dir`) or built from command-line flags (:func:`add_profile_arguments`).
* :func:`read_files`: context passed by reference, as paths or globs under one allowed root.
* :func:`assemble_context`: named pieces of text plus a question become ``completion()``'s
  ``prompt`` and ``root_prompt`` (one rule for every surface).
* :class:`ProfileRun`: one run of a profile, with its progress, run id, tree-wide usage and
  :class:`~rlm.types.RunStatus` in an :class:`Outcome` (a limit is an outcome, not an error).
* :func:`check_bind`: a network surface refuses to listen beyond loopback without a token.

Threading: a :class:`ProfileRun` is executed on one worker thread (``execute`` blocks); its
``on_progress`` callback is called on the threads the run emits events from (the worker and
sub-call threads), so it must be quick and thread-safe (hand the update to an event loop with
``call_soon_threadsafe``). ``cancel`` may be called from any thread, before or during
``execute``.
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rlm.exceptions import CancellationError, ConfigurationError, RLMError
from rlm.types import AnswerSource, RunStatus, UsageSummary

__all__ = ["DEFAULT_PROFILE", "InputError", "Outcome", "Profile", "ProfileRun", "Progress",
           "add_profile_arguments", "assemble_context", "bearer_matches", "check_bind", "is_loopback",
           "load_profiles", "profiles_from_args", "read_files"]

DEFAULT_PROFILE = "default"
_GLOB_CHARS = frozenset("*?[")


class InputError(RLMError, ValueError):
    """An input a surface was given cannot become context (a path outside the allowed root, a
    binary file, too many bytes, a malformed message). Surfaces report it as a client error."""


# -- profiles ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """A named set of ``RLM(...)`` settings. ``backend=None`` chooses as ``RLM()`` does
    (``$RLM_BACKEND``, the config file's ``backend``, OpenAI with a key, else the embedded
    model). ``model`` and ``base_url`` go to ``backend_kwargs`` as ``model_name``/``base_url``."""

    name: str = DEFAULT_PROFILE
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    environment: str = "local"
    max_iterations: int = 30
    max_depth: int = 1
    max_timeout: float | None = None
    max_budget: float | None = None
    max_tokens: int | None = None
    max_errors: int | None = None
    cell_timeout: float | None = None
    backend_kwargs: Mapping[str, Any] = field(default_factory=dict)
    environment_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], *, where: str) -> Profile:
        """A profile from a ``[profiles.NAME]`` table; unknown keys and wrong types are errors
        that name ``where`` (the file) and the valid keys."""
        valid = {f.name: f for f in fields(cls) if f.name != "name"}
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigurationError(
                f"{where}: profile {name!r} has unknown settings {unknown}; valid ones: "
                f"{', '.join(sorted(valid))}.")
        kinds: dict[str, type | tuple[type, ...]] = {
            "backend": str, "model": str, "base_url": str, "environment": str,
            "description": str, "max_iterations": int, "max_depth": int,
            "max_tokens": int, "max_errors": int, "max_timeout": (int, float),
            "max_budget": (int, float), "cell_timeout": (int, float),
            "backend_kwargs": Mapping, "environment_kwargs": Mapping}
        for key, value in data.items():
            if not isinstance(value, kinds[key]) or isinstance(value, bool):
                names: dict[type | tuple[type, ...], str] = {
                    str: "a string", int: "an integer", Mapping: "a table"}
                want = names.get(kinds[key], "a number")
                raise ConfigurationError(f"{where}: profiles.{name}.{key} must be {want}, "
                                         f"got {value!r}.")
        values: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v)
                                  for k, v in data.items()}
        return cls(name=name, **values)

    def rlm_kwargs(self) -> dict[str, Any]:
        """The ``RLM(...)`` arguments of this profile."""
        backend_kwargs = dict(self.backend_kwargs)
        if self.model:
            backend_kwargs["model_name"] = self.model
        if self.base_url:
            backend_kwargs["base_url"] = self.base_url
        return {"backend": self.backend, "backend_kwargs": backend_kwargs,
                "environment": self.environment,
                "environment_kwargs": dict(self.environment_kwargs),
                "max_iterations": self.max_iterations, "max_depth": self.max_depth,
                "max_timeout": self.max_timeout, "max_budget": self.max_budget,
                "max_tokens": self.max_tokens, "max_errors": self.max_errors,
                "cell_timeout": self.cell_timeout}

    def summary(self) -> str:
        """One line for listings: what the profile runs."""
        if self.description:
            return self.description
        parts = [f"backend {self.backend or '(default)'}"]
        if self.model:
            parts.append(f"model {self.model}")
        parts.append(f"environment {self.environment}")
        parts.append(f"{self.max_iterations} turns")
        for label, value in (("timeout", self.max_timeout), ("budget $", self.max_budget)):
            if value is not None:
                parts.append(f"{label}{value}")
        return ", ".join(parts)


def load_profiles(config: Mapping[str, Any] | None = None, *,
                  where: str | None = None) -> dict[str, Profile]:
    """The ``[profiles.NAME]`` tables of the user configuration file (``{}`` when there are
    none). ``config`` defaults to the file itself (:func:`rlm.config.read_config`)."""
    from rlm.config import config_path, read_config

    if config is None:
        path = config_path()
        config, where = read_config(path), where or str(path)
    where = where or "the rlm configuration"
    raw = config.get("profiles", {})
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where}: profiles must be tables such as [profiles.fast].")
    out: dict[str, Profile] = {}
    for name, data in raw.items():
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{where}: profiles.{name} must be a table "
                                     f"([profiles.{name}]), got {data!r}.")
        out[str(name)] = Profile.from_mapping(str(name), data, where=where)
    return out


_FLAG_FIELDS = ("backend", "model", "base_url", "environment", "max_iterations", "max_depth",
                "max_timeout", "max_budget", "max_tokens", "cell_timeout")


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every surface command takes to choose or build profiles."""
    g = parser.add_argument_group(
        "profiles", "Which RLM settings each model id runs. Config profiles are the "
                    "[profiles.NAME] tables of the rlm config file; the flags below build one "
                    "more profile (named by --name) on top of them.")
    g.add_argument("--profile", action="append", metavar="NAME", dest="profiles",
                   help="serve only this config profile (repeatable; default: every one)")
    g.add_argument("--name", default=DEFAULT_PROFILE,
                   help=f"the name of the profile the flags build (default {DEFAULT_PROFILE!r})")
    g.add_argument("--backend", help="backend name (default: chosen as for rlm run)")
    g.add_argument("--model", help="model name (backend_kwargs['model_name'])")
    g.add_argument("--base-url", help="backend base URL (OpenAI-compatible servers)")
    g.add_argument("--env", dest="environment", help="execution environment (default local)")
    g.add_argument("--max-iterations", type=int)
    g.add_argument("--max-depth", type=int)
    g.add_argument("--timeout", dest="max_timeout", type=float, help="max_timeout per run, seconds")
    g.add_argument("--max-budget", type=float, help="max_budget per run, USD")
    g.add_argument("--max-tokens", type=int, help="max_tokens per run (input + output)")
    g.add_argument("--cell-timeout", type=float, help="seconds per REPL cell")


def add_server_arguments(parser: argparse.ArgumentParser, *, port: int, api_key_env: str,
                         max_concurrent: int, files_root: str | None, files_help: str,
                         http_only: bool = False) -> None:
    """The flags of a surface that listens (address, token, files, limits, logging), the same
    in ``rlm serve`` and ``rlm mcp``; ``http_only`` marks the ones that matter only over HTTP."""
    http = "http: " if http_only else ""
    parser.add_argument("--host", default="127.0.0.1",
                        help=f"{http}address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port,
                        help=f"{http}port (default {port}; 0 picks one)")
    parser.add_argument("--api-key", default=None,
                        help=f"{http}require 'Authorization: Bearer KEY' (default ${api_key_env}); "
                             "mandatory unless --host is a loopback address")
    parser.add_argument("--files-root", metavar="DIR", default=files_root, help=files_help)
    parser.add_argument("--max-concurrent", type=int, default=max_concurrent,
                        help=f"runs at once (default {max_concurrent})")
    parser.add_argument("--max-files-mb", type=float, default=256.0,
                        help="most MiB of files one request may read (default 256)")
    parser.add_argument("--no-log", action="store_true",
                        help="do not record runs in the trajectory store (rlm logs / rlm view)")


def profiles_from_args(args: argparse.Namespace,
                       config: Mapping[str, Any] | None = None) -> dict[str, Profile]:
    """The profiles a surface command offers: the config file's (or those named by
    ``--profile``), plus one built from the flags when any is given or the file has none."""
    profiles = load_profiles(config)
    wanted = getattr(args, "profiles", None)
    if wanted:
        missing = [n for n in wanted if n not in profiles]
        if missing:
            raise ConfigurationError(
                f"--profile {missing[0]}: no such profile in the rlm config file (profiles: "
                f"{', '.join(profiles) or 'none'}); add a [profiles.{missing[0]}] table or drop "
                "the flag.")
        profiles = {n: profiles[n] for n in wanted}
    flags: dict[str, Any] = {k: getattr(args, k, None) for k in _FLAG_FIELDS}
    given = {k: v for k, v in flags.items() if v is not None}
    if given or not profiles:
        name = getattr(args, "name", None) or DEFAULT_PROFILE
        profiles[name] = Profile(name=name, **given)
    return profiles


# -- inputs -----------------------------------------------------------------------------------
def read_files(specs: Iterable[str], root: str | os.PathLike[str] | None, *,
               max_bytes: int, flag: str = "--files-root") -> dict[str, str]:
    """Read files given by path or glob (``logs/*.log``, ``src/**/*.py``) under ``root``.

    Returns ``{path relative to root: text}`` in the order given (a glob's matches sorted).
    Refuses, with :class:`InputError`: any reference when ``root`` is ``None`` (the error names
    ``flag``), a path resolving outside ``root`` (symlinks included), a missing file, a
    directory, a glob matching nothing, a file that is not UTF-8 text, and more than
    ``max_bytes`` in total.
    """
    specs = list(specs)
    if not specs:
        return {}
    if root is None:
        raise InputError(f"files were passed by reference ({specs[0]!r}) but this server reads "
                         f"no files; start it with {flag} DIR to allow files under DIR.")
    base = Path(root).resolve()
    out: dict[str, str] = {}
    total = 0
    for spec in specs:
        if not isinstance(spec, str) or not spec:
            raise InputError(f"a file reference must be a non-empty string, got {spec!r}.")
        pattern = spec if os.path.isabs(spec) else str(base / spec)
        if _GLOB_CHARS & set(spec):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not matches:
                raise InputError(f"{spec!r} matches no file under {base}.")
        else:
            matches = [pattern]
        for match in matches:
            real = Path(match).resolve()
            if real != base and base not in real.parents:
                raise InputError(f"{spec!r} is outside the allowed root {base}; pass paths under "
                                 f"it (or restart with {flag} set to a directory holding it).")
            if real.is_dir():
                raise InputError(f"{spec!r} is a directory; pass a glob such as "
                                 f"'{spec.rstrip('/')}/**/*' for the files in it.")
            try:
                data = real.read_bytes()
            except FileNotFoundError:
                raise InputError(f"{spec!r}: no such file under {base}.") from None
            except OSError as exc:
                raise InputError(f"{spec!r}: cannot read it ({exc.strerror}).") from None
            total += len(data)
            if total > max_bytes:
                raise InputError(f"the files passed by reference exceed {max_bytes:,} bytes "
                                 f"(at {spec!r}); pass fewer files or raise the server's limit.")
            try:
                if b"\x00" in data[:8192]:
                    raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "NUL byte")
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{spec!r} is not UTF-8 text; convert it to text first (the "
                                 "RLM reads its context as text).") from None
            out[real.relative_to(base).as_posix() if real != base else real.name] = text
    return out


def assemble_context(pieces: Sequence[tuple[str, str]], question: str) -> tuple[Any, str | None]:
    """``(prompt, root_prompt)`` for ``completion()`` from named pieces of context and the
    question: no piece gives ``(question, None)`` (the question is the context, as in
    ``rlm run PROMPT``); one piece gives ``(its text, question)``; several give
    ``({name: text, ...}, question)`` in order, a repeated name suffixed `` (2)``, `` (3)``..."""
    if not pieces:
        return question, None
    if len(pieces) == 1:
        return pieces[0][1], question
    out: dict[str, str] = {}
    for name, text in pieces:
        key, n = name, 1
        while key in out:
            n += 1
            key = f"{name} ({n})"
        out[key] = text
    return out, question


# -- running ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """One progress update of a run tree: what just happened (``kind``: ``turn``,
    ``subcall_started``, ``subcall_done``, ``child_run``) and the counts so far."""

    kind: str
    message: str
    run_id: str | None
    turn: int
    max_turns: int
    subcalls_running: int
    subcalls_done: int
    child_runs: int
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Outcome:
    """How a run ended, for a surface to report: the answer (the partial one after a limit,
    ``""`` if none), the :class:`RunStatus`, the root run id and the tree-wide usage."""

    answer: str
    status: RunStatus
    usage: UsageSummary
    run_id: str | None
    execution_time: float
    root_model: str = ""
    answer_source: AnswerSource | None = None
    error: str | None = None  # the limit's message when status is not COMPLETED

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status.value,
                "answer_source": self.answer_source.value if self.answer_source else None,
                "execution_time": round(self.execution_time, 4), "root_model": self.root_model,
                "usage": self.usage.to_dict(), "error": self.error}


class _Watcher:
    """The sink a :class:`ProfileRun` adds: tracks the tree and reports :class:`Progress`."""

    def __init__(self, on_progress: Callable[[Progress], None] | None):
        self.on_progress = on_progress
        self.lock = threading.Lock()
        self.root: str | None = None
        self.turn = self.max_turns = self.running = self.done = self.children = self.tokens = 0
        self.final_usage: dict[str, Any] | None = None

    def handle(self, event: Any) -> None:
        kind = getattr(event, "type", "")
        with self.lock:
            msg = None
            if kind == "run_started":
                if self.root is None and not event.parent_run_id:
                    self.root = event.run_id
                    self.max_turns = int((event.settings or {}).get("max_iterations") or 0)
                else:
                    self.children += 1
                    kind, msg = "child_run", f"child run {event.run_id} started (depth {event.depth})"
            elif kind == "iteration_started" and event.run_id == self.root:
                self.turn = event.iteration
                kind, msg = "turn", f"turn {self.turn}/{self.max_turns}"
            elif kind == "subcall_started":
                self.running += 1
                msg = f"{event.kind}_query to {event.model} started"
            elif kind == "subcall_completed":
                self.running = max(0, self.running - 1)
                self.done += 1
                self.tokens += int(event.input_tokens or 0) + int(event.output_tokens or 0)
                kind = "subcall_done"
                msg = (f"{event.kind}_query to {event.model} "
                       f"{'failed' if event.error else 'done'} in {event.duration:.1f}s")
            elif kind == "iteration_completed" and event.run_id == self.root:
                usage = event.usage or {}
                self.tokens += int(usage.get("input_tokens") or 0) + int(
                    usage.get("output_tokens") or 0)
            elif kind == "run_finished" and event.run_id == self.root:
                self.final_usage = event.usage_summary
            if msg is None or self.on_progress is None:
                return
            update = Progress(kind=kind, message=msg, run_id=self.root, turn=self.turn,
                              max_turns=self.max_turns, subcalls_running=self.running,
                              subcalls_done=self.done, child_runs=self.children,
                              tokens=self.tokens)
        try:
            self.on_progress(update)
        except Exception:  # noqa: BLE001 - a broken progress consumer never stops a run
            pass

    def close(self) -> None:
        pass


class ProfileRun:
    """One run of a profile: ``execute()`` builds the RLM (with the trajectory store unless
    ``log=False``), runs it, closes it and returns an :class:`Outcome`. Limits (timeout,
    budget, tokens, errors) and cancellation come back as outcomes carrying the partial answer;
    other failures (a backend error, a bad configuration) raise."""

    def __init__(self, profile: Profile, prompt: Any, root_prompt: str | None = None, *,
                 on_progress: Callable[[Progress], None] | None = None, log: bool = True,
                 plugin_manager: Any = None):
        self.profile = profile
        self.prompt = prompt
        self.root_prompt = root_prompt
        self.log = log
        self.pm = plugin_manager
        self._watcher = _Watcher(on_progress)
        self._lock = threading.Lock()
        self._rlm: Any = None
        self._cancelled = False

    @property
    def run_id(self) -> str | None:
        """The root run's id once the run started (also in the trajectory store when logged)."""
        return self._watcher.root

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            rlm = self._rlm
        if rlm is not None:
            rlm.cancel()

    def _sinks(self) -> list[Any]:
        sinks: list[Any] = [self._watcher]
        if self.log:
            from rlm import get_plugin_manager
            from rlm.exceptions import UnknownPluginError

            try:
                sinks.append((self.pm or get_plugin_manager()).create("sink", "store"))
            except UnknownPluginError:
                pass
        return sinks

    def execute(self) -> Outcome:
        import time

        from rlm import RLM

        t0 = time.perf_counter()
        rlm = RLM(**self.profile.rlm_kwargs(), sinks=self._sinks(), plugin_manager=self.pm)
        with self._lock:
            self._rlm = rlm
            cancelled = self._cancelled
        try:
            if cancelled:
                raise CancellationError(None, "cancelled before the run started")
            result = rlm.completion(self.prompt, root_prompt=self.root_prompt)
        except RLMError as exc:
            status = getattr(exc, "status", None)
            if not isinstance(status, RunStatus) or status is RunStatus.ERROR:
                raise
            usage = UsageSummary.from_dict(self._watcher.final_usage or {})
            return Outcome(answer=getattr(exc, "partial_answer", None) or "", status=status,
                           usage=usage, run_id=self.run_id,
                           execution_time=time.perf_counter() - t0,
                           root_model=self.profile.model or "",
                           answer_source=(AnswerSource.PARTIAL if getattr(exc, "partial_answer", None)
                                          else AnswerSource.NONE),
                           error=f"{type(exc).__name__}: {exc}")
        finally:
            rlm.close()
        return Outcome(answer=result.response, status=RunStatus.parse(getattr(result, "status", "ok")),
                       usage=result.usage_summary, run_id=self.run_id,
                       execution_time=result.execution_time, root_model=result.root_model,
                       answer_source=getattr(result, "answer_source", None))


# -- network surfaces -------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True for hosts only this machine can reach (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True when an ``Authorization`` header value is ``Bearer TOKEN`` (compared in constant
    time)."""
    import hmac

    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def check_bind(host: str, token: str | None, *, flag: str = "--api-key",
               env: str = "RLM_SERVE_API_KEY") -> None:
    """Refuse to listen beyond loopback without a bearer token (anyone reaching the port could
    run code in the RLM's environment and spend the backend's credit)."""
    if not is_loopback(host) and not token:
        raise ConfigurationError(
            f"refusing to listen on {host} without a token: anyone who reaches it could run "
            f"models and code on this machine. Pass {flag} TOKEN (or set ${env}); clients then "
            "send 'Authorization: Bearer TOKEN'. Or bind to 127.0.0.1.")
