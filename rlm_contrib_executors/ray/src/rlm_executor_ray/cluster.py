"""Connecting to a Ray cluster someone else started: the address forms, the token, the driver's
own address, and one clear line for each way it fails.

    target = parse_address("127.0.0.1:6379")          # or "ray://HEAD:10001", "auto"
    token, source = find_token(auth_token)            # argument, RAY_AUTH_TOKEN(_PATH), ~/.ray
    info = probe(target, token, timeout=10)           # one gRPC round trip, before ray.init

:func:`probe` asks the cluster directly (the GCS for ``HOST:PORT``, the Ray Client server for
``ray://``) before ``ray.init`` is called, so a wrong address, a missing or rejected token and a
Ray/Python version mismatch each fail in milliseconds with one :class:`ConfigurationError` line
instead of Ray's retry loop (20 s or more of log lines, then a generic ``ConnectionError``).

Process-wide effects (Ray's own configuration is per process): :func:`use_token` sets
``RAY_AUTH_MODE=token`` (and ``RAY_AUTH_TOKEN`` when the token was passed explicitly) for this
process and the processes it starts; :func:`keep_loopback` stops Ray from replacing 127.0.0.1 by
the machine's network address (Ray does that for every address it is given unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). Both are called only by ``RayExecutor`` before it
connects; nothing here holds state between calls.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.exceptions import ConfigurationError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Where ``ray start`` / ``ray get-auth-token --generate`` keep the token (Ray's default).
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
_PASS_TOKEN = ("pass the head's token (`ray get-auth-token` on the head prints it) as auth_token: "
               "--executor-arg auth_token=TOKEN on the command line, "
               "executor_kwargs={'auth_token': ...} / subcall_executor_kwargs={'auth_token': ...} "
               "in Python, or RAY_AUTH_TOKEN=TOKEN in the environment")


@dataclass(frozen=True)
class Target:
    """An address as the user gave it: ``kind`` is ``client`` (``ray://HOST:PORT``), ``gcs``
    (``HOST:PORT``) or ``auto`` (the cluster ``ray start`` recorded on this machine)."""

    address: str
    kind: str
    host: str | None = None
    port: int | None = None

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or bool(self.host and self.host.startswith("127."))


@dataclass(frozen=True)
class ClusterInfo:
    """What :func:`probe` learnt: versions (GCS only; Ray Client reports them at connect time),
    the addresses the cluster's live nodes registered, and whether a token was required."""

    ray_version: str | None
    python_version: str | None
    node_ips: tuple[str, ...]
    token_required: bool


def parse_address(address: str) -> Target:
    text = address.strip()
    if text == "auto":
        return Target(text, "auto")
    kind = "gcs"
    rest = text
    if text.startswith("ray://"):
        kind, rest = "client", text[len("ray://"):]
    elif "://" in text:
        raise ConfigurationError(
            f"ray executor: address {address!r} is neither ray://HOST:PORT (Ray Client, port "
            "10001 by default) nor HOST:PORT (the head's GCS, port 6379 by default) nor 'auto'.")
    rest = rest.rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if kind == "client" else "6379"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"ray executor: cannot read a host and port from address {address!r}; write "
            "ray://HOST:10001 (Ray Client) or HOST:6379 (the head's GCS).")
    return Target(text, kind, host, int(port))


def find_token(explicit: str | None = None) -> tuple[str | None, str]:
    """The token to present and where it came from, in Ray's own order of precedence after an
    explicit ``auth_token``: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, then
    ``~/.ray/auth_token``. ``(None, "")`` when there is none."""
    if explicit:
        return explicit.strip(), "the auth_token argument"
    env = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if env:
        return env, "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    for path, where in ((named, f"RAY_AUTH_TOKEN_PATH ({named})"),
                        (str(DEFAULT_TOKEN_PATH), str(DEFAULT_TOKEN_PATH))):
        if not path:
            continue
        try:
            text = Path(path).expanduser().read_text().strip()
        except OSError:
            continue
        if text:
            return text, where
    return None, ""


def recorded_address() -> str | None:
    """The GCS address ``ray start`` recorded on this machine (what ``address='auto'`` uses)."""
    try:
        from ray._private import services

        return services.get_ray_address_from_environment("auto", None)
    except Exception:  # noqa: BLE001 - nothing recorded, or Ray's layout changed
        return None


def _rpc(stub_call: Any, request: Any, token: str | None, timeout: float) -> Any:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    return stub_call(request, timeout=timeout, metadata=metadata)


def _probe_once(target: Target, token: str | None, timeout: float) -> ClusterInfo:
    import grpc

    with grpc.insecure_channel(target.endpoint) as channel:
        if target.kind == "client":
            from ray.core.generated import ray_client_pb2 as cpb
            from ray.core.generated import ray_client_pb2_grpc as cgrpc

            _rpc(cgrpc.RayletDriverStub(channel).ClusterInfo,
                 cpb.ClusterInfoRequest(type=cpb.ClusterInfoType.PING), token, timeout)
            return ClusterInfo(None, None, (), bool(token))
        from ray.core.generated import gcs_service_pb2 as pb
        from ray.core.generated import gcs_service_pb2_grpc as g

        kv = _rpc(g.InternalKVGcsServiceStub(channel).InternalKVGet,
                  pb.InternalKVGetRequest(key=b"CLUSTER_METADATA", namespace=b"cluster"),
                  token, timeout)
        meta: dict[str, Any] = {}
        if kv.value:
            try:
                meta = json.loads(kv.value)
            except ValueError:
                meta = {}
        nodes = _rpc(g.NodeInfoGcsServiceStub(channel).GetAllNodeInfo,
                     pb.GetAllNodeInfoRequest(), token, timeout)
        alive = tuple(n.node_manager_address for n in nodes.node_info_list if n.state == 0)
        return ClusterInfo(meta.get("ray_version"), meta.get("python_version"), alive,
                           bool(token))


def probe(target: Target, token: str | None, token_source: str, timeout: float) -> ClusterInfo:
    """One round trip to the cluster; raises :class:`ConfigurationError` (one line) when it is
    unreachable, wants a token we lack or rejects ours, or runs other Ray/Python versions.

    A token is presented only when the cluster asks for one (a first try goes without)."""
    import grpc

    where = ("the Ray Client server" if target.kind == "client" else "the Ray cluster (GCS)")
    where = f"{where} at {target.endpoint}"
    try:
        try:
            info = _probe_once(target, None, timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
            if not token:
                raise ConfigurationError(
                    f"ray executor: {where} requires an authentication token (token "
                    "authentication is on) and none was found (looked at auth_token, "
                    f"RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH and {DEFAULT_TOKEN_PATH}): "
                    f"{_PASS_TOKEN}.") from None
            try:
                info = _probe_once(target, token, timeout)
            except grpc.RpcError as again:
                if again.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise ConfigurationError(
                        f"ray executor: {where} rejected the authentication token from "
                        f"{token_source} (it is not this cluster's): {_PASS_TOKEN}.") from None
                raise
    except grpc.RpcError as exc:
        details = (exc.details() or "").splitlines()[0][:160] if exc.details() else ""
        hint = ("ray://HOST:10001 is the Ray Client port (`ray start --head "
                "--ray-client-server-port 10001`)" if target.kind == "client" else
                "HOST:6379 is the head's GCS port (`ray start --head --port 6379`)")
        raise ConfigurationError(
            f"ray executor: cannot reach {where} within {timeout:g}s ({exc.code().name}: "
            f"{details}); is the cluster up (`ray status --address {target.endpoint}` on the "
            f"head) and the port reachable from here? {hint}.") from None
    check_versions(info, where)
    return info


def local_versions() -> tuple[str, str]:
    import ray

    return ray.__version__, platform.python_version()


def check_versions(info: ClusterInfo, where: str) -> None:
    """Ray's own rule for drivers: the same Ray version and the same Python version."""
    if info.ray_version is None or info.python_version is None:
        return
    ray_v, py_v = local_versions()
    if (info.ray_version, info.python_version) != (ray_v, py_v):
        raise ConfigurationError(version_line(where, info.ray_version, info.python_version))


def version_line(where: str, cluster_ray: str, cluster_py: str) -> str:
    ray_v, py_v = local_versions()
    return (f"ray executor: version mismatch with {where}: the cluster runs Ray {cluster_ray} on "
            f"Python {cluster_py}, this process Ray {ray_v} on Python {py_v}; run rlm with the "
            f"cluster's versions (pip install 'ray[client]=={cluster_ray}' in a Python "
            f"{'.'.join(cluster_py.split('.')[:2])} environment) or restart the cluster with "
            "yours.")


def version_mismatch_from(exc: BaseException) -> tuple[str, str] | None:
    """(cluster Ray, cluster Python) from Ray's own 'Version mismatch' RuntimeError, if it is one
    (Ray Client reports versions only when it connects)."""
    text = str(exc)
    if "Version mismatch" not in text:
        return None
    lines = [ln.strip() for ln in text.splitlines()]
    try:
        i = next(k for k, ln in enumerate(lines) if "The cluster was started" in ln)
        return lines[i + 1].split(":", 1)[1].strip(), lines[i + 2].split(":", 1)[1].strip()
    except (StopIteration, IndexError):
        return "?", "?"


def use_token(token: str, explicit: bool) -> None:
    """Turn token authentication on for this process's Ray (and the processes it starts).

    An explicit token goes into ``RAY_AUTH_TOKEN`` (a file named by ``RAY_AUTH_TOKEN_PATH``
    would take precedence for Ray otherwise it is dropped from this process's environment)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    if explicit:
        os.environ["RAY_AUTH_TOKEN"] = token
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    try:  # Ray caches its configuration and the token: make it read them again.
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 - an older Ray without token authentication
        pass


def keep_loopback() -> None:
    """Stop Ray from rewriting 127.0.0.1 into this machine's network address (for the address
    given, and for the driver's own node address)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    except Exception:  # noqa: BLE001
        pass


__all__ = ["ClusterInfo", "Target", "check_versions", "find_token", "keep_loopback",
           "parse_address", "probe", "recorded_address", "use_token", "version_line",
           "version_mismatch_from"]
