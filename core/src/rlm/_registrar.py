"""Registrar objects: what a registration hook receives, and what it records.

A registrar remembers which plugin registered each name, so ``rlm plugins`` can say who
provides what and a clash between two plugins names both.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .exceptions import PluginError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")
_IDENT = r"[A-Za-z_]\w*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_TARGET = re.compile(rf"{_DOTTED}:{_DOTTED}", re.ASCII)


def _describe_dist(distribution: str | None, version: str | None) -> str:
    if not distribution:
        return "in-process"
    return f"distribution {distribution} {version}" if version else f"distribution {distribution}"


def _conflict_fix(first: PluginEntry, second: PluginEntry) -> str:
    switchable = [e.plugin for e in (first, second) if e.distribution]
    if switchable:
        return ("Uninstall one of them, or disable one with "
                + " or ".join(f"RLM_DISABLE_PLUGINS={p}" for p in dict.fromkeys(switchable)) + ".")
    return "Register only one of them."


@dataclass
class PluginEntry:
    """One registered name: a lazy factory plus where it came from.

    ``target`` is either the factory itself or a ``"package.module:attribute"`` string that
    :meth:`load` imports on first use, so listing plugins never imports a provider SDK.
    """

    kind: str
    name: str
    target: str | Callable[..., Any]
    plugin: str
    distribution: str | None = None
    version: str | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    _resolved: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @property
    def target_name(self) -> str:
        if isinstance(self.target, str):
            return self.target
        module = getattr(self.target, "__module__", None) or "?"
        qualname = getattr(self.target, "__qualname__", None) or type(self.target).__qualname__
        return f"{module}:{qualname}"

    @property
    def loaded(self) -> bool:
        """Whether the factory has been imported already."""
        return self._resolved is not None

    @property
    def origin(self) -> str:
        """``plugin 'x' (distribution some-dist 1.0)`` or ``plugin 'x' (in-process)``."""
        return f"plugin {self.plugin!r} ({_describe_dist(self.distribution, self.version)})"

    def _fix(self) -> str:
        if self.distribution:
            return (f"Reinstall or upgrade it (pip install --upgrade {self.distribution}), or "
                    f"disable it with RLM_DISABLE_PLUGINS={self.plugin}.")
        return "Fix the plugin module, or stop registering it."

    def load(self) -> Callable[..., Any]:
        """Import and return the factory. Errors name the distribution that registered it."""
        resolved = self._resolved
        if resolved is not None:
            return resolved
        if not isinstance(self.target, str):
            self._resolved = self.target
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            own = module_name == missing or module_name.startswith(missing + ".")
            if missing and not own:
                # The plugin's module exists but needs something that is not installed:
                # usually the provider SDK, a dependency of the distribution.
                top = missing.split(".")[0]
                if self.distribution:
                    fix = (f"{self.distribution} needs the module {top!r}: reinstall it with its "
                           f"dependencies (pip install --upgrade {self.distribution}) or install "
                           f"the module's package, or disable it with "
                           f"RLM_DISABLE_PLUGINS={self.plugin}.")
                else:
                    fix = f"Install the package that provides the module {top!r}."
            else:
                fix = self._fix()
            raise PluginError(
                f"The {self.kind} {self.name!r} registered by {self.origin} could not be loaded "
                f"from {self.target!r}: {type(exc).__name__}: {exc}. {fix}",
                distribution=self.distribution, plugin=self.plugin,
            ) from exc
        except Exception as exc:  # report any import failure with provenance
            raise PluginError(
                f"The {self.kind} {self.name!r} registered by {self.origin} could not be loaded "
                f"from {self.target!r}: importing {module_name} raised {type(exc).__name__}: "
                f"{exc}. {self._fix()}",
                distribution=self.distribution, plugin=self.plugin,
            ) from exc
        walked = module_name
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise PluginError(
                    f"The {self.kind} {self.name!r} registered by {self.origin} points at "
                    f"{self.target!r}, but {walked} has no attribute {part!r}. The plugin "
                    f"registers a factory that does not exist: {self._fix()}",
                    distribution=self.distribution, plugin=self.plugin,
                ) from exc
            walked = f"{walked}.{part}" if walked != module_name else f"{module_name}:{part}"
        if not callable(obj):
            raise PluginError(
                f"The {self.kind} {self.name!r} registered by {self.origin} points at "
                f"{self.target!r}, which is a {type(obj).__name__}, not a callable factory. "
                f"{self._fix()}", distribution=self.distribution, plugin=self.plugin)
        factory: Callable[..., Any] = obj
        self._resolved = factory
        return factory

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "target": self.target_name, "plugin": self.plugin,
            "distribution": self.distribution, "version": self.version,
            "description": self.description, "aliases": list(self.aliases),
            **({"options": self.options} if self.options else {}),
        }


class Registrar:
    """Passed to every ``rlm_register_*`` hook as ``registrar``.

    ``add(name, factory, *, description="", aliases=(), **options)`` registers one name.
    ``factory`` is a callable or a ``"package.module:attribute"`` string imported on first use.

    Each hook implementation runs between ``_begin`` and ``_end``; if it raises, ``_rollback``
    undoes exactly what it did (including names it took over from another plugin).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, PluginEntry] = {}
        self.conflicts: list[str] = []
        self._plugin = "<unknown>"
        self._distribution: str | None = None
        self._version: str | None = None
        self._undo: list[tuple[str, PluginEntry | None]] = []
        self._conflicts_mark = 0
        self._lock = threading.RLock()

    # -- used by the plugin manager ---------------------------------------------------
    def _begin(self, plugin: str, distribution: str | None, version: str | None) -> None:
        self._plugin, self._distribution, self._version = plugin, distribution, version
        self._undo = []
        self._conflicts_mark = len(self.conflicts)

    def _end(self) -> None:
        self._plugin, self._distribution, self._version = "<unknown>", None, None
        self._undo = []
        self._conflicts_mark = len(self.conflicts)

    def _rollback(self) -> None:
        """Undo everything the current plugin did (its hook raised half-way).

        Names it added are removed; names it had taken over from an earlier plugin go back to
        that plugin; the conflicts it caused are forgotten.
        """
        with self._lock:
            for key, previous in reversed(self._undo):
                if previous is None:
                    self.entries.pop(key, None)
                else:
                    self.entries[key] = previous
            del self.conflicts[self._conflicts_mark:]
            self._end()

    def _error(self, message: str) -> PluginError:
        where = f"{self._plugin!r} ({_describe_dist(self._distribution, self._version)})"
        return PluginError(f"Plugin {where}: {message}", plugin=self._plugin,
                           distribution=self._distribution)

    # -- used by plugins -----------------------------------------------------------
    def add(self, name: str, factory: str | Callable[..., Any], *, description: str = "",
            aliases: tuple[str, ...] | list[str] = (), **options: Any) -> None:
        """Register ``name`` (and its ``aliases``) for this registrar's kind.

        Raises :class:`rlm.PluginError` naming the plugin for an invalid name, alias or
        factory, or for a name this plugin already registered.
        """
        if isinstance(aliases, str) or not isinstance(aliases, (tuple, list)):
            raise self._error(
                f"the {self.kind} {name!r} was registered with aliases={aliases!r}; pass a tuple "
                f"or list of names, for example aliases=({str(aliases)!r},).")
        all_names = (name, *aliases)
        for n in all_names:
            if not isinstance(n, str) or not _NAME.fullmatch(n):
                raise self._error(
                    f"tried to register the {self.kind} name {n!r}: names are letters, digits, "
                    "'_', '-', '.' and '/', and start with a letter or digit.")
        if len(set(all_names)) != len(all_names):
            raise self._error(f"the {self.kind} {name!r} lists the same name twice in "
                              f"{list(all_names)!r}.")
        if not isinstance(description, str):
            raise self._error(f"the description of the {self.kind} {name!r} must be a string, "
                              f"not {type(description).__name__}.")
        if isinstance(factory, str):
            if not _TARGET.fullmatch(factory):
                raise self._error(
                    f"registered the {self.kind} {name!r} with factory {factory!r}; a string "
                    "factory must look like 'package.module:attribute' (dotted module path, "
                    "one colon, dotted attribute path).")
        elif not callable(factory):
            raise self._error(
                f"registered the {self.kind} {name!r} with a factory of type "
                f"{type(factory).__name__}; pass a callable or a 'package.module:attribute' string.")
        with self._lock:
            for n in all_names:
                existing = self.entries.get(n)
                if existing is not None and existing.plugin == self._plugin:
                    raise self._error(
                        f"registered the {self.kind} {n!r} twice (already as "
                        f"{'an alias of ' + repr(existing.name) if existing.name != n else 'a name'}"
                        "); register each name and alias once.")
            entry = PluginEntry(self.kind, name, factory, self._plugin, self._distribution,
                                self._version, description, tuple(aliases), dict(options))
            for n in all_names:
                existing = self.entries.get(n)
                if existing is not None:
                    # The later registration wins (see PluginManager for the order); the clash
                    # is reported by `rlm plugins` and raises in strict mode.
                    self.conflicts.append(
                        f"The {self.kind} {n!r} is registered by both {existing.origin} and "
                        f"{entry.origin}; using the one from {entry.origin}. "
                        + _conflict_fix(existing, entry))
                self._undo.append((n, existing))
                self.entries[n] = entry

    def get(self, name: str) -> PluginEntry | None:
        return self.entries.get(name)

    def names(self) -> list[str]:
        """Every registered name, aliases included, sorted."""
        return sorted(self.entries)

    def primary_names(self) -> list[str]:
        """Registered names without aliases, sorted."""
        return sorted(n for n, e in self.entries.items() if e.name == n)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __repr__(self) -> str:
        return f"<Registrar {self.kind}: {', '.join(self.names()) or 'empty'}>"
