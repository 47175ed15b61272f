"""How an OpenAI chat-completions request becomes an RLM run: context and question.

* The **question** is the text of the last message, which must have the role ``user``.
* The **context** is everything else, as named pieces: the files passed by reference
  (``"rlm": {"files": [...]}`` in the body, paths or globs under the server's ``--files-root``),
  then every earlier message (``message 1 (system)``, ``message 2 (user)``, ...), then the
  attachments (``file`` content parts with inline ``file_data``) of any message, named
  ``attachment: FILENAME``.
* :func:`rlm_cli.surface.assemble_context` turns the pieces into ``completion()``'s arguments: no
  piece, the question is the context (as ``rlm run PROMPT``); one piece, its text; several, a dict
  ``{name: text}``. The question is always the ``root_prompt`` when there is context.

Pure functions of the body: no I/O except reading the referenced files.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlm_cli.surface import InputError, Profile, assemble_context, read_files

#: Request fields that change nothing here; sampling belongs to each profile's backend.
IGNORED_FIELDS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "user", "seed", "stop", "logit_bias", "metadata", "store",
    "parallel_tool_calls", "reasoning_effort", "service_tier", "prediction", "modalities",
    "tool_choice", "logprobs", "top_logprobs", "verbosity", "prompt_cache_key",
    "safety_identifier", "response_format"})
KNOWN_FIELDS = IGNORED_FIELDS | {"model", "messages", "stream", "stream_options", "n", "tools",
                                 "functions", "rlm"}


@dataclass(frozen=True)
class RunRequest:
    """A validated request: the profile to run and ``completion()``'s arguments."""

    profile: Profile
    prompt: Any
    root_prompt: str | None
    stream: bool
    include_usage: bool
    pieces: tuple[str, ...]  # the context pieces' names, in order (for docs and tests)


def _text_and_files(content: Any, where: str) -> tuple[str, list[tuple[str, str]]]:
    """The text of a message's content (a string or a list of parts) and its attachments."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InputError(f"{where}.content must be a string or a list of content parts.")
    texts: list[str] = []
    files: list[tuple[str, str]] = []
    for i, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise InputError(f"{where}.content[{i}] must be an object with a 'type'.")
        kind = part.get("type")
        if kind in ("text", "input_text"):
            texts.append(str(part.get("text", "")))
        elif kind == "file":
            files.append(_attachment(part.get("file"), f"{where}.content[{i}]"))
        else:
            raise InputError(
                f"{where}.content[{i}] has type {kind!r}; the RLM reads text: send 'text' parts, "
                "'file' parts with inline text (file_data), or files by reference "
                "(\"rlm\": {\"files\": [...]}).")
    return "\n".join(texts), files


def _attachment(spec: Any, where: str) -> tuple[str, str]:
    if not isinstance(spec, Mapping):
        raise InputError(f"{where}.file must be an object with file_data and filename.")
    if spec.get("file_id") and not spec.get("file_data"):
        raise InputError(f"{where}: file_id needs a Files API this server does not have; send "
                         "file_data inline or pass the file by reference (\"rlm\": {\"files\": "
                         "[...]}).")
    data = spec.get("file_data")
    if not isinstance(data, str) or not data:
        raise InputError(f"{where}.file.file_data must be the file's content, base64-encoded.")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}.file.file_data is not valid base64.") from None
    name = str(spec.get("filename") or "file")
    try:
        if b"\x00" in raw[:8192]:
            raise UnicodeDecodeError("utf-8", raw[:1], 0, 1, "NUL byte")
        return f"attachment: {name}", raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where}: attachment {name!r} is not UTF-8 text; the RLM reads its "
                         "context as text.") from None


def parse_request(body: Any, profiles: Mapping[str, Profile], *, files_root: str | None,
                  max_file_bytes: int) -> RunRequest:
    """Validate a chat-completions body and map it to a run (see the module docstring).

    Raises :class:`InputError` for a malformed body (400) and :class:`LookupError` for an unknown
    model (404)."""
    if not isinstance(body, Mapping):
        raise InputError("the body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InputError("'model' is required: one of the profiles listed by GET /v1/models.")
    if model not in profiles:
        raise LookupError(f"The model {model!r} does not exist on this server; its models are "
                          f"the RLM profiles {sorted(profiles)} (GET /v1/models).")
    if body.get("n") not in (None, 1):
        raise InputError("'n' must be 1: an RLM run gives one answer.")
    if body.get("tools") or body.get("functions"):
        raise InputError("this server does not run client tools (the RLM's tools are its REPL "
                         "and sub-calls); send the request without 'tools'.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError("'messages' must be a non-empty list; its last message (role 'user') "
                         "is the question.")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise InputError(f"messages[{i}] must be an object with a 'role'.")
    last = messages[-1]
    if last["role"] != "user":
        raise InputError(f"the last message must have the role 'user' (it is the question), not "
                         f"{last['role']!r}.")
    question, last_files = _text_and_files(last.get("content"), f"messages[{len(messages) - 1}]")
    if not question.strip():
        raise InputError("the last user message has no text: it is the question the RLM answers.")
    extra = body.get("rlm") or {}
    if not isinstance(extra, Mapping):
        raise InputError("'rlm' must be an object such as {\"files\": [\"logs/*.log\"]}.")
    unknown = sorted(set(extra) - {"files"})
    if unknown:
        raise InputError(f"unknown 'rlm' fields {unknown}; the only one is 'files' (paths or "
                         "globs under the server's --files-root).")
    refs = extra.get("files") or []
    if isinstance(refs, str) or not isinstance(refs, list):
        raise InputError("'rlm.files' must be a list of paths or globs.")
    pieces: list[tuple[str, str]] = [
        (f"file: {name}", text)
        for name, text in read_files(refs, files_root, max_bytes=max_file_bytes).items()]
    for i, m in enumerate(messages[:-1]):
        text, files = _text_and_files(m.get("content"), f"messages[{i}]")
        if text:
            pieces.append((f"message {i + 1} ({m['role']})", text))
        pieces.extend(files)
    pieces.extend(last_files)
    prompt, root_prompt = assemble_context(pieces, question)
    options = body.get("stream_options") or {}
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InputError("'stream' must be true or false.")
    return RunRequest(profile=profiles[model], prompt=prompt, root_prompt=root_prompt,
                      stream=stream,
                      include_usage=bool(isinstance(options, Mapping)
                                         and options.get("include_usage")),
                      pieces=tuple(name for name, _ in pieces))
