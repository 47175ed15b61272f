"""rlm mcp end to end with the MCP SDK's own client, over stdio and streamable HTTP: the real
`rlm mcp` command in a subprocess, the RLM's model the repo's OpenAI-compatible test server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import httpx2
import pytest

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from rlm_testkit.servers import OpenAICompatibleServer

# Root turns: a sub-call, then an answer describing the context; a question containing
# "TWO TURNS" answers on the second turn, "NEVER" never answers.
CODE = """```repl
pong = llm_query("PING")
shape = ("str:" + str(len(context))) if isinstance(context, str) else ("dict:" + "|".join(context))
answer["content"] = shape + " sub=" + pong
answer["ready"] = READY
```"""


def responder(messages, body):
    if messages[-1].get("content") == "PING":
        return "pong"
    text = json.dumps(messages)
    turns = sum(1 for m in messages if m["role"] == "assistant")
    ready = "NEVER" not in text and ("TWO TURNS" not in text or turns >= 1)
    return CODE.replace("READY", str(ready))


@pytest.fixture(scope="module")
def model_server():
    with OpenAICompatibleServer(responder=responder) as srv:
        yield srv


def command(srv, *extra: str) -> list[str]:
    return ["-m", "rlm", "mcp", "--no-log", "--backend", "openai", "--model", "test-model",
            "--base-url", srv.base_url, "--max-iterations", "4", *extra]


def env(tmp_path) -> dict[str, str]:
    return {"OPENAI_API_KEY": "test", "RLM_USER_DIR": str(tmp_path / "user"),
            "PATH": os.environ["PATH"]}


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "project"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "a.log").write_text("svc-a ERROR\n")
    (root / "logs" / "b.log").write_text("svc-b ok\n")
    (root / "notes.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("nope")
    return root


async def call(client, arguments):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    result = await client.call_tool("rlm_answer", arguments, progress_callback=on_progress)
    return result, progress


def check_answer(result, expected: str, status: str = "completed"):
    assert not result.is_error, result.content
    assert result.content[0].text == expected
    data = result.structured_content
    assert data["answer"] == expected and data["status"] == status
    assert re.fullmatch(r"[0-9a-f]{12}", data["run_id"])
    calls = sum(m["total_calls"] for m in data["usage"]["model_usage_summaries"].values())
    assert calls >= 2 and data["usage"]["total_input_tokens"] > 0  # root turns + the sub-calls


async def exercise(client, tmp_path):
    tools = await client.list_tools()
    assert [t.name for t in tools.tools] == ["rlm_answer"]
    assert set(tools.tools[0].input_schema["properties"]) == {
        "question", "context", "paths", "glob", "profile"}
    # context as text; two turns, so two progress notifications, one per turn
    result, progress = await call(client, {"question": "TWO TURNS: what is it?",
                                           "context": "abcdef"})
    check_answer(result, "str:6 sub=pong")
    assert [(p[0], p[1]) for p in progress] == [(1, 4), (2, 4)]
    assert progress[1][2].startswith("turn 2/4 · sub-calls 1 done")
    # paths and a glob under the files root (the server's working directory)
    result, _ = await call(client, {"question": "q", "paths": ["notes.txt"], "glob": "logs/*.log"})
    check_answer(result, "dict:file: notes.txt|file: logs/a.log|file: logs/b.log sub=pong")
    result, _ = await call(client, {"question": "q", "context": "x", "glob": "logs/a.log"})
    check_answer(result, "dict:context|file: logs/a.log sub=pong")
    # a limit: the partial answer with its status
    result, _ = await call(client, {"question": "NEVER", "context": "abc"})
    assert result.structured_content["status"] == "max_iterations"
    # refusals are tool errors that say what to do
    for args, fragment in (({"question": "q", "paths": ["../secret.txt"]}, "outside the allowed root"),
                           ({"question": "q", "glob": "nothing/*.x"}, "matches no file"),
                           ({"question": "q", "context": "x", "profile": "nope"}, "no profile"),
                           ({"question": " ", "context": "x"}, "question is empty")):
        result, _ = await call(client, args)
        assert result.is_error and fragment in result.content[0].text, result.content


def test_stdio_transport(model_server, files, tmp_path):
    params = StdioServerParameters(command=sys.executable, args=command(model_server),
                                   env=env(tmp_path), cwd=str(files))

    async def main():
        async with Client(params) as client:
            await exercise(client, tmp_path)

    asyncio.run(main())


@pytest.fixture
def http_server(model_server, files, tmp_path):
    proc = subprocess.Popen([sys.executable, *command(model_server, "--transport", "http",
                                                      "--port", "0", "--api-key", "k3y")],
                            stderr=subprocess.PIPE, text=True, cwd=str(files),
                            env={**os.environ, **env(tmp_path)})
    try:
        line = proc.stderr.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/mcp)", line)
        assert match, line + proc.stderr.read()
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


def test_streamable_http_transport(http_server, tmp_path):
    async def main():
        http = create_mcp_http_client(headers={"Authorization": "Bearer k3y"})
        async with http, Client(streamable_http_client(http_server, http_client=http)) as client:
            await exercise(client, tmp_path)

    asyncio.run(main())
    assert httpx2.post(http_server, json={}).status_code == 401  # no token, no access


def test_http_off_loopback_needs_a_token(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rlm", "mcp", "--transport", "http", "--host",
                          "0.0.0.0", "--backend", "scripted"], capture_output=True, text=True,
                         timeout=60, env={**env(tmp_path), "RLM_MCP_API_KEY": ""})
    assert out.returncode == 2 and "--api-key" in out.stderr
