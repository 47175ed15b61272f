"""Tools: custom_tools / custom_sub_tools, tool-provider plugins (default ones apply to every run,
children included; others only when named), and the first-party ``context`` provider."""

from __future__ import annotations

import itertools
import types

import pytest

import rlm
import rlm_plugins.local.plugin as local_plugin
import rlm_plugins.scripted.plugin as scripted_plugin
from rlm import RLM, PluginManager
from rlm.plugin import hookimpl
from rlm.types import Tool
from rlm_plugins.context_tools.provider import chunk_text, grep_text


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


class Everywhere:
    """A default provider: its tool says at which depth it was handed out."""

    def tools(self, run):
        depth = run["depth"]
        return {"whereami": Tool("whereami", lambda: f"depth {depth}",
                                 "whereami() -> str: the depth of this REPL")}


class OnRequest:
    def tools(self, run):
        return {"secret_tool": {"tool": lambda: "on request", "description": "only when asked"}}


def manager():
    pm = PluginManager(load_entrypoints=False, strict=True)
    pm.register(local_plugin, name="local")
    pm.register(scripted_plugin, name="scripted")

    def register(registrar):
        registrar.add("everywhere", Everywhere, default=True)
        registrar.add("on-request", OnRequest)

    pm.register(types.SimpleNamespace(rlm_register_tool_providers=hookimpl(register)),
                name="test-tools")
    return pm


def responder(seen_systems):
    def respond(messages):
        if messages[0]["role"] != "system":
            return "plain"
        seen_systems.append(messages[0]["content"])
        if "10 total characters" in messages[1]["content"]:  # the child
            return repl("answer.update(content=whereami() + ' ' + str('secret_tool' in globals()), "
                        "ready=True)")
        return repl("r = rlm_query('child-task')\n"
                    "answer.update(content=whereami() + ' ' + str('secret_tool' in globals()) + "
                    "' / ' + r, ready=True)")
    return respond


def test_default_providers_apply_to_every_run_and_named_ones_on_request():
    systems: list[str] = []
    r = RLM(backend="scripted", backend_kwargs={"responder": responder(systems)},
            plugin_manager=manager(), max_depth=2)
    assert r.completion("root").response == "depth 0 False / depth 1 False"
    assert all("- `whereami`: whereami() -> str: the depth of this REPL" in s for s in systems)
    assert len(systems) == 2

    systems.clear()
    r = RLM(backend="scripted", backend_kwargs={"responder": responder(systems)},
            plugin_manager=manager(), max_depth=2, tool_providers=["on-request"])
    assert r.completion("root").response == "depth 0 True / depth 1 True"
    assert all("- `secret_tool`: only when asked" in s for s in systems)


def test_custom_sub_tools_reach_children_only():
    def respond(messages):
        if messages[0]["role"] != "system":
            return "plain"
        if "10 total characters" in messages[1]["content"]:
            return repl("answer.update(content=str(sorted(k for k in ('top', 'sub') if k in globals())),"
                        " ready=True)")
        return repl("r = rlm_query('child-task')\n"
                    "answer.update(content=str(sorted(k for k in ('top', 'sub') if k in globals()))"
                    " + r, ready=True)")

    r = RLM(backend="scripted", backend_kwargs={"responder": respond}, max_depth=2,
            custom_tools={"top": 1}, custom_sub_tools={"sub": {"tool": 2, "description": "for kids"}})
    assert r.completion("root").response == "['top']['sub']"


def test_a_provider_using_a_reserved_name_is_refused():
    class Bad:
        def tools(self, run):
            return {"llm_query": lambda p: "hijacked"}

    pm = manager()
    pm.register(types.SimpleNamespace(rlm_register_tool_providers=hookimpl(
        lambda registrar: registrar.add("bad", Bad))), name="bad-tools")
    r = RLM(backend="scripted", backend_kwargs={"replies": ["FINAL(x)"]}, plugin_manager=pm,
            tool_providers=["bad"])
    with pytest.raises(rlm.ConfigurationError, match="provider 'bad'.*reserved"):
        r.completion("q")


def test_context_provider_is_documented_and_works_on_long_contexts():
    entry = rlm.get_plugin_manager().entry("tool_provider", "context")
    assert entry.distribution == "rlm-plugins" and not entry.options.get("default")
    lines = [f"line {i}: " + ("ERROR disk full" if i % 250 == 7 else "ok") for i in range(2000)]
    context = "\n".join(lines)
    code = ("chunks = chunk_text(context, size=4000)\n"
            "hits = grep_text(context, r'ERROR \\w+', window=10)\n"
            "answer.update(content=f'{len(chunks)} {len(hits)} {hits[0][\"match\"]}', ready=True)")
    systems = []

    def respond(messages):
        systems.append(messages[0]["content"])
        return repl(code)

    r = RLM(backend="scripted", backend_kwargs={"responder": respond}, tool_providers=["context"])
    n_chunks, n_hits, *match = r.completion(context).response.split(" ")
    assert int(n_chunks) == len(chunk_text(context, size=4000)) and int(n_hits) == 8
    assert " ".join(match) == "ERROR disk"
    assert "- `chunk_text`:" in systems[0] and "- `grep_text`:" in systems[0]


def test_chunk_text_covers_the_text_and_prefers_line_breaks():
    text = "\n".join("x" * (i % 37) for i in range(500))
    chunks = chunk_text(text, size=300)
    assert "".join(chunks) == text
    assert all(len(c) <= 300 for c in chunks)
    assert sum(c.endswith("\n") for c in chunks) >= len(chunks) - 1
    overlapping = chunk_text(text, size=300, overlap=50)
    assert all(a[-50:] == b[:50] for a, b in itertools.pairwise(overlapping))
    with pytest.raises(ValueError):
        chunk_text(text, size=0)
    assert grep_text("abc", "z") == []
