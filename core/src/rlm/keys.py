"""Provider keys and the user directory.

Where a backend finds its key, first match wins:

1. the explicit argument (``backend_kwargs={"api_key": ...}``);
2. the key store: ``keys.json`` in the user directory, written by ``rlm keys set NAME``
   (mode 0600, like ``~/.ssh`` files);
3. the environment variable the backend names (``OPENAI_API_KEY``, ...).

``.env`` files are read only when you ask: :func:`load_dotenv` (or ``rlm run --env-file``),
never at import.

The user directory is ``$RLM_USER_DIR`` when set, else the platform's user data directory for
``rlm`` (``~/.local/share/rlm`` on Linux, honouring ``$XDG_DATA_HOME``; ``~/Library/Application
Support/rlm`` on macOS; ``%LOCALAPPDATA%\\rlm`` on Windows), computed by ``platformdirs`` when it
is installed (``rlm-plugins`` depends on it) and by the same rules here otherwise.

Standard library only; importing this module reads nothing.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

from .exceptions import ConfigurationError

__all__ = ["KEYS_FILE", "delete_key", "get_key", "keys_path", "list_keys", "load_dotenv",
           "load_keys", "resolve_api_key", "set_key", "user_dir"]

KEYS_FILE = "keys.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")
_NOTE_KEY = "// note"
_NOTE = "Provider keys for rlm (rlm keys set NAME). Keep this file private: mode 0600."


def user_dir() -> Path:
    """The directory rlm keeps its per-user files in (logs database, keys). Not created here."""
    override = os.environ.get("RLM_USER_DIR")
    if override:
        return Path(override).expanduser().absolute()
    try:
        import platformdirs
    except ImportError:
        return _fallback_user_dir()
    return Path(platformdirs.user_data_dir("rlm", appauthor=False))


def _fallback_user_dir() -> Path:
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "rlm"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "rlm"
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    return (Path(xdg) if xdg else home / ".local" / "share") / "rlm"


def keys_path() -> Path:
    """The key store file (it may not exist yet)."""
    return user_dir() / KEYS_FILE


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"invalid key name {name!r}: use the backend's name, e.g. 'openai' or 'anthropic' "
            "(letters, digits, '_', '-', '.', '/').")
    return name


def load_keys(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Every stored key (name -> value). A missing file is an empty store."""
    p = Path(path) if path is not None else keys_path()
    try:
        raw = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigurationError(f"cannot read the key store {p}: {exc.strerror}. Fix its "
                                 f"permissions (chmod 600 {p}) or set RLM_USER_DIR.") from None
    try:
        data = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"the key store {p} is not valid JSON ({exc.msg}, line {exc.lineno}); fix or delete it "
            "and store the keys again with `rlm keys set NAME`.") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"the key store {p} must hold a JSON object of name: key; "
                                 "delete it and store the keys again with `rlm keys set NAME`.")
    return {str(k): str(v) for k, v in data.items() if k != _NOTE_KEY and isinstance(v, str)}


def _write_keys(keys: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({_NOTE_KEY: _NOTE, **dict(sorted(keys.items()))}, indent=2) + "\n"
    # Write a private temporary file next to the store, then rename it over: the store is never
    # half-written and never readable by others, even for a moment.
    fd, tmp = tempfile.mkstemp(prefix=".keys-", suffix=".json", dir=path.parent)
    try:  # mkstemp creates the file with mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.chmod(path, 0o600)


def set_key(name: str, value: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Store ``value`` under ``name`` (replacing any previous one). Returns the store's path."""
    _check_name(name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"the key for {name!r} is empty; pass the key itself.")
    p = Path(path) if path is not None else keys_path()
    keys = load_keys(p)
    keys[name] = value.strip()
    _write_keys(keys, p)
    return p


def delete_key(name: str, path: str | os.PathLike[str] | None = None) -> bool:
    """Remove ``name`` from the store. Returns False if it was not there."""
    p = Path(path) if path is not None else keys_path()
    keys = load_keys(p)
    if name not in keys:
        return False
    del keys[name]
    _write_keys(keys, p)
    return True


def get_key(name: str, path: str | os.PathLike[str] | None = None) -> str | None:
    """The stored key called ``name``, or None."""
    return load_keys(path).get(name)


def list_keys(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The names of the stored keys (never their values)."""
    return sorted(load_keys(path))


def resolve_api_key(explicit: str | None, *, env_var: str | None, key_name: str | None) -> str | None:
    """The key a backend should use: ``explicit``, else the stored key ``key_name``, else
    ``$env_var``, else None (the backend then raises its missing-key error).

    A key store that cannot be read is an error (it names the file and the fix), never a
    silent fall-through to a different key.
    """
    if explicit:
        return explicit
    if key_name:
        stored = get_key(key_name)
        if stored:
            return stored
    if env_var:
        value = os.environ.get(env_var)
        if value:
            return value
    return None


def load_dotenv(path: str | os.PathLike[str] | None = None, *, override: bool = False) -> bool:
    """Load ``KEY=VALUE`` lines of a ``.env`` file into ``os.environ`` (only when you call it).

    ``path`` defaults to ``.env`` searched from the current directory upwards. Variables already
    set win unless ``override=True``. Returns True if a file was read. Needs python-dotenv
    (``pip install "rlm[dotenv]"``).
    """
    try:
        import dotenv
    except ImportError:
        raise ConfigurationError(
            "load_dotenv needs python-dotenv: pip install \"rlm[dotenv]\" (or pip install "
            "python-dotenv), or export the variables in your shell instead.") from None
    if path is None:
        found = dotenv.find_dotenv(usecwd=True)
        if not found:
            return False
        path = found
    elif not Path(path).is_file():
        raise ConfigurationError(f".env file {os.fspath(path)!r} does not exist; pass the path of "
                                 "an existing file.")
    return bool(dotenv.load_dotenv(path, override=override))
