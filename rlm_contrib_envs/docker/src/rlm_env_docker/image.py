"""Builds a Python image for the ``docker`` environment locally, without any registry.

The image is a minimal root filesystem made from this machine's own Python, imported with the
Engine's ``import`` call (``docker import`` of a tar): nothing is pulled, nothing is downloaded.
It holds exactly:

* the interpreter (by default ``/usr/bin/python3`` when it is CPython 3.8+, else the running
  one), also reachable as ``/usr/local/bin/python3`` and ``python``;
* its standard library (``lib/pythonX.Y`` with ``lib-dynload``), without ``site-packages`` /
  ``dist-packages`` and without the test suite, IDLE, tkinter, ensurepip, lib2to3;
* the shared libraries the interpreter and its extension modules link to (found with ``ldd``),
  and the dynamic loader, at the paths the host has them (symlinks included);
* ``/etc/passwd`` and ``/etc/group`` with ``root`` and ``nobody`` (65534), an empty ``/tmp``
  (mode 1777) and ``/rlm``.

No shell, no package manager, no other program: the worker needs only the interpreter and the
standard library. The default command is ``python3``; the default user is ``65534``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any

DEFAULT_TAG = "rlm-python:3.11-local"
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo",
              "ensurepip", "lib2to3", "__phello__", "pydoc_data"}


class ImageBuildError(Exception):
    """The image could not be built; the message names the fix."""


def default_python() -> str:
    """``/usr/bin/python3`` when it is a usable CPython, else the running interpreter."""
    system = "/usr/bin/python3"
    if os.path.exists(system):
        try:
            out = subprocess.run([system, "-I", "-S", "-c",
                                  "import sys; print(sys.implementation.name, sys.version_info[:2] "
                                  ">= (3, 8))"], capture_output=True, text=True, timeout=20)
            if out.stdout.split() == ["cpython", "True"]:
                return system
        except (OSError, subprocess.SubprocessError):
            pass
    return sys.executable


def _interpreter_facts(python: str) -> dict[str, Any]:
    code = ("import sys, sysconfig, json; print(json.dumps({'exe': sys.executable, "
            "'stdlib': sysconfig.get_path('stdlib'), 'platstdlib': sysconfig.get_path("
            "'platstdlib'), 'dynload': sysconfig.get_config_var('DESTSHARED'), "
            "'libdir': sysconfig.get_config_var('LIBDIR'), 'ldlibrary': sysconfig."
            "get_config_var('LDLIBRARY'), 'version': '%d.%d' % sys.version_info[:2], "
            "'full': sys.version.split()[0], 'impl': sys.implementation.name}))")
    try:
        out = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True,
                             timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageBuildError(f"cannot run the interpreter {python!r}: {exc}. Pass another one "
                              "with --python PATH.") from exc
    import json

    facts = json.loads(out.stdout)
    if facts["impl"] != "cpython":
        raise ImageBuildError(f"{python} is {facts['impl']}, not CPython: pass --python PATH")
    return facts


def _ldd(paths: list[str]) -> set[str]:
    """Every shared library the ELF files ``paths`` load (their paths on this host)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise ImageBuildError("building the image needs 'ldd' (apt-get install libc-bin)")
    found: set[str] = set()
    for i in range(0, len(paths), 200):
        out = subprocess.run([ldd, *paths[i:i + 200]], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            line = line.strip()
            if "=>" in line:
                target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
            else:
                target = line.split(" (")[0].strip()
            if target.startswith("/") and os.path.exists(target):
                found.add(target)
    return found


class _RootFS:
    """A tar of a root filesystem: host paths copied at the same place, symlinks kept."""

    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.done: set[str] = set()
        self.bytes = 0

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type = kind
        info.mode = mode
        info.uid = info.gid = 0
        info.mtime = int(time.time())
        return info

    def directory(self, path: str, mode: int = 0o755) -> None:
        path = os.path.normpath(path)
        if path == "/" or path in self.done:
            return
        self.directory(os.path.dirname(path))
        self.done.add(path)
        self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode))

    def data(self, path: str, content: bytes, mode: int = 0o644) -> None:
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(content)
        self.tar.addfile(info, io.BytesIO(content))
        self.done.add(path)
        self.bytes += len(content)

    def symlink(self, path: str, target: str) -> None:
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)
        self.done.add(path)

    def copy(self, path: str) -> None:
        """Copy a host path, following symlinks in any of its components (they are recreated)."""
        path = os.path.normpath(os.path.abspath(path))
        if path in self.done:
            return
        parts = path.split("/")[1:]
        prefix = ""
        for i, part in enumerate(parts):
            prefix += "/" + part
            if os.path.islink(prefix):
                target = os.readlink(prefix)
                if prefix not in self.done:
                    self.symlink(prefix, target)
                resolved = os.path.normpath(os.path.join(os.path.dirname(prefix), target))
                rest = "/".join(parts[i + 1:])
                self.copy(os.path.join(resolved, rest) if rest else resolved)
                return
        if os.path.isdir(path):
            self.directory(path)
            return
        st = os.stat(path)
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, (st.st_mode & 0o755) | 0o444)
        info.size = st.st_size
        with open(path, "rb") as f:
            self.tar.addfile(info, f)
        self.done.add(path)
        self.bytes += st.st_size

    def tree(self, root: str) -> list[str]:
        """Copy a directory tree (minus :data:`_SKIP_DIRS`); returns its ELF files."""
        elves: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            self.copy(dirpath)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if os.path.islink(full) and not os.path.exists(full):
                    continue
                self.copy(full)
                if name.endswith(".so") or ".so." in name:
                    elves.append(os.path.realpath(full))
        return elves


def write_rootfs(tar_path: str, python: str | None = None) -> dict[str, Any]:
    """Write the image's root filesystem to ``tar_path``; returns what went in."""
    python = python or default_python()
    facts = _interpreter_facts(python)
    exe = os.path.realpath(facts["exe"])
    with tarfile.open(tar_path, "w") as tar:
        fs = _RootFS(tar)
        fs.copy(facts["exe"])
        fs.copy(exe)
        elves = [exe]
        for key in ("stdlib", "platstdlib"):
            if facts.get(key) and os.path.isdir(facts[key]):
                elves += fs.tree(facts[key])
        if facts.get("dynload") and os.path.isdir(facts["dynload"]):
            elves += fs.tree(facts["dynload"])
        libs = _ldd(sorted(set(elves)))
        for lib in sorted(libs):
            fs.copy(lib)
        for alias in ("/usr/local/bin/python3", "/usr/local/bin/python",
                      f"/usr/local/bin/python{facts['version']}"):
            if alias not in fs.done and not os.path.normpath(facts["exe"]) == alias:
                fs.symlink(alias, exe)
        fs.data("/etc/passwd", b"root:x:0:0:root:/root:/nonexistent\n"
                               b"nobody:x:65534:65534:nobody:/tmp:/nonexistent\n")
        fs.data("/etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        fs.directory("/tmp", 0o1777)
        fs.directory("/rlm", 0o755)
        fs.directory("/root", 0o700)
    return {"python": facts["full"], "interpreter": exe, "libraries": len(libs),
            "bytes": fs.bytes}


def build_image(client: Any = None, tag: str = DEFAULT_TAG, python: str | None = None,
                user: str = "65534:65534") -> dict[str, Any]:
    """Build and import the image into the daemon ``client`` talks to; returns a summary."""
    import docker

    if client is None:
        client = docker.from_env()
    repository, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlm-docker-image-") as tmp:
        tar_path = os.path.join(tmp, "rootfs.tar")
        summary = write_rootfs(tar_path, python)
        changes = [f"USER {user}", "WORKDIR /tmp", 'CMD ["python3"]',
                   "ENV LANG=C.UTF-8 LC_ALL=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "
                   "PATH=/usr/local/bin:/usr/bin:/bin",
                   f"LABEL org.rlm.image=local-python org.rlm.python={summary['python']}"]
        try:
            client.api.import_image_from_file(tar_path, repository=repository, tag=version,
                                              changes=changes)
        except docker.errors.DockerException as exc:
            raise ImageBuildError(f"the Docker daemon refused the image import: {exc}") from exc
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound as exc:
        raise ImageBuildError(f"the import finished but {tag} is not in the daemon's images") from exc
    summary.update({"tag": tag, "id": image.id, "seconds": time.perf_counter() - started,
                    "size": image.attrs.get("Size")})
    return summary
