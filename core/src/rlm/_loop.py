"""The loop of one run: turns, cells, the final answer and compaction (:class:`TurnLoop`).

Lifecycle: made by :meth:`rlm._run._Run._execute` for a run below ``max_depth`` and used once
(:meth:`TurnLoop.execute`); the environment it acquires is shut down at the end unless the RLM is
persistent. Threading: runs on the thread that called ``completion()``; what it asks of the run
(limit checks, events, model calls) is thread-safe there.

How a run ends is decided in one place, :meth:`TurnLoop.final_answer`: ``FINAL(text)`` in the
reply, or ``FINAL_VAR(name)`` run in the REPL, or a cell that set ``answer["ready"]``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import prompts as P
from .contract import RESET_ANSWER
from .events import CellExecuted, Compacted, IterationCompleted, IterationStarted
from .exceptions import ContextWindowExceededError, ErrorThresholdExceededError, RLMError
from .parsing import CODE_TAGS, find_code_blocks, find_final_answer, iter_fences
from .protocols import Backend, Environment
from .types import (AnswerSource, CellResult, CodeBlock, Message, RLMChatCompletion, RLMIteration,
                    RunStatus)

if TYPE_CHECKING:
    from ._host import RunHost
    from ._run import _Run

#: The context window compaction assumes when the backend cannot tell.
DEFAULT_CONTEXT_WINDOW = 128_000


class TurnLoop:
    """The turns of one run: ask the model, run its code, stop at the answer or the last turn."""

    def __init__(self, run: _Run, backend: Backend, label: str):
        self.run = run
        self.rlm = run.rlm
        self.settings = run.rlm.settings
        self.backend = backend
        self.label = label
        self._strategy: Any = None

    # -- one cell, one answer ------------------------------------------------------------
    def execute_cell(self, env: Environment, host: RunHost, code: str) -> CellResult:
        run = self.run
        res = env.execute(code, timeout=self.cell_timeout())
        res.rlm_calls = host.drain_calls()
        if res.timed_out:
            # The cell was stopped: the sub-calls and children it was waiting for go with it.
            run.cancel_pending()
        return res

    def final_answer(self, env: Environment, host: RunHost, text: str) -> tuple[str | None, str | None]:
        """The answer a reply gives with ``FINAL(...)`` or ``FINAL_VAR(name)`` (run in the REPL),
        and a note for the model when ``FINAL_VAR`` names no variable."""
        fa = find_final_answer(text)
        if fa is None:
            return None, None
        if fa.kind == "text":
            return fa.value, None
        res = self.execute_cell(env, host, f"FINAL_VAR({fa.value!r})")
        if res.final_answer is not None:
            return res.final_answer, None
        return None, (f"FINAL_VAR({fa.value}) found no variable named {fa.value!r}. "
                      "Create it in a ```repl``` block first, then call FINAL_VAR.")

    def answer_after_limit(self, env: Environment, host: RunHost, text: str) -> tuple[str, AnswerSource]:
        """The answer to the request made after the last turn, and how it was obtained.

        FINAL/FINAL_VAR or code that sets ``answer`` count as an answer (models often answer in
        code: it is run, never returned). A reply that is still code is not an answer: the best
        partial ``answer["content"]`` is returned if a cell set one, else an empty answer with
        ``AnswerSource.NONE``.
        """
        run = self.run
        final, _ = self.final_answer(env, host, text)
        if final is not None:
            return final, AnswerSource.AFTER_LIMIT
        fences = iter_fences(text)
        for code in (f.code for f in fences if f.tag in CODE_TAGS):
            res = self.execute_cell(env, host, code)
            if res.answer_content:
                run.best_partial = res.answer_content
            if res.final_answer is not None:
                return res.final_answer, AnswerSource.AFTER_LIMIT
        if run.best_partial:  # what a cell set as answer["content"] beats prose said afterwards
            return run.best_partial, AnswerSource.PARTIAL
        if not fences and text.strip():
            return text.strip(), AnswerSource.AFTER_LIMIT
        return "", AnswerSource.NONE

    def cell_timeout(self) -> float | None:
        limits = [t for t in (self.settings.cell_timeout, self.run.limits.remaining_time())
                  if t is not None]
        return min(limits) if limits else None

    def save_history(self, env: Environment, messages: list[Message]) -> None:
        env.add_history(messages, self.rlm._history_count)
        self.rlm._history_count += 1

    # -- the loop ------------------------------------------------------------------------
    def execute(self) -> RLMChatCompletion:
        run, rlm, s, backend, label = self.run, self.rlm, self.settings, self.backend, self.label
        env, host, tools, _ = rlm._acquire_env(run)
        run.env = env
        try:
            context_index = rlm._context_count if s.persistent else 0
            env.add_context(run.prompt, context_index)
            if context_index > 0:  # persistent: a new completion starts with no answer (rlm.contract)
                env.execute(RESET_ANSWER, timeout=self.cell_timeout())
            question = P.question_of(run.prompt, run.root_prompt)
            if s.persistent:
                rlm._context_count += 1
            # A backend's prompt profile (``backend.system_prompt``, e.g. a short few-shot prompt
            # for a small local model) replaces the default prompt; custom_system_prompt wins.
            profile = getattr(backend, "system_prompt", None)
            system = P.build_system_prompt(
                custom_system_prompt=(s.custom_system_prompt if s.custom_system_prompt is not None
                                      else profile if isinstance(profile, str) else None),
                tools=tools,
                environment_instructions=env.usage_instructions(),
                extra_sections=[*s.tool_prompts, getattr(backend, "system_prompt_addendum", "") or ""],
                compaction=s.compaction)
            messages: list[Message] = [{"role": "system", "content": system},
                                       P.context_message(run.prompt, index=context_index,
                                                         preview_chars=_preview_chars(backend))]
            full_history: list[Message] = list(messages)
            consecutive_errors = 0
            last_error: str | None = None
            for i in range(s.max_iterations):
                run.check_limits()
                it_no = i + 1
                run._fire("on_iteration_start", run.depth, it_no)
                run.emit(IterationStarted(run_id=run.run_id, depth=run.depth,
                                          parent_run_id=run.parent_run_id, iteration=it_no))
                it_t0 = time.perf_counter()
                turn = P.turn_message(i, s.max_iterations, root_prompt=run.root_prompt,
                                      context_count=max(1, rlm._context_count),
                                      history_count=rlm._history_count, question=question)
                response = run._call_model(backend, label, messages + [turn])
                text = response.text
                run.last_response = text
                blocks: list[tuple[str, CellResult]] = []
                final: str | None = None
                note: str | None = None
                for code in find_code_blocks(text):
                    res = self.execute_cell(env, host, code)
                    blocks.append((code, res))
                    run.emit(CellExecuted(run_id=run.run_id, depth=run.depth,
                                          parent_run_id=run.parent_run_id, iteration=it_no,
                                          code=code, result=res.to_dict()))
                    if res.answer_content:
                        run.best_partial = res.answer_content
                    if res.final_answer is not None:
                        final = res.final_answer
                        break
                    if run.limit_state() is not None:
                        break  # out of time, budget or cancelled: later blocks do not run
                if final is None:
                    final, note = self.final_answer(env, host, text)
                iteration = RLMIteration(it_no, text, [CodeBlock(c, r) for c, r in blocks], final,
                                         time.perf_counter() - it_t0, response.usage)
                run.emit(IterationCompleted(
                    run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id,
                    iteration=it_no, response=text,
                    code_blocks=[b.to_dict() for b in iteration.code_blocks], final_answer=final,
                    iteration_time=iteration.iteration_time,
                    usage={"input_tokens": response.usage.input_tokens,
                           "output_tokens": response.usage.output_tokens,
                           "cost": response.usage.cost}))
                run._fire("on_iteration_complete", run.depth, it_no, iteration.iteration_time)
                if final is not None:  # a finished run returns, whatever the limits say
                    if s.persistent:
                        self.save_history(env, full_history + [{"role": "assistant", "content": text}])
                    return run._result(final, backend)
                errors = [r.error for _, r in blocks if r.error]
                if errors:
                    consecutive_errors += 1
                    last_error = errors[-1]
                else:
                    consecutive_errors = 0
                run.check_limits()
                if s.max_errors is not None and consecutive_errors >= s.max_errors:
                    raise ErrorThresholdExceededError(consecutive_errors, s.max_errors,
                                                      last_error, run.partial())
                new: list[Message] = [{"role": "assistant", "content": text}]
                if blocks:
                    out = P.repl_output_message(blocks)
                    if note:
                        out["content"] += "\n\n" + note
                    new.append(out)
                elif note:
                    new.append({"role": "user", "content": note})
                else:
                    new.append(P.NO_CODE_MESSAGE)
                messages += new
                full_history += new
                if s.compaction:
                    messages = self.maybe_compact(env, messages, full_history)
            # Out of turns: one more call asks for the answer.
            run.check_limits()
            response = run._call_model(backend, label, messages + [P.final_request_message(question)])
            run.last_response = response.text
            answer, source = self.answer_after_limit(env, host, response.text)
            if s.persistent:
                self.save_history(env, full_history + [{"role": "assistant", "content": response.text}])
            return run._result(answer, backend, RunStatus.MAX_ITERATIONS, source)
        finally:
            if not s.persistent:
                try:
                    env.shutdown()
                except Exception:  # noqa: BLE001
                    pass

    # -- compaction ------------------------------------------------------------------------
    def maybe_compact(self, env: Environment, messages: list[Message],
                      full_history: list[Message]) -> list[Message]:
        run, rlm, s, backend, label = self.run, self.rlm, self.settings, self.backend, self.label
        if self._strategy is None:
            self._strategy = rlm._resources.pm.create(
                "compaction", s.compaction_strategy,
                **{"threshold_pct": s.compaction_threshold_pct, **s.compaction_kwargs})
        strategy = self._strategy
        tokens = count_tokens(backend, messages)
        window = context_window(backend, s.sampling_args.get("model"))
        if not strategy.should_compact(messages, tokens=tokens, context_window=window):
            return messages

        def summarize(msgs: Sequence[Message]) -> str:
            msgs = list(msgs)
            need = count_tokens(backend, msgs)
            if need > window:
                # Known to overflow: fail fast, without paying for the call. The strategy
                # degrades (a shorter request, or no summary).
                raise ContextWindowExceededError(
                    f"the summary request has about {need:,} tokens; the context window is "
                    f"{window:,}", backend=label, model=backend.model_name)
            return run._call_model(backend, label, msgs).text

        # The whole trajectory so far stays readable in the REPL, whatever the strategy keeps.
        env.add_history(list(full_history), rlm._history_count if s.persistent else 0)
        try:
            compacted = list(strategy.compact(messages, summarize=summarize))
        except RLMError:
            run.check_limits()  # a limit hit during the summary call is the run's limit
            compacted = _fallback_compaction(messages)
            rlm._warn_once(f"compaction strategy {s.compaction_strategy!r} failed; the oldest "
                           "turns were dropped instead")
        except Exception as exc:  # noqa: BLE001 - a broken strategy must not end the run
            compacted = _fallback_compaction(messages)
            rlm._warn_once(f"compaction strategy {s.compaction_strategy!r} raised {exc!r}; the "
                           "oldest turns were dropped instead")
        run.check_limits()
        if not compacted or compacted[0].get("role") != "system":
            compacted = _fallback_compaction(messages)
        run.emit(Compacted(run_id=run.run_id, depth=run.depth, parent_run_id=run.parent_run_id,
                           messages_before=len(messages), messages_after=len(compacted),
                           tokens_before=tokens, tokens_after=count_tokens(backend, compacted),
                           strategy=s.compaction_strategy))
        return compacted


def count_tokens(backend: Any, messages: Sequence[Message]) -> int:
    """Tokens of ``messages`` by the backend's own counter (``count_tokens``, e.g. tiktoken for
    OpenAI models), else about four characters per token."""
    from ._base import estimate_tokens

    counter = getattr(backend, "count_tokens", None)
    if callable(counter):
        try:
            n = counter(list(messages))
            if isinstance(n, int) and n >= 0:
                return n
        except Exception:  # noqa: BLE001 - a failing counter falls back to the estimate
            pass
    return estimate_tokens(list(messages))


def context_window(backend: Any, model: str | None = None,
                   default: int = DEFAULT_CONTEXT_WINDOW) -> int:
    """The model's context window as the backend reports it, else ``default``."""
    fn = getattr(backend, "context_window", None)
    if callable(fn):
        try:
            value = fn(model) if model else fn()
            if isinstance(value, int) and value > 0:
                return value
        except Exception:  # noqa: BLE001
            pass
    return default


def _preview_chars(backend: Any) -> int:
    """How much of the context a backend's prompt profile wants shown (0: none, the default)."""
    n = getattr(backend, "context_preview_chars", 0)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def _fallback_compaction(messages: list[Message]) -> list[Message]:
    """What the kernel keeps when a strategy fails: the opening messages and the last turn."""
    head = messages[:2]
    tail = messages[-2:] if len(messages) > 4 else messages[2:]
    note: Message = {"role": "user", "content": "Earlier turns were dropped to fit the context "
                                                "window; the full record is in the REPL variable "
                                                "`history`."}
    return head + [note] + tail
