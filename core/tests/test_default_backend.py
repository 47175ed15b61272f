"""RLM() without a backend: $RLM_BACKEND, the user config file, openai with a key, else llamacpp."""

from __future__ import annotations

import os
import tempfile
import types
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm import RLM
from rlm.config import EMBEDDED_BACKEND, choose_backend, config_path, read_config
from rlm._manager import PluginManager
from rlm.exceptions import ConfigurationError
from rlm.plugin import hookimpl

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


class FakeBackend:
    def __init__(self, model_name: str = "fake", **kwargs):
        self.model_name = model_name
        self.kwargs = kwargs

    def completion(self, messages, **sampling):  # pragma: no cover - never called here
        raise AssertionError("not called")

    async def acompletion(self, messages, **sampling):  # pragma: no cover
        raise AssertionError("not called")

    def close(self) -> None:
        pass


class FakeSink:
    def handle(self, event) -> None:
        pass

    def close(self) -> None:
        pass


def make_pm(*backends: str) -> PluginManager:
    """An isolated plugin manager with the given backend names, the local env and a console sink."""
    def register_backends(registrar):
        for name in backends:
            registrar.add(name, FakeBackend)

    def register_envs(registrar):
        registrar.add("local", FakeBackend)  # never built: the tests below run no completion

    def register_sinks(registrar):
        registrar.add("console", FakeSink)

    pm = PluginManager(load_entrypoints=False)
    pm.register(types.SimpleNamespace(rlm_register_backends=hookimpl(register_backends),
                                      rlm_register_environments=hookimpl(register_envs),
                                      rlm_register_logger_sinks=hookimpl(register_sinks)),
                name="fakes")
    return pm


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user directory and an environment with no backend settings."""
    monkeypatch.setenv("RLM_USER_DIR", str(tmp_path))
    for var in ("RLM_BACKEND", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


ALL = ("openai", "llamacpp", "anthropic", "vllm")


def test_no_key_no_config_chooses_the_embedded_model(home: Path) -> None:
    choice = choose_backend(make_pm(*ALL))
    assert choice.name == EMBEDDED_BACKEND == "llamacpp"
    assert "embedded offline model" in choice.reason and "OpenAI key" in choice.reason


def test_openai_key_chooses_openai(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    choice = choose_backend(make_pm(*ALL))
    assert (choice.name, choice.reason) == ("openai", "OPENAI_API_KEY is set")
    assert "sk-test" not in choice.message()


def test_blank_openai_key_does_not_count(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "   ")
    assert choose_backend(make_pm(*ALL)).name == "llamacpp"


def test_stored_openai_key_chooses_openai(home: Path) -> None:
    from rlm.keys import set_key

    set_key("openai", "sk-stored")
    choice = choose_backend(make_pm(*ALL))
    assert choice.name == "openai" and "rlm keys set openai" in choice.reason


def test_key_but_no_openai_backend_falls_back_to_embedded(home: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert choose_backend(make_pm("llamacpp")).name == "llamacpp"


def test_env_var_wins_over_everything(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("RLM_BACKEND", "anthropic")
    (home / "config.toml").write_text('backend = "vllm"\n')
    choice = choose_backend(make_pm(*ALL))
    assert (choice.name, choice.reason) == ("anthropic", "from $RLM_BACKEND")


def test_config_file_wins_over_the_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (home / "config.toml").write_text('# my default\nbackend = "vllm"\n')
    choice = choose_backend(make_pm(*ALL))
    assert choice.name == "vllm" and str(home / "config.toml") in choice.reason
    assert config_path() == home / "config.toml"
    assert read_config() == {"backend": "vllm"}


def test_unknown_name_in_env_var_says_where_it_came_from(home: Path, monkeypatch) -> None:
    monkeypatch.setenv("RLM_BACKEND", "antropic")
    with pytest.raises(ConfigurationError) as info:
        choose_backend(make_pm(*ALL))
    text = str(info.value)
    assert "$RLM_BACKEND" in text and "'antropic'" in text and "anthropic" in text


def test_unknown_name_in_config_names_the_file(home: Path) -> None:
    (home / "config.toml").write_text('backend = "nope"\n')
    with pytest.raises(ConfigurationError, match="config.toml names the backend 'nope'"):
        choose_backend(make_pm(*ALL))


@pytest.mark.parametrize("text, match", [
    ("backend = \n", "not valid TOML"),
    ("backend = 3\n", "must be a backend name"),
    ("backend = '  '\n", "must be a backend name"),
])
def test_bad_config_file_is_reported(home: Path, text: str, match: str) -> None:
    (home / "config.toml").write_text(text)
    with pytest.raises(ConfigurationError, match=match) as info:
        choose_backend(make_pm(*ALL))
    assert str(home / "config.toml") in str(info.value)


def test_nothing_available_names_every_fix(home: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        choose_backend(make_pm("anthropic"))
    text = str(info.value)
    assert "backend=" in text and "OPENAI_API_KEY" in text and "rlm[llamacpp]" in text
    assert "anthropic" in text  # what is installed


def test_rlm_without_backend_uses_the_choice(home: Path, capsys) -> None:
    rlm = RLM(plugin_manager=make_pm(*ALL))
    assert rlm.backend == "llamacpp"
    assert capsys.readouterr().err == ""  # quiet unless verbose


def test_verbose_rlm_says_which_backend_and_why(home: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    rlm = RLM(plugin_manager=make_pm(*ALL), verbose=True)
    assert rlm.backend == "openai"
    err = capsys.readouterr().err
    assert "no backend given; using 'openai' (OPENAI_API_KEY is set)" in err
    assert "sk-secret-value" not in err


def test_explicit_backend_is_never_second_guessed(home: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RLM_BACKEND", "does-not-exist")  # ignored: a backend was given
    rlm = RLM(backend="vllm", plugin_manager=make_pm(*ALL), verbose=True)
    assert rlm.backend == "vllm"
    assert "no backend given" not in capsys.readouterr().err


def _expected(env: str | None, config: str | None, key: str | None, installed: set[str]) -> str:
    if env and env.strip():
        return env.strip()
    if config is not None:
        return config
    if key and key.strip() and "openai" in installed:
        return "openai"
    return "llamacpp"


@settings(max_examples=60, deadline=None)
@given(env=st.sampled_from([None, "", "  ", "anthropic", " vllm "]),
       config=st.sampled_from([None, "vllm", "openai"]),
       key=st.sampled_from([None, "", " ", "sk-1"]),
       with_openai=st.booleans())
def test_precedence(env, config, key, with_openai) -> None:
    installed = {"llamacpp", "anthropic", "vllm"} | ({"openai"} if with_openai else set())
    if config == "openai" and not with_openai:
        config = None
    with tempfile.TemporaryDirectory() as tmp:
        environ = {"RLM_USER_DIR": tmp}
        if env is not None:
            environ["RLM_BACKEND"] = env
        if key is not None:
            environ["OPENAI_API_KEY"] = key
        if config is not None:
            Path(tmp, "config.toml").write_text(f'backend = "{config}"\n')
        with mock.patch.dict(os.environ, environ, clear=False):
            for var in ("RLM_BACKEND", "OPENAI_API_KEY"):
                if var not in environ:
                    os.environ.pop(var, None)
            choice = choose_backend(make_pm(*sorted(installed)))
    assert choice.name == _expected(env, config, key, installed)
