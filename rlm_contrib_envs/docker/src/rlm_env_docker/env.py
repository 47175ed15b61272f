"""``DockerREPL``: the REPL worker in a locked-down container, started once per run.

One container per run (per ``RLM`` in persistent mode), created through the Docker Engine API
(the ``docker`` SDK) with:

* ``--network none`` (only a loopback device nobody listens on), a read-only root filesystem,
  a size-limited private tmpfs at ``/tmp`` (the working directory);
* memory (swap included), pids and CPU caps; all capabilities dropped; ``no-new-privileges``;
  a non-root user (65534 by default when the host is root, else the host's own); a private IPC
  namespace; no log driver (the channel's bytes are never written to the daemon's disk);
* Docker's default seccomp profile plus a stricter filter the worker installs on itself before
  any model code runs, the policy the sandbox applies too (:mod:`rlm_isolation.seccomp`: no
  ``fork``/``exec``, no sockets but AF_UNIX, no ptrace, mount, namespaces, BPF, keyrings,
  io_uring, clock changes, memfd or System V shared memory);
* optionally the gVisor runtime (``runtime="runsc"``): a user-space kernel between the model's
  code and the host's kernel.

The worker talks to the host over the container's attached stdin/stdout (the Engine API's
``attach``): no network and no listening socket for the channel. The worker and its control files
(the per-run secret, the filter) are bind-mounted read-only; contexts are written once per run
into a read-only bind mount, or streamed over the channel into a tmpfs when the daemon cannot see
the host's files (gVisor, ``context_transfer="stream"``). Those files are the run's alone (0400
and 0600 in 0700 directories, owned by the container's user).

A container does not outlive its host: a host that dies mid-cell closes the attached stdin, and
the worker exits with it (``StdinOnce``); a container left over by a host killed outright is
removed by the next start on the machine (labels naming the host, :func:`reap_containers`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import shutil
import socket
import struct
import threading
from typing import Any

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_isolation.leftovers import Leftovers, host_identity, host_is_gone
from rlm_isolation.repl import WORKER_FILE, IsolatedREPL, parse_size

from ._seccomp import BOOT_SCRIPT, compile_filter
from .image import DEFAULT_TAG

DEFAULT_IMAGE = "python:3.11-slim"
WORKER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
              "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUTF8": "1", "MALLOC_ARENA_MAX": "2",
              "HOME": "/tmp"}
LABEL = "org.rlm.environment"
HOST_LABEL = "org.rlm.host"  # leftovers.host_identity() of the host process: see reap_containers
RUNSC_PIDS_HEADROOM = 256
BUILD_HINT = (f"build one offline from this machine's Python with `rlm-env-docker build-image "
              f"--tag {DEFAULT_TAG}` (or `rlm docker build-image`) and pass "
              f"environment_kwargs={{'image': '{DEFAULT_TAG}'}}")

_containers = Leftovers()  # containers not removed yet: removed at exit if still there


def _docker_errors() -> Any:
    import docker.errors

    return docker.errors


def connect(base_url: str | None = None, timeout: float = 60.0) -> Any:
    """A ``docker.DockerClient`` for ``base_url`` (default: ``DOCKER_HOST`` or the local
    socket), or an :class:`RLMEnvironmentError` that says how to get a daemon."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise RLMEnvironmentError("the 'docker' environment needs the Docker SDK: "
                                  "pip install 'rlm[docker]' (or pip install docker)") from exc
    where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        if base_url:
            client = docker.DockerClient(base_url=base_url, version="auto", timeout=int(timeout))
        else:
            client = docker.from_env(version="auto", timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as exc:
        raise RLMEnvironmentError(
            f"the 'docker' environment cannot reach a Docker daemon at {where}: {exc}. Start one "
            "(`systemctl start docker`, or `dockerd` by hand; scripts/ci/docker.sh shows a private "
            "daemon), or point DOCKER_HOST / environment_kwargs={'base_url': ...} at it. Without "
            "Docker, environment='sandbox' isolates with bubblewrap.") from exc
    return client


class AttachedContainer:
    """A started container whose stdin/stdout carry the channel (the Engine's ``attach``).

    The attached stream is multiplexed (no TTY): 8-byte headers say whether a payload is stdout
    (the channel) or stderr (kept in a bounded buffer, quoted when the worker dies).
    """

    def __init__(self, api: Any, container_id: str, sock: socket.socket, what: str):
        self.api = api
        self.id = container_id
        self.sock = sock
        self.what = what
        self._pending = b""
        self._err: collections.deque[str] = collections.deque(maxlen=200)
        self._err_partial = b""
        self._state: dict[str, Any] | None = None
        self._gone = False
        self._kill_lock = threading.Lock()

    def _exact(self, n: int) -> bytes | None:
        parts, need = [], n
        while need:
            chunk = self.sock.recv(need)
            if not chunk:
                return None
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    def read(self, n: int) -> bytes:
        while not self._pending:
            try:
                header = self._exact(8)
            except OSError:
                return b""
            if header is None:
                return b""
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            try:
                payload = self._exact(size) if size else b""
            except OSError:
                return b""
            if payload is None:
                return b""
            if stream == 1:
                self._pending = payload
            else:
                self._stderr(payload)
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def _stderr(self, data: bytes) -> None:
        lines = (self._err_partial + data).split(b"\n")
        self._err_partial = lines.pop()[-4000:]
        for line in lines:
            self._err.append(line.decode("utf-8", "replace")[:2000])

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def stderr_tail(self, lines: int = 20) -> str:
        tail = list(self._err)
        if self._err_partial:
            tail.append(self._err_partial.decode("utf-8", "replace"))
        return "\n".join(tail[-lines:])

    def state(self) -> dict[str, Any] | None:
        """The container's ``State`` (kept after it is removed)."""
        if self._gone:
            return self._state
        try:
            self._state = self.api.inspect_container(self.id)["State"]
        except Exception:  # noqa: BLE001 - removed meanwhile
            pass
        return self._state

    def returncode(self) -> int | None:
        state = self.state()
        if not state or state.get("Running") or state.get("Status") in ("created", "running"):
            return None if not self._gone else -9
        return int(state.get("ExitCode", -1))

    def kill(self) -> None:
        with self._kill_lock:
            if self._gone:
                return
            try:
                self.api.kill(self.id)
            except Exception:  # noqa: BLE001 - already stopped
                pass
            try:
                self.api.wait(self.id, timeout=10)
            except Exception:  # noqa: BLE001
                pass
            self.state()
            self._gone = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            try:
                self.api.remove_container(self.id, force=True)
            except Exception:  # noqa: BLE001 - removal is retried at exit
                return
            _containers.discard(self.id)


_USER = re.compile(r"^(\d+)(?::(\d+))?$")


def reap_containers(api: Any) -> list[str]:
    """Remove the containers (running or not) of hosts on this machine that are gone without
    removing them (killed outright: SIGKILL, out of memory). Called before every new container;
    a host killed mid-cell also loses its container at once: the worker exits when the attached
    stdin closes (``StdinOnce``). Returns the short ids removed."""
    removed: list[str] = []
    try:
        found = api.containers(all=True, filters={"label": [LABEL, HOST_LABEL]})
    except Exception:  # noqa: BLE001 - a listing failure must not stop a run
        return removed
    for c in found:
        if host_is_gone((c.get("Labels") or {}).get(HOST_LABEL, "")):
            try:
                api.remove_container(c["Id"], force=True)
                removed.append(c["Id"][:12])
            except Exception:  # noqa: BLE001 - removed meanwhile, or the next start retries
                pass
    return removed


class DockerREPL(IsolatedREPL):
    """A persistent Python REPL in a Docker container (``environment="docker"``).

    Args (besides those of :class:`~rlm_isolation.repl.IsolatedREPL`: ``cell_timeout``,
    ``setup_code``, ``max_output_chars``, ``memory_limit`` (default ``"2g"``, swap included),
    ``startup_timeout``, ``timeout_grace``):
        image: the image to run (default ``python:3.11-slim``); it needs CPython 3.8+ as
            ``python``. It must be present locally or pullable; ``rlm-env-docker build-image``
            builds one from this machine's Python without any registry.
        python: the interpreter's name or path inside the image (default ``python3``).
        pull: ``"missing"`` (default: pull when the image is not present), ``"never"``,
            ``"always"``.
        runtime: a Docker runtime, e.g. ``"runsc"`` for gVisor (it must be registered with the
            daemon).
        cpus: CPU share (default 1.0 CPU); ``None`` for no cap.
        pids_limit: most processes and threads in the container (default 64).
        disk_limit: size of the private writable ``/tmp`` (default ``"256m"``); also the
            largest file a cell may write.
        user: ``"uid:gid"`` the worker runs as; root is refused. Default: ``"65534:65534"``
            (nobody) when the host runs as root, else the host's own uid and gid: the run's
            files (context, secret, worker) are private to it (0600 in 0700 directories) and only
            a root host can give them to another user.
        seccomp: install the extra seccomp filter (default True; needs ``ctypes`` in the image).
        allow_subprocess: let cells start processes (default False).
        context_transfer: ``"auto"`` (mount, except under gVisor), ``"mount"`` (contexts are
            written once into a read-only bind mount) or ``"stream"`` (sent over the channel into
            a tmpfs inside, sized by ``context_limit``, default ``"2g"``).
        base_url: the daemon's address (default ``DOCKER_HOST`` or the local socket).
    """

    environment_name = "docker"
    _worker_ctx_dir = "/rlm/ctx"

    def __init__(self, *, image: str = DEFAULT_IMAGE, python: str = "python3",
                 pull: str = "missing", runtime: str | None = None, cpus: float | None = 1.0,
                 pids_limit: int | None = 64, disk_limit: str | int | None = "256m",
                 user: str | None = None, seccomp: bool = True, allow_subprocess: bool = False,
                 context_transfer: str = "auto", context_limit: str | int = "2g",
                 base_url: str | None = None, **base: Any):
        super().__init__(**base)
        if not isinstance(image, str) or not image.strip():
            raise ConfigurationError(f"image must be an image name like {DEFAULT_IMAGE!r}, "
                                     f"not {image!r}")
        if pull not in ("missing", "never", "always"):
            raise ConfigurationError(f"pull must be 'missing', 'never' or 'always', not {pull!r}")
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float))
                                 or cpus <= 0):
            raise ConfigurationError(f"cpus must be a positive number of CPUs or None, not "
                                     f"{cpus!r}")
        if pids_limit is not None and (isinstance(pids_limit, bool) or not isinstance(
                pids_limit, int) or pids_limit < 4):
            raise ConfigurationError(f"pids_limit must be an integer >= 4 or None, not "
                                     f"{pids_limit!r}")
        root = os.geteuid() == 0
        if user is None:
            user = "65534:65534" if root else f"{os.getuid()}:{os.getgid()}"
        match = _USER.match(str(user))
        if match is None:
            raise ConfigurationError(f"user must be numeric 'uid:gid' like '65534:65534', not "
                                     f"{user!r} (names depend on the image's /etc/passwd)")
        if int(match.group(1)) == 0 or (match.group(2) is not None and int(match.group(2)) == 0):
            raise ConfigurationError("user must not be root (uid or gid 0): the worker runs "
                                     "model code; leave user unset for the default")
        if context_transfer not in ("auto", "mount", "stream"):
            raise ConfigurationError(f"context_transfer must be 'auto', 'mount' or 'stream', not "
                                     f"{context_transfer!r}")
        self.image = image.strip()
        self.python = python
        self.pull = pull
        self.runtime = runtime
        self.cpus = cpus
        self.pids_limit = pids_limit
        self.disk_limit = parse_size(disk_limit, "disk_limit")
        self.context_limit = parse_size(context_limit, "context_limit")
        self.uid = int(match.group(1))
        self.gid = int(match.group(2) or match.group(1))
        if not root and (self.uid, self.gid) != (os.getuid(), os.getgid()):
            raise ConfigurationError(
                f"user={user!r} needs a host running as root: the run's files (context, secret) "
                "are private to the run and only root can give them to another user. Leave "
                f"user unset (the container then runs as your uid:gid, {os.getuid()}:"
                f"{os.getgid()}) or run the host as root.")
        self.user = f"{self.uid}:{self.gid}"
        self.seccomp = bool(seccomp)
        self.allow_subprocess = bool(allow_subprocess)
        if context_transfer == "auto":
            context_transfer = "stream" if runtime == "runsc" else "mount"
        self.context_transfer = context_transfer
        self._bpf = compile_filter(allow_subprocess=self.allow_subprocess) if self.seccomp else None
        self.client = connect(base_url)
        self.api = self.client.api
        self._check_runtime()
        self._ensure_image()
        self.isolation_report: dict[str, Any] = {}
        self.container_id: str | None = None
        if self.memory_limit is None:
            self.capabilities = dataclasses.replace(self.capabilities, memory_limit=False)

    # --- checks ------------------------------------------------------------------------------

    def _check_runtime(self) -> None:
        if self.runtime is None:
            return
        runtimes = self.api.info().get("Runtimes") or {}
        if self.runtime not in runtimes:
            hint = ""
            if self.runtime == "runsc":
                hint = (" For gVisor: `apt-get install runsc` (or gVisor's own release), then add "
                        '{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": '
                        '["--network=none"]}}} to the daemon\'s daemon.json and restart it.')
            raise RLMEnvironmentError(
                f"the Docker daemon has no runtime {self.runtime!r} (it has "
                f"{', '.join(sorted(runtimes)) or 'none'}).{hint}")

    def _ensure_image(self) -> None:
        errors = _docker_errors()
        present = True
        try:
            self.api.inspect_image(self.image)
        except errors.ImageNotFound:
            present = False
        if present and self.pull != "always":
            return
        if not present and self.pull == "never":
            raise RLMEnvironmentError(
                f"the image {self.image!r} is not present on the Docker daemon and pull='never'. "
                f"Pull it (`docker pull {self.image}`) or {BUILD_HINT}.")
        try:
            self.client.images.pull(self.image)
        except errors.DockerException as exc:
            if present:  # pull='always' but the local copy is usable
                return
            raise RLMEnvironmentError(
                f"the image {self.image!r} is not present on the Docker daemon and pulling it "
                f"failed ({str(exc).strip()[:300]}). With no registry reachable, {BUILD_HINT}."
            ) from exc

    # --- launching ---------------------------------------------------------------------------

    def _launch(self, run_dir: str, secret: bytes) -> AttachedContainer:
        ctl = os.path.join(run_dir, "ctl")
        ctx = os.path.join(run_dir, "ctx")
        reap_containers(self.api)  # those of hosts killed outright
        for d in (ctl, ctx):  # private to the run: dirs 0700, files 0400 (read-only mounts)
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        shutil.copyfile(WORKER_FILE, os.path.join(ctl, "worker.py"))
        with open(os.path.join(ctl, "boot.py"), "w") as f:
            f.write(BOOT_SCRIPT)
        if self._bpf is not None:
            with open(os.path.join(ctl, "seccomp.bpf"), "wb") as f:
                f.write(self._bpf)
        secret_path = os.path.join(ctl, "secret")
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        for name in os.listdir(ctl):
            os.chmod(os.path.join(ctl, name), 0o400)
        if os.geteuid() == 0:  # the container's user, and nobody else, reads them
            for path in (ctl, ctx, *(os.path.join(ctl, n) for n in os.listdir(ctl))):
                os.chown(path, self.uid, self.gid)
            self._file_owner = (self.uid, self.gid)  # and the context files written later

        from docker.types import Mount

        mounts = [Mount("/rlm/ctl", ctl, type="bind", read_only=True)]
        tmpfs = {"/tmp": "rw,nosuid,nodev,mode=1777"
                 + (f",size={self.disk_limit}" if self.disk_limit else "")}
        limits: dict[str, Any] = {"core": 0, "open_files": 256}
        if self.context_transfer == "mount":
            mounts.append(Mount("/rlm/ctx", ctx, type="bind", read_only=True))
            self._shared_ctx_dir = ctx
            if self.disk_limit:
                limits["file_size"] = self.disk_limit
        else:  # the worker writes the streamed files itself: no per-file cap below the tmpfs's
            tmpfs["/rlm/ctx"] = f"rw,nosuid,nodev,mode=1777,size={self.context_limit}"
            self._shared_ctx_dir = None
        self._limits_config = limits

        pids = self.pids_limit
        if pids and self.runtime == "runsc":
            # gVisor's own sentry and gofer threads live in the container's cgroup: give them
            # room there, and cap the worker's processes and threads inside the sandbox (its uid
            # owns nothing else there) with RLIMIT_NPROC.
            limits["processes"] = pids
            pids += RUNSC_PIDS_HEADROOM
        self._limits_config = limits

        host_config = self.api.create_host_config(
            network_mode="none", read_only=True, tmpfs=tmpfs, mounts=mounts,
            mem_limit=self.memory_limit, memswap_limit=self.memory_limit,
            pids_limit=pids,
            nano_cpus=int(self.cpus * 1e9) if self.cpus else None,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], ipc_mode="private",
            runtime=self.runtime, log_config={"type": "none"}, init=False)
        command = [self.python, "-I", "-S", "/rlm/ctl/boot.py", "--stdio", "--secret-file", "/rlm/ctl/secret"]
        errors = _docker_errors()
        try:
            created = self.api.create_container(
                self.image, command=command, user=self.user, stdin_open=True, tty=False,
                environment=WORKER_ENV, working_dir="/tmp", hostname="rlm-docker",
                network_disabled=True, host_config=host_config, entrypoint=[],
                labels={LABEL: "docker", "org.rlm.host-pid": str(os.getpid()),
                        HOST_LABEL: host_identity()})
        except errors.DockerException as exc:
            raise RLMEnvironmentError(f"the Docker daemon refused to create the container: {exc}"
                                      ) from exc
        cid = created["Id"]
        api = self.api
        _containers.add(cid, lambda: api.remove_container(cid, force=True))
        try:
            raw = self.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                      "stream": 1})
            sock = getattr(raw, "_sock", raw)
            sock.settimeout(None)
            self.api.start(cid)
        except Exception as exc:
            try:
                self.api.remove_container(cid, force=True)
            except Exception:  # noqa: BLE001
                pass
            text = str(exc)
            if "executable file not found" in text or "no such file" in text.lower():
                text += (f". The image {self.image!r} has no {self.python!r}: pass "
                         "environment_kwargs={'python': '/path/to/python3'} or another image")
            raise RLMEnvironmentError(f"the container did not start: {text}") from exc
        self.container_id = cid
        self.isolation_report = {
            "container": cid[:12], "image": self.image, "runtime": self.runtime or "runc",
            "network": "none", "read_only_root": True, "user": self.user,
            "memory": self.memory_limit, "pids": self.pids_limit, "cpus": self.cpus,
            "cap_drop": "ALL", "no_new_privileges": True, "seccomp": {
                "docker_default": True, "extra_filter": self._bpf is not None,
                "subprocess": self.allow_subprocess},
            "tmp_bytes": self.disk_limit, "context_transfer": self.context_transfer}
        return AttachedContainer(self.api, cid, sock, "docker worker")

    def _worker_config(self) -> dict[str, Any]:
        return {"limits": self._limits_config, "workdir": "/tmp"}

    def _describe_death(self, code: int | None) -> str:
        proc = self._proc
        state = proc.state() if isinstance(proc, AttachedContainer) else None
        if state and state.get("OOMKilled"):
            limit = (self.memory_limit or 0) // 2**20
            return (f"the docker REPL worker was killed for exceeding its memory limit of {limit} "
                    "MiB (the container's out-of-memory killer); raise "
                    "environment_kwargs['memory_limit'] if the task needs more")
        text = super()._describe_death(code)
        if code == 96:
            text += (" (it could not install its seccomp filter: the image needs ctypes, or pass "
                     "environment_kwargs={'seccomp': False})")
        return text

    def usage_instructions(self) -> str:
        text = super().usage_instructions()
        text += ("\nYour working directory is /tmp (private, at most "
                 f"{(self.disk_limit or 0) // 2**20} MiB); the rest of the filesystem is "
                 "read-only and there is no network")
        return text + ("." if self.allow_subprocess else "; starting processes is not allowed.")
