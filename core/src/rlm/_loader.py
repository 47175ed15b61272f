"""Our own entry-point loader.

Unlike ``pluggy.PluginManager.load_setuptools_entrypoints`` it never lets one plugin take the host
down: every entry point is loaded and registered on its own, a failure is recorded with the
distribution's name and the original error, any partial registration is rolled back, and loading
goes on. Allow and deny lists are applied *before* ``ep.load()``, so a disabled plugin is never
imported.

Environment variables:

``RLM_LOAD_PLUGINS``
    Comma-separated allow-list of entry-point or distribution names. Set to the empty string to
    load no entry-point plugin at all.
``RLM_DISABLE_PLUGINS``
    Comma-separated deny-list, same names.
``RLM_TRACE_PLUGINS``
    When set, print each load (with its timing), each skip and failure, and every registration
    hook call to stderr.
``RLM_STRICT_PLUGINS``
    When set, raise :class:`rlm.PluginError` on the first failure instead of warning (for plugin
    authors and CI).

Names in the two lists match an entry-point name (``echo``), a distribution name in any
spelling (``rlm-backend-echo``, ``rlm_backend_echo``), or ``distribution:entry-point``.
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from types import FrameType
from typing import Any

import pluggy

from ._hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME, RLMHookSpecs
from .exceptions import PluginError


class RLMPluginWarning(UserWarning):
    """A plugin failed to load or register, or two plugins registered the same name."""


@dataclass
class LoadedPlugin:
    name: str
    distribution: str | None
    version: str | None
    entry_point: str | None  # the value the entry point named, None for in-process plugins
    load_time: float = 0.0


@dataclass
class LoadFailure:
    name: str
    distribution: str | None
    version: str | None
    entry_point: str | None
    error: str
    traceback: str = field(repr=False, default="")
    hook: str | None = None  # set when the plugin loaded but one of its registration hooks raised

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "entry_point": self.entry_point, "error": self.error,
                **({"hook": self.hook} if self.hook else {})}


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def external_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside the rlm package.

    Call it from the function that calls ``warnings.warn``.
    """
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def normalize_name(name: str) -> str:
    """PEP 503 normalisation, so ``rlm_backend_X`` and ``rlm-backend-x`` are the same name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _split_env(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no", "off")


def strict_from_env() -> bool:
    return _flag("RLM_STRICT_PLUGINS")


def trace_from_env() -> bool:
    return _flag("RLM_TRACE_PLUGINS")


def _dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.metadata["Name"] or None, dist.version
    except Exception:  # noqa: BLE001 - broken metadata is reported as unknown
        return None, None


def _describe(dist: str | None, version: str | None) -> str:
    if not dist:
        return "an unknown distribution"
    return f"distribution {dist} {version}" if version else f"distribution {dist}"


def _matches(selectors: set[str], ep_name: str, dist: str | None) -> bool:
    wanted = {normalize_name(s) for s in selectors}
    candidates = {normalize_name(ep_name)}
    if dist:
        candidates |= {normalize_name(dist), normalize_name(f"{dist}:{ep_name}")}
    return bool(wanted & candidates)


def iter_entry_points(group: str = ENTRY_POINT_GROUP) -> list[metadata.EntryPoint]:
    """The group's entry points, one per (distribution, name), in a stable order.

    First-party plugins (``rlm-plugins``) come first, then the others by distribution and name;
    a later plugin's registration of the same name wins and the clash is reported.
    """
    seen: set[tuple[str | None, str]] = set()
    out: list[tuple[tuple[int, str, str], metadata.EntryPoint]] = []
    for ep in metadata.entry_points(group=group):
        dist = _dist_of(ep)[0]
        key = (normalize_name(dist) if dist else None, ep.name)
        if key in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(key)
        first_party = normalize_name(dist or "") == "rlm-plugins"
        out.append(((0 if first_party else 1, normalize_name(dist or ""), ep.name), ep))
    out.sort(key=lambda pair: pair[0])
    return [ep for _, ep in out]


def known_hooks() -> list[str]:
    """The names of every hook the kernel specifies."""
    marker = f"{PROJECT_NAME}_spec"
    return sorted(n for n in dir(RLMHookSpecs) if hasattr(getattr(RLMHookSpecs, n), marker))


def validate_plugin(pm: pluggy.PluginManager, plugin_name: str) -> None:
    """Reject a registered plugin that cannot work: raise :class:`PluginError` naming the fix.

    * a ``@hookimpl`` whose name no hookspec declares (a misspelled hook, e.g.
      ``rlm_register_backend``), unless marked ``optionalhook=True``;
    * a function named like a hook but not decorated with ``@hookimpl`` (rlm would never call it);
    * no ``@hookimpl`` at all (for example decorated with another project's marker).
    """
    plugin = pm.get_plugin(plugin_name)
    if plugin is None:
        return
    known = known_hooks()
    callers = pm.get_hookcallers(plugin) or []
    for caller in callers:
        if caller.has_spec():
            continue
        impls = [i for i in caller.get_hookimpls() if i.plugin is plugin and not i.optionalhook]
        if not impls:
            continue
        import difflib

        close = difflib.get_close_matches(caller.name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PluginError(
            f"plugin {plugin_name!r} implements the unknown hook {caller.name!r}.{hint} "
            f"Known hooks are: {', '.join(known)}. Rename the function, or mark it "
            f"@hookimpl(optionalhook=True) if it targets a newer rlm.", plugin=plugin_name)
    undecorated = [n for n in known if callable(getattr(plugin, n, None))
                   and pm.parse_hookimpl_opts(plugin, n) is None]
    if undecorated:
        one = len(undecorated) == 1
        raise PluginError(
            f"plugin {plugin_name!r} defines {', '.join(undecorated)} but "
            f"{'it is' if one else 'they are'} not decorated with rlm's @hookimpl, so rlm would "
            f"never call {'it' if one else 'them'}. Add `from rlm.plugin import hookimpl` and "
            f"put @hookimpl above {'it' if one else 'each of them'}.", plugin=plugin_name)
    if not callers:
        raise PluginError(
            f"plugin {plugin_name!r} registers nothing: it defines no function decorated with "
            f"rlm's @hookimpl (`from rlm.plugin import hookimpl`). Known hooks are: "
            f"{', '.join(known)}.", plugin=plugin_name)


def describe_validation_error(exc: pluggy.PluginValidationError) -> str:
    """pluggy's message for a bad hookimpl signature, plus the fix."""
    return (f"{exc} Every rlm hook implementation takes at most one argument, named `registrar` "
            f"(for example `def rlm_register_backends(registrar): ...`).").replace("\n", " ")


def skip_reason(name: str, dist: str | None) -> str | None:
    """Why the plugin ``name`` (from ``dist``) is not loaded, with how to enable it; None when
    it is. One definition for the loader, ``rlm plugins`` and the unknown-plugin error."""
    allow = _split_env("RLM_LOAD_PLUGINS")
    if allow is not None and not _matches(allow, name, dist):
        return f"not in RLM_LOAD_PLUGINS (add {name} to it, or unset it, to enable)"
    deny = _split_env("RLM_DISABLE_PLUGINS") or set()
    if _matches(deny, name, dist):
        listed = name if _matches(deny, name, None) else dist
        return f"listed in RLM_DISABLE_PLUGINS (remove {listed} from it to enable)"
    return None


def disabled_plugins(group: str = ENTRY_POINT_GROUP) -> list[dict[str, Any]]:
    """The installed plugins the allow and deny lists keep from loading, with the reason (read
    from the distributions' metadata: nothing is imported)."""
    rows: list[dict[str, Any]] = []
    for ep in iter_entry_points(group):
        dist, version = _dist_of(ep)
        reason = skip_reason(ep.name, dist)
        if reason is not None:
            rows.append({"name": ep.name, "distribution": dist, "version": version,
                         "entry_point": ep.value, "hooks": [], "registered": {},
                         "status": "disabled", "reason": reason})
    return rows


def load_entry_points(pm: pluggy.PluginManager, *, group: str = ENTRY_POINT_GROUP,
                      strict: bool = False, trace: bool = False
                      ) -> tuple[list[LoadedPlugin], list[LoadFailure], list[str]]:
    """Load and register every plugin of ``group``.

    Returns ``(loaded, failed, skipped_names)``. In strict mode the first failure raises
    :class:`PluginError` (after rolling back that plugin).
    """
    loaded: list[LoadedPlugin] = []
    failed: list[LoadFailure] = []
    skipped: list[str] = []
    for ep in iter_entry_points(group):
        dist, version = _dist_of(ep)
        reason = skip_reason(ep.name, dist)
        if reason is not None:
            skipped.append(ep.name)
            if trace:
                print(f"rlm: skipped plugin {ep.name} ({_describe(dist, version)}): {reason}",
                      file=sys.stderr)
            continue
        plugin_name = ep.name
        if pm.has_plugin(plugin_name) or pm.is_blocked(plugin_name):
            plugin_name = f"{dist}:{ep.name}"
        if pm.is_blocked(plugin_name):
            skipped.append(ep.name)
            continue
        t0 = time.perf_counter()
        registered = False
        try:
            obj = ep.load()
            try:
                pm.register(obj, name=plugin_name)
            except pluggy.PluginValidationError as exc:
                raise PluginError(describe_validation_error(exc), plugin=plugin_name) from exc
            except ValueError as exc:  # pluggy: the same object registered twice
                raise PluginError(
                    f"{exc}; the entry point names a module or object another plugin already "
                    "registered. Point each entry point at its own plugin module.",
                    plugin=plugin_name) from exc
            registered = True
            validate_plugin(pm, plugin_name)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not take the host down
            if registered:
                try:
                    pm.unregister(name=plugin_name)
                except Exception:  # noqa: BLE001 - the plugin is being dropped anyway
                    pass
            err = f"{type(exc).__name__}: {exc}"
            failure = LoadFailure(ep.name, dist, version, ep.value, err, traceback.format_exc())
            failed.append(failure)
            fix = (f"Fix or uninstall it (pip uninstall {dist}), or silence it with "
                   f"RLM_DISABLE_PLUGINS={ep.name}." if dist else
                   f"Fix it, or silence it with RLM_DISABLE_PLUGINS={ep.name}.")
            message = (f"rlm: skipped plugin {ep.name!r} from {_describe(dist, version)} "
                       f"(entry point {ep.name} = {ep.value}): {err}. {fix}")
            if trace:
                print(f"rlm: failed plugin {ep.name} ({_describe(dist, version)}): {err}",
                      file=sys.stderr)
            if strict:  # one line: what failed, that strict mode stopped on it, and the fix
                raise PluginError(
                    f"plugin {ep.name!r} from {_describe(dist, version)} (entry point {ep.name} "
                    f"= {ep.value}) failed to load, and RLM_STRICT_PLUGINS is set: {err}. {fix}",
                    distribution=dist, plugin=ep.name) from None
            warnings.warn(message, RLMPluginWarning, stacklevel=external_stacklevel())
            continue
        dt = time.perf_counter() - t0
        loaded.append(LoadedPlugin(plugin_name, dist, version, ep.value, dt))
        if trace:
            print(f"rlm: loaded plugin {plugin_name} ({_describe(dist, version)}) from "
                  f"{ep.value} in {dt * 1000:.1f} ms", file=sys.stderr)
    return loaded, failed, skipped
