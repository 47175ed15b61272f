"""The key store (rlm.keys, `rlm keys`): file mode 0600, resolution order, .env only when asked,
and the OpenAI backend using it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm import keys
from rlm.exceptions import AuthenticationError, ConfigurationError


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RLM_USER_DIR", str(tmp_path / "u"))
    return tmp_path / "u"


def rlm_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlm", *args], capture_output=True, text=True,
                          input=stdin, timeout=60, env=dict(os.environ))


def test_user_dir_override_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("RLM_USER_DIR", str(tmp_path))
    assert keys.user_dir() == tmp_path
    monkeypatch.delenv("RLM_USER_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert keys.user_dir() == tmp_path / "xdg" / "rlm"
        assert keys._fallback_user_dir() == keys.user_dir()  # same rule without platformdirs


def test_set_writes_mode_0600_and_never_leaves_temp_files(user_dir: Path):
    path = keys.set_key("openai", "sk-one")
    assert path == user_dir / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # loosened by hand: the next write makes it private again
    keys.set_key("anthropic", "sk-ant")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in user_dir.iterdir()) == ["keys.json"]
    assert keys.list_keys() == ["anthropic", "openai"]
    assert keys.get_key("openai") == "sk-one"
    assert keys.delete_key("openai") and not keys.delete_key("openai")
    assert keys.list_keys() == ["anthropic"]


def test_resolution_order(user_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    r = lambda explicit=None: keys.resolve_api_key(explicit, env_var="OPENAI_API_KEY", key_name="openai")  # noqa: E731
    assert r() == "from-env"
    keys.set_key("openai", "from-store")
    assert r() == "from-store"
    assert r("explicit") == "explicit"
    monkeypatch.delenv("OPENAI_API_KEY")
    keys.delete_key("openai")
    assert r() is None


@settings(max_examples=30, deadline=None)
@given(value=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=80),
       name=st.from_regex(r"[a-z][a-z0-9_\-]{0,15}", fullmatch=True))
def test_any_key_round_trips(value: str, name: str, tmp_path_factory):
    path = tmp_path_factory.mktemp("k") / "keys.json"
    keys.set_key(name, value, path)
    assert keys.get_key(name, path) == value.strip()


def test_bad_store_and_bad_names_name_the_fix(user_dir: Path):
    with pytest.raises(ConfigurationError, match="invalid key name"):
        keys.set_key("bad name", "x")
    with pytest.raises(ConfigurationError, match="is empty"):
        keys.set_key("openai", "  ")
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "keys.json").write_text("{oops")
    with pytest.raises(ConfigurationError, match="not valid JSON.*rlm keys set"):
        keys.get_key("openai")


def test_load_dotenv_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("dotenv")
    monkeypatch.delenv("RLM_TEST_DOTENV", raising=False)
    env = tmp_path / ".env"
    env.write_text("RLM_TEST_DOTENV=loaded\n")
    monkeypatch.chdir(tmp_path)
    # Importing rlm (and building the CLI) reads no .env.
    out = subprocess.run([sys.executable, "-c", "import rlm, rlm.keys, rlm_cli.cli, os; "
                          "print(os.environ.get('RLM_TEST_DOTENV'))"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert out.stdout.strip() == "None"
    assert keys.load_dotenv(env) is True
    assert os.environ["RLM_TEST_DOTENV"] == "loaded"
    with pytest.raises(ConfigurationError, match="does not exist"):
        keys.load_dotenv(tmp_path / "missing.env")


def test_keys_cli(user_dir: Path):
    s = rlm_cli("keys", "set", "openai", stdin="sk-from-stdin\n")
    assert s.returncode == 0, s.stderr
    assert stat.S_IMODE((user_dir / "keys.json").stat().st_mode) == 0o600
    assert rlm_cli("keys", "get", "openai").stdout.strip() == "sk-from-stdin"
    assert rlm_cli("keys", "list").stdout.split() == ["openai"]
    assert "sk-from-stdin" not in rlm_cli("keys", "list").stdout
    assert rlm_cli("keys", "path").stdout.strip() == str(user_dir / "keys.json")
    missing = rlm_cli("keys", "get", "anthropic")
    assert missing.returncode == 1 and "rlm keys set anthropic" in missing.stderr
    assert json.loads((user_dir / "keys.json").read_text())["openai"] == "sk-from-stdin"
    assert rlm_cli("keys", "remove", "openai").returncode == 0
    assert rlm_cli("keys", "list").stdout == ""


def test_openai_backend_uses_the_store(user_dir: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("rlm_backend_openai")
    from rlm_backend_openai.client import OpenAIBackend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(AuthenticationError) as err:
        OpenAIBackend(model_name="gpt-4o-mini")
    assert "OPENAI_API_KEY" in str(err.value) and "rlm keys set openai" in str(err.value)
    keys.set_key("openai", "sk-stored")
    b = OpenAIBackend(model_name="gpt-4o-mini")
    assert b._api_key.value == "sk-stored"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert OpenAIBackend(model_name="gpt-4o-mini")._api_key.value == "sk-stored"
    assert OpenAIBackend(model_name="gpt-4o-mini", api_key="sk-arg")._api_key.value == "sk-arg"
    # A custom endpoint never receives the stored OpenAI key.
    monkeypatch.delenv("OPENAI_API_KEY")
    local = OpenAIBackend(model_name="m", base_url="http://127.0.0.1:9/v1")
    assert local._api_key.value != "sk-stored"
