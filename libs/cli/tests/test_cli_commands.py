"""`rlm --help`, `rlm models`, the config file, `rlm keys set`, `rlm install` / `rlm uninstall`
and CLI wording of errors, through the real `rlm` executable in a subprocess."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rlm_cli._input import cli_words
from rlm_testkit.servers import OpenAICompatibleServer

RLM_EXE = str(Path(sys.executable).with_name("rlm"))


def rlm(*args: str, home: Path, env: dict | None = None, stdin: str | None = None,
        exe: list[str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_BACKEND")}
    full_env.update({"RLM_USER_DIR": str(home), **(env or {})})
    return subprocess.run([*(exe or [RLM_EXE]), *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=full_env,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    d = tmp_path / "user"
    d.mkdir()
    return d


def test_help_lists_every_command_including_plugins(home: Path):
    out = rlm("--help", home=home)
    assert out.returncode == 0
    for cmd in ("run", "models", "plugins", "backends", "envs", "install", "uninstall", "batch",
                "demo", "logs", "view", "keys"):
        assert re.search(rf"^    {cmd}\b", out.stdout, re.M), cmd
    assert "rlm PROMPT" in out.stdout
    assert rlm(home=home).stdout == out.stdout  # bare rlm shows the same


def test_a_lone_typo_of_a_command_is_not_sent_as_a_prompt(home: Path):
    out = rlm("modles", home=home)
    assert out.returncode == 2 and "did you mean `rlm models`" in out.stderr


def test_models_lists_names_windows_prices_and_options(home: Path):
    out = rlm("models", home=home)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith("gpt-4o-mini "))
    assert "128,000 tokens" in line and "$0.15 / $0.6 per 1M" in line
    assert "llamacpp (aliases: local-model)" in out.stdout
    data = json.loads(rlm("models", "--json", home=home).stdout)
    openai = next(b for b in data["backends"] if b["backend"] == "openai")
    assert "temperature" in openai["options"]
    assert next(m for m in openai["models"] if m["default"])["name"] == "gpt-4o"
    scripted = next(b for b in data["backends"] if b["backend"] == "scripted")
    assert scripted["options"] is None  # does not declare: -o passes through


def test_models_default_writes_the_config_and_runs_use_it(home: Path):
    out = rlm("models", "default", home=home)
    assert out.returncode == 1 and "rlm models default NAME" in out.stderr
    out = rlm("models", "default", "gpt-4o-mini", home=home)
    assert out.returncode == 0, out.stderr
    text = (home / "config.toml").read_text()
    assert 'model = "gpt-4o-mini"' in text and 'backend = "openai"' in text
    assert rlm("models", "default", home=home).stdout == "gpt-4o-mini\n"
    # Changing it keeps the other lines.
    (home / "config.toml").write_text(text + "[options]\ntemperature = 0.1\n")
    rlm("models", "default", "gpt-4.1", home=home)
    text = (home / "config.toml").read_text()
    assert text.count("model =") == 1 and 'model = "gpt-4.1"' in text and "temperature" in text


def test_config_backend_model_base_url_options_and_unknown_keys(home: Path):
    with OpenAICompatibleServer(replies=["FINAL(ok)"]) as srv:
        (home / "config.toml").write_text(
            f'base_url = "{srv.base_url}"\nmodel = "served-model"\nmodle = "typo"\n'
            "[options]\ntemperature = 0.3\n")
        out = rlm("q", home=home)
        assert out.returncode == 0, out.stderr
        assert srv.requests[0]["model"] == "served-model"
        assert srv.requests[0]["temperature"] == 0.3
        assert "unknown key 'modle' ignored; did you mean 'model'?" in out.stderr
        assert "backend openai" in out.stderr and "sets base_url" in out.stderr
    (home / "config.toml").write_text('base_url = "localhost:8000"\nmodel = "m"\n')
    out = rlm("q", home=home, timeout=30)
    assert out.returncode == 2 and "http://localhost:8000" in out.stderr


def test_keys_set_only_for_known_backends_unless_forced(home: Path):
    out = rlm("keys", "set", "opnai", "--value", "sk-x", home=home)
    assert out.returncode != 0 and "did you mean 'openai'" in out.stderr
    assert not (home / "keys.json").exists()
    assert rlm("keys", "set", "openai", "--value", "sk-x", home=home).returncode == 0
    assert rlm("keys", "set", "my-plugin", "--value", "k", "--force", home=home).returncode == 0
    assert rlm("keys", "list", home=home).stdout.split() == ["my-plugin", "openai"]


def test_a_backend_typo_gets_did_you_mean_and_no_pip_line(home: Path):
    out = rlm("q", "-b", "opnai", home=home)
    assert out.returncode == 2
    assert "Did you mean 'openai'?" in out.stderr and "pip install" not in out.stderr


def test_errors_name_cli_flags_not_python_arguments(home: Path):
    # A missing key: the backend's message, in CLI words.
    out = rlm("q", "-b", "anthropic", home=home, env={"ANTHROPIC_API_KEY": ""})
    assert out.returncode == 1
    assert "--backend-arg api_key=" in out.stderr and "backend_kwargs" not in out.stderr


@pytest.mark.parametrize("python, cli", [
    ('pass backend_kwargs={"api_key": ...} or set X', "pass --backend-arg api_key=... or set X"),
    ("use environment_kwargs={'isolation': 'rlimits'} instead",
     "use --env-arg isolation=rlimits instead"),
    ("environment_kwargs={'image': 'x', 'resources': {...}}", "--env-arg KEY=VALUE"),
    ("raise max_iterations=30", "raise --max-iterations 30"),
    ("start dockerd (scripts/ci/docker.sh shows a private daemon), or", "start dockerd, or"),
])
def test_cli_words(python: str, cli: str):
    assert cli_words(python) == cli


# -- rlm install / uninstall: pip of the interpreter rlm runs in ----------------------------

def _wheel(dest: Path) -> Path:
    """A tiny plugin distribution registering the backend 'tinyecho' (built by hand, offline)."""
    name, version = "rlm_tinyecho", "0.1.0"
    files = {
        "rlm_tinyecho/__init__.py": (
            "from rlm.plugin import hookimpl\n"
            "@hookimpl\n"
            "def rlm_register_backends(registrar):\n"
            "    registrar.add('tinyecho', 'rlm_plugins.scripted.backend:ScriptedBackend',\n"
            "                  description='test plugin')\n"),
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: rlm-tinyecho\nVersion: {version}\n"),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        f"{name}-{version}.dist-info/entry_points.txt": "[rlm]\ntinyecho = rlm_tinyecho\n",
    }
    record = []
    path = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            data = text.encode()
            zf.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(data)}")
        rec = f"{name}-{version}.dist-info/RECORD"
        zf.writestr(rec, "\n".join(record + [f"{rec},,"]) + "\n")
    return path


def test_install_and_uninstall_go_into_the_environment_rlm_runs_in(tmp_path: Path, home: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The workspace (rlm, its plugins, pip) is visible to the new interpreter, which installs
    # into its own site-packages.
    Path(site, "workspace.pth").write_text(
        "\n".join(p for p in sys.path if p and Path(p).is_dir() and "pytest" not in p) + "\n")
    exe = [str(py), "-m", "rlm"]
    wheel = _wheel(tmp_path)
    out = rlm("install", str(wheel), home=home, exe=exe, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{py} -m pip install" in out.stderr
    assert list(Path(site).glob("rlm_tinyecho-0.1.0.dist-info"))
    backends = rlm("backends", home=home, exe=exe)
    assert "tinyecho" in backends.stdout
    assert "tinyecho" not in rlm("backends", home=home).stdout  # not the other environment
    out = rlm("uninstall", "-y", "rlm-tinyecho", home=home, exe=exe, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "tinyecho" not in rlm("backends", home=home, exe=exe).stdout


def test_install_refuses_a_typo_of_a_published_name(home: Path):
    out = rlm("install", "rlm-backend-opnai", home=home)
    assert out.returncode == 2
    assert "did you mean rlm-backend-openai?" in out.stderr and "--force" in out.stderr


# -- rlm logs prune, the size cap, rlm batch in the logs -------------------------------------

def _runs(home: Path) -> list[str]:
    out = rlm("logs", "list", "-n", "0", "--json", home=home)
    return [r["id"] for r in json.loads(out.stdout or "[]")]


def _one_run(home: Path, answer: str, env: dict | None = None) -> subprocess.CompletedProcess:
    out = rlm("q", "-b", "scripted", "--backend-arg", f'replies=["FINAL({answer})"]', home=home,
              env=env)
    assert out.returncode == 0, out.stderr
    return out


def test_batch_lines_are_logged_like_runs(home: Path, tmp_path: Path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}\n')
    replies = 'replies=["FINAL(1)", "FINAL(2)", "FINAL(3)"]'
    out = rlm("batch", str(src), "-o", str(tmp_path / "out.jsonl"), "-b", "scripted",
              "--backend-arg", replies, "-j", "1", home=home)
    assert out.returncode == 0, out.stderr
    assert len(_runs(home)) == 3
    out = rlm("batch", str(src), "-o", str(tmp_path / "out2.jsonl"), "-b", "scripted",
              "--backend-arg", replies, "-j", "1", "--no-log", home=home)
    assert out.returncode == 0, out.stderr
    assert len(_runs(home)) == 3


def test_logs_prune_by_count_age_and_size(home: Path):
    for i in range(5):
        _one_run(home, f"a{i}")
    ids = _runs(home)  # newest first
    assert len(ids) == 5
    out = rlm("logs", "prune", home=home)
    assert out.returncode == 2 and "--older-than" in out.stderr
    out = rlm("logs", "prune", "--keep", "3", "--dry-run", home=home)
    assert "would remove 2 runs" in out.stdout and len(_runs(home)) == 5
    assert rlm("logs", "prune", "--keep", "3", home=home).returncode == 0
    assert _runs(home) == ids[:3]
    assert rlm("logs", "prune", "--older-than", "1w", home=home).stdout.startswith("removed 0 runs")
    big = "x" * 400_000  # a run with a large context makes the database grow
    rlm("q", "-b", "scripted", "--backend-arg", 'replies=["FINAL(big)"]', stdin=big, home=home)
    db = home / "logs.db"
    assert len(_runs(home)) == 4
    out = rlm("logs", "prune", "--max-size", "150kB", home=home)
    assert out.returncode == 0, out.stderr
    assert db.stat().st_size <= 150_000 and len(_runs(home)) < 4


def test_size_cap_removes_the_oldest_runs_but_not_the_new_one(home: Path):
    for i in range(3):
        _one_run(home, f"r{i}")
    out = _one_run(home, "newest", env={"RLM_LOGS_MAX_MB": "0.001"})
    assert "over its size cap" in out.stderr and "removed the 3 oldest runs" in out.stderr
    ids = _runs(home)
    assert len(ids) == 1 and f"logged as run {ids[0]}" in out.stderr
    (home / "config.toml").write_text("logs_max_mb = 0\n")  # 0: no cap
    out = _one_run(home, "again", env={"RLM_LOGS_MAX_MB": ""})
    assert "size cap" not in out.stderr and len(_runs(home)) == 2
