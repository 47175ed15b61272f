"""llm-rlm: RLM profiles as models of simonw/llm.

    llm -m rlm-default "Which services logged errors?" < big.log
    llm -m rlm-fast -f big.log "Which services logged errors?"

Each ``[profiles.NAME]`` table of the rlm config file becomes the model ``rlm-NAME``, and
``rlm-default`` always exists (backend chosen as ``rlm run`` chooses it). The run is logged in
llm's own database (``llm logs``) with its token usage; its rlm run id, status and per-model usage
are the logged ``response_json``, and the run is in rlm's store too (``rlm view RUN_ID``) unless
``-o rlm_log false``.

How the prompt becomes context and question:

* the question is the prompt argument; what ``llm`` read from stdin (which it joins in front of the
  argument with a space) is split back off and becomes context;
* fragments (``-f``), text attachments (``-a``), the system prompt (``-s``) and the earlier
  exchanges of a conversation (``-c``) are context too, as named pieces
  (:func:`rlm_cli.surface.assemble_context`);
* with no context at all the prompt is both (as ``rlm run PROMPT``).

Progress (each turn, each sub-call) streams as reasoning, which ``llm`` shows dimmed on stderr.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

import llm
from llm.parts import StreamEvent
from pydantic import Field

from rlm.exceptions import RLMError
from rlm_cli.surface import DEFAULT_PROFILE, Profile, ProfileRun, assemble_context, load_profiles

PREFIX = "rlm-"
TEXT_TYPES = frozenset({
    "text/plain", "text/markdown", "text/csv", "text/html", "text/xml", "text/x-python",
    "text/x-log", "application/json", "application/xml", "application/x-ndjson"})


@llm.hookimpl
def register_models(register: Any) -> None:
    try:
        profiles = load_profiles()
    except Exception as exc:  # noqa: BLE001 - a bad config file must not break every llm command
        print(f"llm-rlm: rlm profiles unavailable ({exc}); only {PREFIX}{DEFAULT_PROFILE} is "
              "registered.", file=sys.stderr)
        profiles = {}
    if DEFAULT_PROFILE not in profiles:
        profiles = {DEFAULT_PROFILE: Profile(), **profiles}
    for profile in profiles.values():
        register(RLMModel(profile))


class RLMModel(llm.Model):
    """One rlm profile as an llm model; ``execute`` runs the RLM on a worker thread and streams
    its progress as reasoning and its answer as text."""

    can_stream = True
    needs_key = None
    attachment_types = TEXT_TYPES

    class Options(llm.Options):
        max_iterations: int | None = Field(None, description="root turns at most (profile default)")
        max_depth: int | None = Field(None, description="recursion depth of rlm_query")
        timeout: float | None = Field(None, description="max_timeout of the run, seconds")
        max_budget: float | None = Field(None, description="max_budget of the run, USD")
        rlm_log: bool = Field(True, description="also record the run in rlm's store (rlm view)")

    def __init__(self, profile: Profile):
        self.profile = profile
        self.model_id = PREFIX + profile.name

    def __str__(self) -> str:
        return f"RLM: {self.model_id} ({self.profile.summary()})"

    def _profile(self, options: Any) -> Profile:
        import dataclasses

        changes = {k: v for k, v in (("max_iterations", options.max_iterations),
                                     ("max_depth", options.max_depth),
                                     ("max_timeout", options.timeout),
                                     ("max_budget", options.max_budget)) if v is not None}
        return dataclasses.replace(self.profile, **changes)

    def execute(self, prompt: Any, stream: bool, response: Any,
                conversation: Any = None) -> Iterator[Any]:
        pieces, question = context_pieces(prompt, conversation)
        if not question.strip():
            raise llm.ModelError("the prompt is empty: ask a question (context may come on stdin "
                                 "or with -f FILE).")
        context, root_prompt = assemble_context(pieces, question)
        updates: queue.Queue[Any] = queue.Queue()
        run = ProfileRun(self._profile(prompt.options), context, root_prompt,
                         log=prompt.options.rlm_log, on_progress=updates.put)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["outcome"] = run.execute()
            except BaseException as exc:  # noqa: BLE001 - re-raised on the llm thread
                box["error"] = exc
            finally:
                updates.put(None)

        worker = threading.Thread(target=work, name="llm-rlm", daemon=True)
        worker.start()
        try:
            while (update := updates.get()) is not None:
                if stream:
                    yield StreamEvent(type="reasoning", chunk=update.message + "\n")
        except BaseException:  # Ctrl+C or the consumer went away: stop the run
            run.cancel()
            worker.join(10)
            raise
        worker.join()
        if "error" in box:
            exc = box["error"]
            if isinstance(exc, RLMError):
                raise llm.ModelError(f"{type(exc).__name__}: {exc}") from exc
            raise exc
        outcome = box["outcome"]
        u = outcome.usage
        response.set_usage(input=u.total_input_tokens, output=u.total_output_tokens,
                           details={"model_calls": u.total_calls, "cost_usd": u.total_cost})
        if outcome.root_model:
            response.set_resolved_model(outcome.root_model)
        response.response_json = outcome.to_dict()
        if not outcome.ok:
            print(f"llm-rlm: run {outcome.run_id} ended with status {outcome.status.value} "
                  f"({outcome.error or 'limit'}); the answer may be incomplete.", file=sys.stderr)
        yield StreamEvent(type="text", chunk=outcome.answer) if stream else outcome.answer


def _cli_argument() -> str | None:
    """The prompt argument as typed, when running under the ``llm`` command (click's context)."""
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except Exception:  # noqa: BLE001
        return None
    while ctx is not None:
        value = ctx.params.get("prompt") if isinstance(ctx.params, dict) else None
        if isinstance(value, str):
            return value
        ctx = ctx.parent
    return None


def context_pieces(prompt: Any, conversation: Any = None) -> tuple[list[tuple[str, str]], str]:
    """The named context pieces and the question of an llm prompt (see the module docstring)."""
    pieces: list[tuple[str, str]] = []
    if prompt.system:
        pieces.append(("system", prompt.system))
    for i, prev in enumerate(getattr(conversation, "responses", None) or []):
        pieces.append((f"message {2 * i + 1} (user)", prev.prompt.prompt))
        pieces.append((f"message {2 * i + 2} (assistant)", prev.text_or_raise()))
    for fragment in prompt.fragments or []:
        source = getattr(fragment, "source", "") or "fragment"
        pieces.append((f"fragment: {source}", str(fragment)))
    for attachment in prompt.attachments or []:
        name = attachment.path or attachment.url or "attachment"
        try:
            text = attachment.content_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise llm.ModelError(f"attachment {name} is not UTF-8 text; the RLM reads its "
                                 "context as text.") from None
        pieces.append((f"attachment: {name}", text))
    raw = getattr(prompt, "_prompt", None)
    raw = prompt.prompt if raw is None else raw
    argument = _cli_argument()
    if argument and raw != argument and raw.endswith(" " + argument):
        pieces.insert(0, ("stdin", raw[: -len(argument) - 1]))
        return pieces, argument
    return pieces, raw
