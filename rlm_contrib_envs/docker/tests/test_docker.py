"""What is particular to docker: the container's settings, its errors, the channel over attach,
context transfer modes, gVisor, the offline image."""

from __future__ import annotations

import os
import socket
import struct
import tarfile
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm.exceptions import ConfigurationError, RLMEnvironmentError
from rlm_env_docker.env import AttachedContainer, DockerREPL
from rlm_env_docker.image import write_rootfs
from rlm_env_docker.testing import ready, runsc_registered
from rlm_testkit.environments import RecordingHost

IMAGE, REASON = ready()
needs_docker = pytest.mark.skipif(REASON is not None and os.environ.get("CI") != "true",
                                  reason=REASON or "")


needs_runsc = pytest.mark.skipif(not runsc_registered(),
                                 reason="gVisor's runsc is not registered with the daemon "
                                        "(scripts/ci/docker.sh registers it when installed)")


@pytest.fixture
def docker_env():
    envs = []

    def make(_tools=None, **kwargs):
        env = DockerREPL(**{"image": IMAGE, "pull": "never", "memory_limit": "512m", **kwargs})
        env.start(RecordingHost(), _tools or {})
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.shutdown()


# --- no daemon needed ------------------------------------------------------------------------


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ConfigurationError, match="must not be root"):
        DockerREPL(user="0:0")
    with pytest.raises(ConfigurationError, match="numeric 'uid:gid'"):
        DockerREPL(user="nobody")
    with pytest.raises(ConfigurationError, match="'missing', 'never' or 'always'"):
        DockerREPL(pull="sometimes")
    with pytest.raises(ConfigurationError, match="cpus"):
        DockerREPL(cpus=0)
    with pytest.raises(ConfigurationError, match="pids_limit"):
        DockerREPL(pids_limit=2)
    with pytest.raises(ConfigurationError, match="context_transfer"):
        DockerREPL(context_transfer="carrier-pigeon")
    with pytest.raises(ConfigurationError, match="memory_limit"):
        DockerREPL(memory_limit="lots")
    with pytest.raises(TypeError):
        DockerREPL(no_such_option=1)


def test_unreachable_daemon_says_how_to_get_one(tmp_path):
    with pytest.raises(RLMEnvironmentError) as info:
        DockerREPL(base_url=f"unix://{tmp_path}/no-docker.sock")
    text = str(info.value)
    assert "cannot reach a Docker daemon" in text and "dockerd" in text and "sandbox" in text


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=150)), max_size=25),
       st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=10),
       st.integers(min_value=1, max_value=97))
def test_attach_stream_is_demultiplexed(frames, cuts, read_size):
    """stdout frames become the channel's bytes, stderr frames the kept log, however the stream
    is split into packets and however much the reader asks for."""
    data = b"".join(_frame(s, p) for s, p in frames)
    a, b = socket.socketpair()

    def feed():
        i, k = 0, 0
        while i < len(data):
            n = cuts[k % len(cuts)]
            a.sendall(data[i:i + n])
            i, k = i + n, k + 1
        a.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=feed)
    sender.start()
    conn = AttachedContainer(api=None, container_id="x", sock=b, what="test")
    out = bytearray()
    while True:
        chunk = conn.read(read_size)
        if not chunk:
            break
        assert len(chunk) <= read_size
        out += chunk
    sender.join()
    a.close()
    b.close()
    assert bytes(out) == b"".join(p for s, p in frames if s == 1)
    *complete, partial = b"".join(p for s, p in frames if s == 2).split(b"\n")
    expected = [line.decode("utf-8", "replace") for line in complete][-200:]
    if partial:
        expected.append(partial.decode("utf-8", "replace"))
    assert conn.stderr_tail(10_000) == "\n".join(expected)


def test_offline_image_rootfs_holds_the_interpreter_and_nothing_else(tmp_path):
    path = tmp_path / "rootfs.tar"
    info = write_rootfs(str(path))
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        members = {m.name: m for m in tar.getmembers()}
    assert "usr/local/bin/python3" in names and "etc/passwd" in names
    assert members["tmp"].mode == 0o1777
    assert not [n for n in names if "/site-packages/" in n or "/dist-packages/" in n]
    assert not [n for n in names if n.startswith(("bin/sh", "usr/bin/apt", "usr/bin/bash"))]
    assert any(n.endswith("/os.py") for n in names)
    assert any("lib-dynload/_ctypes" in n for n in names)  # the seccomp boot needs ctypes
    assert info["libraries"] > 3 and info["bytes"] > 5 * 2**20


# --- with a daemon ---------------------------------------------------------------------------


@needs_docker
def test_container_is_locked_down(docker_env):
    env = docker_env(cpus=0.5, pids_limit=40, disk_limit="32m")
    attrs = env.api.inspect_container(env.container_id)
    hc = attrs["HostConfig"]
    assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
    assert hc["Memory"] == 512 * 2**20 and hc["MemorySwap"] == 512 * 2**20
    assert hc["PidsLimit"] == 40 and hc["NanoCpus"] == 500_000_000
    assert hc["LogConfig"]["Type"] == "none" and hc["IpcMode"] == "private"
    assert attrs["Config"]["User"] == "65534:65534"
    assert not [e for e in attrs["Config"]["Env"] if "KEY" in e or "SECRET" in e]
    r = env.execute(
        "import os\nst = open('/proc/self/status').read()\n"
        "f = lambda k: st.split(k + ':')[1].split()[0]\n"
        "print(os.getuid(), os.getgid(), os.getpid(), f('CapEff'), f('NoNewPrivs'), f('Seccomp'))\n"
        "print(' '.join(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))\n"
        "try:\n    open('/usr/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
        "print(sorted(os.environ))")
    lines = r.stdout.splitlines()
    uid, gid, pid, cap_eff, no_new_privs, seccomp_mode = lines[0].split()
    assert (uid, gid, cap_eff, no_new_privs, seccomp_mode) == (
        "65534", "65534", "0000000000000000", "1", "2")
    assert int(pid) < 10  # its own pid namespace (pid 1 is the boot's minimal init)
    assert lines[1].split() == ["lo"]
    assert lines[2] == "30"  # EROFS
    assert "OPENAI_API_KEY" not in lines[3] and "DOCKER_HOST" not in lines[3]
    assert env.isolation_report["network"] == "none"


@needs_docker
def test_private_tmp_is_size_limited(docker_env):
    env = docker_env(disk_limit="16m")
    r = env.execute("open('mine.txt', 'w').write('ok')\nprint(open('/tmp/mine.txt').read())")
    assert r.stdout.strip() == "ok"
    r = env.execute("open('big', 'wb').write(b'x' * (32 * 1024 * 1024))")
    assert r.error is not None and ("No space" in r.error or "File too large" in r.error)


@needs_docker
def test_missing_image_names_the_offline_build_command():
    with pytest.raises(RLMEnvironmentError) as info:
        DockerREPL(image="rlm-no-such-image:0", pull="never")
    assert "rlm-env-docker build-image" in str(info.value)
    # Pulling from a registry nobody runs (127.0.0.1:9) fails fast and says the same.
    with pytest.raises(RLMEnvironmentError) as info:
        DockerREPL(image="127.0.0.1:9/rlm-no-such-image:0")
    assert "pulling it failed" in str(info.value) and "build-image" in str(info.value)


@needs_docker
def test_unknown_runtime_names_the_daemon_setting():
    with pytest.raises(RLMEnvironmentError, match="no runtime 'kata-nope'"):
        DockerREPL(image=IMAGE, pull="never", runtime="kata-nope")


@needs_docker
def test_image_without_the_interpreter_is_explained(docker_env):
    with pytest.raises(RLMEnvironmentError, match="has no '/opt/nope/python'"):
        docker_env(python="/opt/nope/python")


@needs_docker
def test_subprocess_opt_in(docker_env):
    env = docker_env(allow_subprocess=True)
    r = env.execute("import os\npid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
                    "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    assert r.error is None and r.stdout.strip() == "7"


@needs_docker
def test_streamed_contexts_arrive_intact(docker_env):
    env = docker_env(context_transfer="stream")
    text = "héllo \"quoted\" ```\n" * 50_000 + "\udcff"[:0] + "end"
    env.add_context(text, 0)
    env.add_context({"k": [1, 2, {"deep": "ü"}]}, 1)
    r = env.execute("print(len(context), context[-3:], context_1['k'][2]['deep'])")
    assert r.stdout.split() == [str(len(text)), "end", "ü"]
    assert env._shared_ctx_dir is None


@needs_docker
def test_shutdown_removes_the_container_and_a_dead_worker_is_replaced(docker_env):
    import docker

    env = docker_env(_tools={"LIMIT": 3})
    env.add_context("the context", 0)
    first = env.container_id
    env.execute("mine = 1")
    r = env.execute("import os\nos._exit(9)")
    assert r.error is not None and "exited with status 9" in r.error
    r = env.execute("print(context, LIMIT, 'mine' in globals())")
    assert r.stdout.strip() == "the context 3 False" and env.restarts == 1
    second = env.container_id
    assert second != first
    env.shutdown()
    for cid in (first, second):
        with pytest.raises(docker.errors.NotFound):
            env.api.inspect_container(cid)


@needs_docker
def test_out_of_memory_is_reported_as_such(docker_env):
    env = docker_env(memory_limit="128m")
    r = env.execute("hog = [bytearray(32 * 2**20) for _ in range(40)]", timeout=60)
    assert r.error is not None and "memory limit of 128 MiB" in r.error
    assert env.execute("print('back')").stdout.strip() == "back"


@needs_docker
@needs_runsc
def test_gvisor_runtime(docker_env):
    env = docker_env(runtime="runsc")
    env.add_context("under gVisor", 0)
    r = env.execute("import platform, os\nprint(context, platform.release(), os.getuid())\n"
                    "print(llm_query('hi'))")
    assert r.error is None
    assert r.stdout.splitlines() == ["under gVisor 4.4.0 65534", "llm:hi"]  # gVisor's kernel
    assert env.context_transfer == "stream" and env.isolation_report["runtime"] == "runsc"


@needs_docker
def test_build_image_command(capsys):
    import docker

    from rlm_env_docker.cli import main

    tag = "rlm-python-test-build:1"
    client = docker.from_env(version="auto")
    try:
        assert main(["build-image", "--tag", tag]) == 0
        assert "built " + tag in capsys.readouterr().out
        image = client.images.get(tag)
        assert image.attrs["Config"]["User"] == "65534:65534"
        assert image.labels.get("org.rlm.image") == "local-python"
        out = client.containers.run(tag, ["python3", "-I", "-S", "-c", "print(6 * 7)"],
                                    remove=True, network_mode="none")
        assert out.strip() == b"42"
    finally:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
        client.close()


def test_rlm_cli_has_the_docker_command(capsys):
    from rlm_cli.cli import main

    with pytest.raises(SystemExit) as info:
        main(["docker", "build-image", "--help"])
    assert info.value.code == 0
    assert "--tag" in capsys.readouterr().out


@needs_docker
def test_containers_of_dead_hosts_are_reaped_and_live_ones_kept():
    """reap_containers (run before every new container) removes the containers, running or not,
    whose host on this machine is gone, and leaves those of a live host alone."""
    import subprocess
    import sys

    import docker

    from rlm_isolation.leftovers import host_identity
    from rlm_env_docker.env import HOST_LABEL, LABEL, reap_containers

    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    dead_identity = host_identity(dead.pid)
    dead.wait()
    client = docker.from_env(version="auto")
    made = []
    try:
        for identity in (dead_identity, host_identity()):
            made.append(client.api.create_container(
                IMAGE, command=["python3", "-c", "import time; time.sleep(60)"],
                labels={LABEL: "docker", HOST_LABEL: identity},
                host_config=client.api.create_host_config(network_mode="none"))["Id"])
        client.api.start(made[0])
        removed = reap_containers(client.api)
        assert made[0][:12] in removed
        assert made[1][:12] not in removed
        left = {c["Id"] for c in client.api.containers(all=True, filters={"label": HOST_LABEL})}
        assert made[0] not in left and made[1] in left
    finally:
        for cid in made:
            try:
                client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
        client.close()


def test_a_foreign_user_needs_a_root_host(monkeypatch):
    """A host that is not root cannot give the run's private files to another user."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    with pytest.raises(ConfigurationError, match="needs a host running as root"):
        DockerREPL(user="65534:65534", base_url="unix:///nonexistent.sock")
