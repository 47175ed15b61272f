"""Where the Pyodide files and the Deno binary come from, and ``rlm-env-pyodide install``.

* Deno: the ``deno`` package on PyPI (a dependency of this distribution: its wheel carries the
  binary), or a ``deno`` on ``PATH``, or ``RLM_DENO`` / ``environment_kwargs={'deno': PATH}``.
* Pyodide: the ``pyodide`` package on npm at :data:`PYODIDE_VERSION`, installed once by
  ``rlm-env-pyodide install`` (``npm install`` into a cache directory). Nothing is downloaded
  when a run starts; a missing installation is an error that says this.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from rlm.exceptions import RLMEnvironmentError

#: The Pyodide release this distribution is tested with (CPython 3.14 in WebAssembly).
PYODIDE_VERSION = "314.0.7"
#: The files a run reads; all come with the npm package.
REQUIRED_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                  "pyodide-lock.json", "package.json")
INSTALL_HINT = ("Install it once with `rlm-env-pyodide install` (runs `npm install "
                f"pyodide@{PYODIDE_VERSION}` into {{cache}}; needs npm: `apt-get install npm`), "
                "or point environment_kwargs={{'pyodide_dir': ...}} or RLM_PYODIDE_DIR at the "
                "'pyodide' folder of an npm installation.")


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rlm", "pyodide")


def default_prefix(version: str = PYODIDE_VERSION) -> str:
    """The npm prefix ``rlm-env-pyodide install`` uses."""
    return os.path.join(cache_root(), version)


def default_pyodide_dir(version: str = PYODIDE_VERSION) -> str:
    return os.path.join(default_prefix(version), "node_modules", "pyodide")


def find_pyodide(pyodide_dir: str | None = None) -> tuple[str, str]:
    """``(directory, version)`` of a usable Pyodide; RLMEnvironmentError with the fix if none."""
    explicit = pyodide_dir or os.environ.get("RLM_PYODIDE_DIR")
    path = os.path.abspath(os.path.expanduser(explicit or default_pyodide_dir()))
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        where = ("pyodide_dir=" if pyodide_dir else "RLM_PYODIDE_DIR=" if explicit
                 else "the default location ") + repr(path)
        raise RLMEnvironmentError(
            f"the 'pyodide' environment needs the Pyodide files, and {where} lacks "
            f"{', '.join(missing)}. " + INSTALL_HINT.format(cache=default_prefix()))
    try:
        with open(os.path.join(path, "package.json"), encoding="utf-8") as f:
            version = str(json.load(f).get("version", "?"))
    except (OSError, ValueError) as exc:
        raise RLMEnvironmentError(f"{path}/package.json is unreadable ({exc}). "
                                  + INSTALL_HINT.format(cache=default_prefix())) from exc
    return path, version


def find_deno(deno: str | None = None) -> str:
    """The Deno binary: the argument, RLM_DENO, the ``deno`` PyPI package, then PATH."""
    candidate = deno or os.environ.get("RLM_DENO")
    if candidate:
        path = shutil.which(candidate) or candidate
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RLMEnvironmentError(f"deno={candidate!r} is not an executable Deno binary")
        return os.path.realpath(path)
    try:
        import deno as deno_pkg  # the PyPI wheel that carries the binary

        path = deno_pkg.find_deno_bin()
        if path and os.access(path, os.X_OK):
            return os.path.realpath(path)
    except (ImportError, OSError, FileNotFoundError, RuntimeError):
        pass
    found = shutil.which("deno")
    if found:
        return os.path.realpath(found)
    raise RLMEnvironmentError(
        "the 'pyodide' environment runs Pyodide under Deno, which is not installed: "
        "`pip install deno` (the binary from PyPI; `pip install rlm-env-pyodide` brings it), or "
        "put a deno on PATH, or pass environment_kwargs={'deno': '/path/to/deno'}.")


def install(prefix: str | None = None, version: str = PYODIDE_VERSION, npm: str | None = None,
            quiet: bool = False) -> str:
    """``npm install pyodide@version`` into ``prefix``; returns the pyodide directory.

    Idempotent: an existing complete installation of that version is kept. npm checks the
    package's integrity against the registry's; no install scripts run.
    """
    prefix = os.path.abspath(os.path.expanduser(prefix or default_prefix(version)))
    target = os.path.join(prefix, "node_modules", "pyodide")
    try:
        _, found = find_pyodide(target)
        if found == version:
            return target
    except RLMEnvironmentError:
        pass
    npm_bin = npm or shutil.which("npm")
    if npm_bin is None:
        raise RLMEnvironmentError(
            "installing Pyodide needs npm (the npm registry is where Pyodide is published): "
            "`apt-get install npm` (Debian, Ubuntu), then run `rlm-env-pyodide install` again.")
    os.makedirs(prefix, exist_ok=True)
    manifest = os.path.join(prefix, "package.json")
    if not os.path.exists(manifest):
        with open(manifest, "w", encoding="utf-8") as f:
            json.dump({"name": "rlm-pyodide-cache", "private": True}, f)
    cmd = [npm_bin, "install", "--prefix", prefix, "--no-audit", "--no-fund", "--ignore-scripts",
           "--omit=dev", "--save-exact", f"pyodide@{version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RLMEnvironmentError(f"`{' '.join(cmd)}` failed (status {proc.returncode}):\n"
                                  f"{(proc.stderr or proc.stdout)[-2000:]}")
    path, found = find_pyodide(target)
    if found != version:
        raise RLMEnvironmentError(f"npm installed pyodide {found}, not {version}")
    if not quiet:
        print(f"pyodide {found} installed in {path}", file=sys.stderr)
    return path
