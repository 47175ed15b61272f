"""Property tests: whatever order the backend finishes in and whichever items fail,
``llm_query_batched`` answers in input order, never exceeds ``max_concurrent_subcalls``, and the
usage totals equal the sum of the per-call usage."""

from __future__ import annotations

import asyncio
import threading
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlm_plugins.local.plugin as local_plugin
from rlm import RLM, PluginManager
from rlm._host import RunHost
from rlm.exceptions import ServerError
from rlm.plugin import hookimpl
from rlm.types import ModelResponse, Usage


class PlannedBackend:
    """Each prompt is ``"<i>"``; ``plan[i] = (finish_rank, fails, usage)`` decides when item i
    finishes relative to the others, whether it fails, and what it bills."""

    instances: list[PlannedBackend] = []

    def __init__(self, model_name: str = "planned"):
        self.model_name = model_name
        self.plan: dict[int, tuple[int, bool, Usage]] = {}
        self.finished: list[int] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()
        PlannedBackend.instances.append(self)

    def completion(self, messages, **sampling):
        raise AssertionError("sub-calls must use the async path")

    async def acompletion(self, messages, **sampling):
        i = int(messages[-1]["content"])
        rank, fails, usage = self.plan[i]
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            # finish in the planned order: item with rank r waits r ticks
            for _ in range(rank):
                await asyncio.sleep(0)
            await asyncio.sleep(rank * 0.0005)
        finally:
            with self._lock:
                self.active -= 1
                self.finished.append(i)
        if fails:
            raise ServerError(f"item {i} failed", backend="planned", model=self.model_name)
        return ModelResponse(f"answer-{i}", usage, self.model_name)

    def close(self):
        pass


@pytest.fixture(scope="module")
def pm():
    pm = PluginManager(load_entrypoints=False)
    pm.register(local_plugin, name="local")
    pm.register(types.SimpleNamespace(rlm_register_backends=hookimpl(
        lambda registrar: registrar.add("planned", PlannedBackend))), name="planned-plugin")
    return pm


@pytest.fixture(scope="module")
def host_factory(pm):
    made = []

    def make(limit: int):
        r = RLM(backend="planned", plugin_manager=pm, max_concurrent_subcalls=limit)
        run = r._start_run("ctx", None)
        made.append(r)
        return r, run, RunHost(run), r._default_backend()[0]

    yield make
    for r in made:
        r.close()


usages = st.builds(Usage, st.integers(0, 5000), st.integers(0, 5000),
                   st.one_of(st.none(), st.floats(0, 1, allow_nan=False).map(lambda x: round(x, 6))))


@st.composite
def plans(draw):
    n = draw(st.integers(1, 40))
    ranks = draw(st.permutations(list(range(n))))
    fails = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    bills = draw(st.lists(usages, min_size=n, max_size=n))
    return {i: (ranks[i], fails[i], bills[i]) for i in range(n)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans(), limit=st.integers(1, 16))
def test_batched_keeps_input_order_and_totals_under_any_interleaving(host_factory, plan, limit):
    r, run, host, backend = host_factory(limit)
    backend.plan = plan
    n = len(plan)
    out = host.llm_query_batched([str(i) for i in range(n)])
    assert len(out) == n
    for i, text in enumerate(out):
        if plan[i][1]:
            assert text.startswith("Error: ServerError: item %d failed" % i)
        else:
            assert text == f"answer-{i}"
    assert backend.peak <= limit
    # usage: exactly the successful calls, summed
    ok = [plan[i][2] for i in range(n) if not plan[i][1]]
    s = run.tracker.summary()
    assert s.total_calls == len(ok)
    assert s.total_input_tokens == sum(u.input_tokens for u in ok)
    assert s.total_output_tokens == sum(u.output_tokens for u in ok)
    costs = [u.cost for u in ok if u.cost is not None]
    assert s.total_cost == (pytest.approx(sum(costs)) if costs else None)
    # and the records handed to the trajectory are in input order too
    calls = host.drain_calls()
    assert [c.prompt for c in calls] == [str(i) for i in range(n)]
    assert [c.error is not None for c in calls] == [plan[i][1] for i in range(n)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans())
def test_through_a_whole_completion(pm, plan):
    n = len(plan)
    root_usage = Usage(11, 13, 0.5)

    class Root(PlannedBackend):
        async def acompletion(self, messages, **sampling):
            if messages[0]["role"] == "system":
                code = (f"res = llm_query_batched([str(i) for i in range({n})])\n"
                        "answer.update(content='|'.join(res), ready=True)")
                return ModelResponse(f"```repl\n{code}\n```", root_usage, self.model_name)
            return await super().acompletion(messages, **sampling)

    pm2 = PluginManager(load_entrypoints=False)
    pm2.register(local_plugin, name="local")
    pm2.register(types.SimpleNamespace(rlm_register_backends=hookimpl(
        lambda registrar: registrar.add("root", Root))), name="root-plugin")
    with RLM(backend="root", plugin_manager=pm2, max_concurrent_subcalls=8) as r:
        r._default_backend()[0].plan = plan
        result = r.completion("ctx")
    parts = result.response.split("|")
    assert [p.startswith("Error:") for p in parts] == [plan[i][1] for i in range(n)]
    assert all(p == f"answer-{i}" for i, p in enumerate(parts) if not plan[i][1])
    ok = [plan[i][2] for i in range(n) if not plan[i][1]] + [root_usage]
    s = result.usage_summary
    assert s.total_calls == len(ok)
    assert s.total_input_tokens == sum(u.input_tokens for u in ok)
    assert s.total_output_tokens == sum(u.output_tokens for u in ok)


def test_sub_call_records_keep_a_bounded_prompt(host_factory):
    """A record keeps the first RECORDED_PROMPT_CHARS characters of its prompt and says how many
    it dropped: forty 32 MB prompts in one cell must not stay on the host until the cell ends."""
    from rlm._host import RECORDED_PROMPT_CHARS

    r, run, host, backend = host_factory(4)
    backend.plan = {i: (0, False, Usage(1, 1, None)) for i in range(3)}
    pad = " " * (3 * RECORDED_PROMPT_CHARS)  # int() ignores it: the backend still sees item i
    assert host.llm_query("0" + pad) == "answer-0"
    assert host.llm_query_batched(["1" + pad, "2" + pad]) == ["answer-1", "answer-2"]
    calls = host.drain_calls()
    assert len(calls) == 3
    for i, call in enumerate(calls):
        assert call.prompt.startswith(str(i))
        assert len(call.prompt) < RECORDED_PROMPT_CHARS + 100
        assert f"{len(pad) + 1 - RECORDED_PROMPT_CHARS:,} more characters not recorded" in \
            call.prompt
