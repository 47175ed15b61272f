"""A typed facade over ``pm.hook``: discovery, registries per kind, and construction by name."""

from __future__ import annotations

import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import pluggy

from ._hookspecs import HOOK_KINDS, KNOWN_DISTRIBUTIONS, PROJECT_NAME, RLMHookSpecs
from ._loader import (
    LoadedPlugin,
    LoadFailure,
    RLMPluginWarning,
    describe_validation_error,
    external_stacklevel,
    known_hooks,
    load_entry_points,
    normalize_name,
    strict_from_env,
    trace_from_env,
    validate_plugin,
)
from ._registrar import PluginEntry, Registrar, _describe_dist
from .exceptions import ConfigurationError, PluginError, UnknownPluginError

KIND_LABELS = {
    "backend": "backend", "environment": "environment", "tool_provider": "tool provider",
    "compaction": "compaction strategy", "sink": "logger sink", "command": "command",
    "executor": "executor",
}
KIND_PLURALS = {
    "backend": "backends", "environment": "environments", "tool_provider": "tool providers",
    "compaction": "compaction strategies", "sink": "logger sinks", "command": "commands",
    "executor": "executors",
}
# What the user calls the keyword arguments that reach ``factory(**kwargs)``.
KIND_ARGUMENTS = {
    "backend": "backend_kwargs", "environment": "environment_kwargs",
    "compaction": "compaction_kwargs", "executor": "executor_kwargs",
}



def _install_hint(kind: str, name: str) -> str:
    dist = KNOWN_DISTRIBUTIONS.get((kind, name))
    if dist:
        return f"Install it with: pip install {dist}"
    # No guessed pip line for other names: a typo must not point at whatever someone publishes
    # under it. Plugins by others are installed by the name their authors give.
    return ("If a third-party plugin provides it, install that plugin's distribution; "
            "`rlm plugins` lists what is installed and anything that failed to load.")


def _signature_problem(factory: Callable[..., Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """``(error, accepted parameters)`` when ``factory(*args, **kwargs)`` cannot bind."""
    import inspect

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return None
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc), _accepted(sig)
    return None


def _accepted(sig: Any) -> str:
    names = [p.name if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) else
             ("**" if p.kind == p.VAR_KEYWORD else "*") + p.name for p in sig.parameters.values()]
    return ", ".join(names) or "no arguments"


class PluginManager:
    """The kernel's plugin manager.

    ``PluginManager()`` loads every entry point of the ``rlm`` group. Pass
    ``load_entrypoints=False`` for an isolated manager (tests, embedding) and ``register`` plugin
    objects by hand. Registries are built lazily per kind on first use and rebuilt after
    ``register``/``unregister``.

    Registration order decides who wins a name clash: each kind's hook implementations run oldest
    registration first (``trylast`` before and ``tryfirst`` after the others, as pluggy orders
    them), and a later registration of a name replaces the earlier one. Entry points load
    first-party plugins first, so an installed third-party plugin overrides them and an
    in-process ``register`` overrides both. Every clash is reported (a :class:`RLMPluginWarning`,
    :meth:`conflicts`, ``report()``), and raises :class:`PluginError` in strict mode.
    """

    def __init__(self, *, load_entrypoints: bool = True, strict: bool | None = None,
                 trace: bool | None = None):
        self.strict = strict_from_env() if strict is None else strict
        self.trace = trace_from_env() if trace is None else trace
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(RLMHookSpecs)
        if self.trace:
            self.pm.trace.root.setwriter(lambda s: sys.stderr.write("rlm-trace: " + s))
            self.pm.enable_tracing()
        self.loaded: list[LoadedPlugin] = []
        self.failed: list[LoadFailure] = []
        self.skipped: list[str] = []
        self._registries: dict[str, Registrar] = {}
        self._reported: set[tuple[str, ...]] = set()
        self._lock = threading.RLock()
        if load_entrypoints:
            self.loaded, self.failed, self.skipped = load_entry_points(
                self.pm, strict=self.strict, trace=self.trace)

    # -- registration -------------------------------------------------------------------
    def register(self, plugin: object, name: str | None = None) -> str:
        """Register an in-process plugin object (a module or an object with hookimpls).

        Raises :class:`PluginError` (and registers nothing) when the name is taken or blocked,
        a hookimpl has a bad signature, or the plugin implements an unknown hook.
        """
        with self._lock:
            label = name or getattr(plugin, "__name__", None) or repr(plugin)
            try:
                plugin_name = self.pm.register(plugin, name=name)
            except pluggy.PluginValidationError as exc:
                raise PluginError(describe_validation_error(exc), plugin=label) from exc
            except ValueError as exc:
                raise PluginError(
                    f"cannot register plugin {label!r}: {exc}. Unregister the other one first, "
                    "or pass a different name=.", plugin=label) from exc
            if plugin_name is None:
                raise PluginError(f"cannot register plugin {label!r}: that name is blocked.",
                                  plugin=label)
            try:
                validate_plugin(self.pm, plugin_name)
            except PluginError:
                self.pm.unregister(name=plugin_name)
                raise
            self.loaded.append(LoadedPlugin(plugin_name, None, None, None))
            self._registries.clear()
            return plugin_name

    def unregister(self, name: str) -> None:
        """Remove a plugin (and the record of its hook failures); unknown names are ignored."""
        with self._lock:
            self.pm.unregister(name=name)
            self.loaded = [p for p in self.loaded if p.name != name]
            self.failed = [f for f in self.failed if not (f.hook and f.name == name)]
            self._reported = {r for r in self._reported if name not in r[1:2]}
            self._registries.clear()

    def check_pending(self) -> None:
        """Raise :class:`PluginError` if a registered plugin implements a hook no spec declares.

        Plugins loaded from entry points and through :meth:`register` are already checked one by
        one; this also covers plugins registered on ``self.pm`` directly.
        """
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin_name = self.pm.get_name(exc.plugin) if exc.plugin is not None else None
            raise PluginError(
                f"{exc}. Known hooks are: {', '.join(known_hooks())}. Rename the function, or "
                f"mark it @hookimpl(optionalhook=True).", plugin=plugin_name) from exc

    # -- registries --------------------------------------------------------------------
    def registry(self, kind: str) -> Registrar:
        """The registrar of ``kind`` after every plugin's hook ran (built once, then cached)."""
        if kind not in HOOK_KINDS:
            raise ConfigurationError(
                f"unknown extension kind {kind!r}; kinds are {', '.join(sorted(HOOK_KINDS))}")
        with self._lock:
            reg = self._registries.get(kind)
            if reg is None:
                reg = self._collect(kind)
                self._registries[kind] = reg
            return reg

    def _provenance(self, plugin_name: str) -> tuple[str | None, str | None, str | None]:
        for p in self.loaded:
            if p.name == plugin_name:
                return p.distribution, p.version, p.entry_point
        return None, None, None

    def _warn_once(self, key: tuple[str, ...], message: str) -> bool:
        if key in self._reported:
            return False
        self._reported.add(key)
        warnings.warn(message, RLMPluginWarning, stacklevel=external_stacklevel())
        return True

    def _collect(self, kind: str) -> Registrar:
        hook_name = HOOK_KINDS[kind]
        registrar = Registrar(kind)
        caller = getattr(self.pm.hook, hook_name)
        plural = KIND_PLURALS[kind]
        # Call each implementation on its own, oldest registration first, so that we know who
        # registered what and one failing hook is rolled back without losing the others.
        for impl in caller.get_hookimpls():
            dist, version, ep_value = self._provenance(impl.plugin_name)
            where = _describe_dist(dist, version)
            if self.trace:
                sys.stderr.write(f"rlm-trace: {hook_name} -> {impl.plugin_name}\n")
            if impl.wrapper or impl.hookwrapper:
                exc: BaseException = PluginError(
                    f"{hook_name} is a registration hook and cannot be a wrapper; drop "
                    "wrapper=True / hookwrapper=True", plugin=impl.plugin_name,
                    distribution=dist)
                tb = ""
            else:
                registrar._begin(impl.plugin_name, dist, version)
                call_args = {"registrar": registrar}
                try:
                    impl.function(*[call_args[a] for a in impl.argnames])
                except Exception as caught:  # noqa: BLE001 - isolate every plugin
                    registrar._rollback()
                    exc, tb = caught, traceback.format_exc()
                else:
                    registrar._end()
                    continue
            error = f"{type(exc).__name__}: {exc}"
            fix = (f"Fix or upgrade it (pip install --upgrade {dist}), or disable it with "
                   f"RLM_DISABLE_PLUGINS={impl.plugin_name}." if dist else
                   "Fix the plugin or unregister it.")
            msg = (f"rlm: plugin {impl.plugin_name!r} ({where}) failed in {hook_name}: {error}. "
                   f"Its {plural} are skipped (anything it registered before failing was rolled "
                   f"back). {fix}")
            if self.strict:
                raise PluginError(msg, distribution=dist, plugin=impl.plugin_name) from exc
            key = ("hook", impl.plugin_name, hook_name, error)
            if key not in self._reported:
                self.failed.append(LoadFailure(impl.plugin_name, dist, version, ep_value,
                                               error, tb, hook=hook_name))
                self._warn_once(key, msg)
        for conflict in registrar.conflicts:
            if self.strict:
                raise PluginError(conflict + " (RLM_STRICT_PLUGINS is set, so a clash is an "
                                  "error.)")
            self._warn_once(("conflict", kind, conflict), "rlm: " + conflict)
        return registrar

    def names(self, kind: str) -> list[str]:
        return self.registry(kind).names()

    def conflicts(self) -> list[str]:
        """Every name clash between plugins, over all kinds (empty when there is none)."""
        out: list[str] = []
        for kind in HOOK_KINDS:
            try:
                out.extend(self.registry(kind).conflicts)
            except PluginError:
                continue
        return out

    def entry(self, kind: str, name: str) -> PluginEntry:
        """The entry registered under ``name`` (or an alias), else :class:`UnknownPluginError`."""
        reg = self.registry(kind)
        entry = reg.entries.get(name)
        if entry is not None:
            return entry
        hints: list[str] = []
        import difflib

        close = difflib.get_close_matches(name, reg.names(), n=1, cutoff=0.6) or [
            n for n in reg.names() if n.lower() == str(name).lower()]
        if close:
            hints.append(f"Did you mean {close[0]!r}?")
        known_dist = KNOWN_DISTRIBUTIONS.get((kind, name))
        for f in self.failed:
            dist = normalize_name(f.distribution or "")
            if (f.name == name or (known_dist and dist == normalize_name(known_dist))
                    or (dist and dist.endswith("-" + normalize_name(str(name))))):
                hints.append(f"The plugin {f.name!r} ({f.distribution or 'in-process'}) that may "
                             f"provide it failed to load: {f.error}.")
                break
        if self.skipped:
            from ._loader import disabled_plugins

            why = "; ".join(f"{r['name']}: {r['reason']}" for r in disabled_plugins()
                            if r["name"] in self.skipped)
            hints.append(f"These plugins are installed but disabled: {why or ', '.join(self.skipped)}.")
        if name not in self.skipped:  # a disabled plugin is installed: enabling it is the fix
            hints.append(_install_hint(kind, name))
        raise UnknownPluginError(KIND_LABELS[kind], name, reg.names(), " ".join(hints),
                                 plural=KIND_PLURALS[kind])

    def create(self, kind: str, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Build the named plugin object: ``factory(*args, **kwargs)``.

        Arguments the factory does not accept (a wrong keyword in ``backend_kwargs``, say)
        raise :class:`ConfigurationError` naming the plugin, the argument and what it accepts.
        """
        entry = self.entry(kind, name)
        factory: Callable[..., Any] = entry.load()
        where = "arguments" if kind not in KIND_ARGUMENTS else KIND_ARGUMENTS[kind]
        problem = _signature_problem(factory, args, kwargs)
        if problem is not None:
            raise ConfigurationError(
                f"The {KIND_LABELS[kind]} {name!r} ({entry.origin}) rejected its arguments: "
                f"{problem[0]}. It accepts: {problem[1]}. Check the {where} you passed.")
        try:
            return factory(*args, **kwargs)
        except TypeError as exc:
            tb = exc.__traceback__
            at_call_site = tb is not None and tb.tb_next is None
            if at_call_site or "unexpected keyword argument" in str(exc):
                raise ConfigurationError(
                    f"The {KIND_LABELS[kind]} {name!r} ({entry.origin}) rejected its "
                    f"arguments: {exc}. Check the {where} you passed.") from exc
            raise

    # -- reporting ---------------------------------------------------------------------
    def report(self) -> list[dict[str, Any]]:
        """One row per plugin: distribution, version, hooks, names registered, status.

        ``status`` is ``"ok"``, ``"partial"`` (loaded, but a registration hook raised: see
        ``error``), ``"failed"`` (could not be loaded at all: see ``error``) or ``"disabled"``
        (kept out by RLM_LOAD_PLUGINS / RLM_DISABLE_PLUGINS: see ``reason``). Rows of plugins
        involved in a name clash carry ``conflicts``.
        """
        registered: dict[str, dict[str, list[str]]] = {}
        conflicts: list[str] = []
        for kind in HOOK_KINDS:
            try:
                reg = self.registry(kind)
            except PluginError:
                continue
            conflicts.extend(reg.conflicts)
            for name, entry in sorted(reg.entries.items()):
                names = registered.setdefault(entry.plugin, {}).setdefault(kind, [])
                if name not in names:
                    names.append(name)
        rows: list[dict[str, Any]] = []
        for p in self.loaded:
            plugin = self.pm.get_plugin(p.name)
            hooks = sorted(h.name for h in (self.pm.get_hookcallers(plugin) or [])) if plugin else []
            errors = [f"{f.hook}: {f.error}" for f in self.failed if f.hook and f.name == p.name]
            row: dict[str, Any] = {
                "name": p.name, "distribution": p.distribution, "version": p.version,
                "entry_point": p.entry_point, "hooks": hooks,
                "registered": registered.get(p.name, {}),
                "status": "partial" if errors else "ok",
                "load_ms": round(p.load_time * 1000, 2)}
            if errors:
                row["error"] = "; ".join(errors)
            mine = [c for c in conflicts if f"plugin {p.name!r} (" in c]
            if mine:
                row["conflicts"] = mine
            rows.append(row)
        for f in self.failed:
            if f.hook:
                continue
            rows.append({"name": f.name, "distribution": f.distribution, "version": f.version,
                         "entry_point": f.entry_point, "hooks": [], "registered": {},
                         "status": "failed", "error": f.error})
        if self.skipped:
            from ._loader import disabled_plugins

            rows.extend(r for r in disabled_plugins() if r["name"] in self.skipped)
        return rows


_default: PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = PluginManager()
    return _default


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (the next use reloads entry points)."""
    global _default
    with _default_lock:
        _default = None


__all__ = ["PluginManager", "RLMPluginWarning", "get_plugin_manager", "reset_plugin_manager"]
