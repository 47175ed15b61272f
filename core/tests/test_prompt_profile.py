"""A backend's prompt profile (``backend.system_prompt``) replaces the default system prompt."""

from __future__ import annotations

import types

import pytest

from rlm import RLM
from rlm._manager import PluginManager
from rlm.plugin import hookimpl
from rlm.prompts import SYSTEM_PROMPT
from rlm_plugins.scripted.backend import ScriptedBackend

pytestmark = pytest.mark.usefixtures("clean_plugin_env")

PROFILE = "Tiny prompt for a tiny model.\n{custom_tools_section}\nExample: print(len(context))"
FINISH = '```repl\nanswer["content"] = "done"\nanswer["ready"] = True\n```'


class ProfiledBackend(ScriptedBackend):
    def __init__(self, system_prompt=PROFILE, **kwargs):
        super().__init__(**kwargs)
        self.system_prompt = system_prompt


SEEN: list[ProfiledBackend] = []


def make(**kwargs) -> ProfiledBackend:
    backend = ProfiledBackend(**kwargs)
    SEEN.append(backend)
    return backend


@pytest.fixture
def pm() -> PluginManager:
    manager = PluginManager()
    manager.register(types.SimpleNamespace(rlm_register_backends=hookimpl(
        lambda registrar: registrar.add("profiled", make))), name="profiled-test")
    SEEN.clear()
    return manager


def system_prompt_of_first_call() -> str:
    messages = SEEN[-1].calls[0]
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


def run(pm: PluginManager, **kwargs) -> str:
    backend_kwargs = {"replies": [FINISH, FINISH], **kwargs.pop("backend_kwargs", {})}
    with RLM(backend="profiled", backend_kwargs=backend_kwargs, plugin_manager=pm, **kwargs) as rlm:
        assert rlm.completion("some context").response == "done"
    return system_prompt_of_first_call()


def tool() -> str:
    """Says hi."""
    return "hi"


def test_profile_replaces_the_default_prompt(pm: PluginManager) -> None:
    system = run(pm)
    assert system.startswith("Tiny prompt for a tiny model.")
    assert "You answer a query about a context that you cannot see directly" not in system


def test_profile_gets_the_tools_section(pm: PluginManager) -> None:
    system = run(pm, custom_tools={"greet": tool})
    assert "`greet`: Says hi." in system
    assert "{custom_tools_section}" not in system


def test_custom_system_prompt_wins_over_the_profile(pm: PluginManager) -> None:
    system = run(pm, custom_system_prompt="Mine {literal braces} stay.")
    assert system.startswith("Mine {literal braces} stay.")
    assert "Tiny prompt" not in system


def test_no_profile_keeps_the_default_prompt(pm: PluginManager) -> None:
    system = run(pm, backend_kwargs={"system_prompt": None})
    assert system.startswith(SYSTEM_PROMPT.split("\n", 1)[0])
