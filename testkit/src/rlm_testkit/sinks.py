"""Standard tests for logger-sink plugins.

    import rlm_sinks_jsonl.plugin
    from rlm_testkit import LoggerSinkTests

    class TestJSONLSink(LoggerSinkTests):
        plugin = rlm_sinks_jsonl.plugin
        sink_name = "jsonl"

        def make_sink(self, sink_pm, tmp_path):          # optional: build it your way
            return rlm_sinks_jsonl.sink.JSONLSink(path=tmp_path / "run.jsonl")

        def sink_output(self, sink):                      # optional: what it wrote
            return (sink.path).read_text()

With ``sink_output`` defined (capability ``output``), the kit checks that a run's final answer and
each cell's output reach it.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlm import events as E
from rlm.protocols import LoggerSink

from ._core import StandardTests, property_test, requires
from .helpers import isolated_plugin_manager, scripted_rlm_reply


def sample_events(text: str = "hello", run_id: str = "run0001") -> list[E.Event]:
    """One event of every type, in the order a run sends them."""
    base: dict[str, Any] = {"run_id": run_id, "depth": 0}
    cell = {"stdout": text, "stderr": "", "error": None, "variables": ["x"],
            "execution_time": 0.01, "final_answer": None, "timed_out": False, "rlm_calls": []}
    usage = {"model_usage_summaries": {"m": {"total_calls": 1, "total_input_tokens": 3,
                                             "total_output_tokens": 4, "total_cost": None}},
             "total_calls": 1, "total_input_tokens": 3, "total_output_tokens": 4, "total_cost": None}
    return [
        E.RunStarted(**base, root_model="m", backend="scripted", environment="local",
                     settings={"max_iterations": 3}, context_type="str", context_lengths=[len(text)],
                     root_prompt=text),
        E.IterationStarted(**base, iteration=1),
        E.SubcallStarted(**base, kind="llm", model="m", prompt_preview=text[:80]),
        E.SubcallCompleted(**base, kind="llm", model="m", duration=0.1, error=None,
                           input_tokens=3, output_tokens=4, cost=None),
        E.CellExecuted(**base, iteration=1, code=f"print({text!r})", result=cell),
        E.IterationCompleted(**base, iteration=1, response=text,
                             code_blocks=[{"code": f"print({text!r})", "result": cell}],
                             final_answer=None, iteration_time=0.2,
                             usage={"input_tokens": 3, "output_tokens": 4, "cost": None}),
        E.Compacted(**base, messages_before=10, messages_after=4, tokens_before=9000),
        E.LimitExceeded(**base, error_type="TimeoutExceededError", message=text,
                        partial_answer=None),
        E.RunFinished(**base, response=text, execution_time=1.0, usage_summary=usage, status="ok"),
    ]


_odd = st.text(st.characters(exclude_categories=["Cs"]), max_size=300) | st.sampled_from(
    ["", "\x00", "\n" * 50, "é" * 1000, "```repl\nprint(1)\n```", "x" * 100_000])


class LoggerSinkTests(StandardTests, kit=True):
    """The contract of a logger sink: every event handled, never raises, thread-safe."""

    CAPABILITIES = {
        "threads": (True, "handle() may be called from several threads at once"),
        "output": (False, "sink_output(sink) returns what the sink wrote, so content is checked"),
    }
    REQUIRED = {
        "plugin": "the plugin module (or its dotted name) that registers the sink",
        "sink_name": "the name the plugin registers",
    }

    plugin: ClassVar[Any] = None
    sink_name: ClassVar[str | None] = None

    @pytest.fixture
    def sink_pm(self) -> Any:
        return isolated_plugin_manager(self.plugin, first_party=("local", "scripted"))

    def make_sink(self, sink_pm: Any, tmp_path: Any) -> Any:
        """Build the sink under test (default: the factory with no arguments, as the kernel does)."""
        return sink_pm.create("sink", self.sink_name)

    def sink_output(self, sink: Any) -> str:
        """What the sink wrote so far (needed with capability ``output``)."""
        raise NotImplementedError(f"{type(self).__qualname__} declares capability 'output' but "
                                  "does not define sink_output(self, sink) -> str")

    @pytest.fixture
    def sink(self, sink_pm: Any, tmp_path: Any) -> Any:
        built = self.make_sink(sink_pm, tmp_path)
        yield built
        built.close()

    def test_registers_its_name(self, sink_pm: Any) -> None:
        entry = sink_pm.entry("sink", self.sink_name)
        assert entry.description, "registrar.add(..., description='one line') is missing"

    def test_builds_with_no_arguments(self, sink_pm: Any) -> None:
        sink = sink_pm.create("sink", self.sink_name)
        try:
            assert isinstance(sink, LoggerSink), f"{type(sink).__name__} lacks handle() or close()"
        finally:
            sink.close()

    def test_handles_every_event_type(self, sink: Any) -> None:
        events = sample_events()
        assert {type(e) for e in events} == set(E._TYPE_NAMES), "the kit misses an event type"
        for event in events:
            sink.handle(event)

    def test_handles_any_text(self, sink: Any) -> None:
        @property_test(max_examples=25)
        @given(text=_odd)
        def check(text: str) -> None:
            for event in sample_events(text):
                sink.handle(event)

        check()

    def test_handles_child_runs(self, sink: Any) -> None:
        for event in sample_events("child"):
            event.depth = 2
            event.parent_run_id = "parent01"
            sink.handle(event)

    def test_close_is_idempotent(self, sink_pm: Any, tmp_path: Any) -> None:
        sink = self.make_sink(sink_pm, tmp_path)
        sink.handle(sample_events()[0])
        sink.close()
        sink.close()

    @requires("threads")
    def test_concurrent_events(self, sink: Any) -> None:
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                for event in sample_events(f"thread {i}", run_id=f"run{i:04d}"):
                    sink.handle(event)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors

    def _run(self, sink_pm: Any, sink: Any) -> Any:
        from rlm import RLM

        replies = ["```repl\nprint('cell output 1234')\n```", scripted_rlm_reply("final 5678")]
        rlm = RLM(backend="scripted", backend_kwargs={"replies": replies}, environment="local",
                  max_iterations=3, sinks=[sink], plugin_manager=sink_pm)
        try:
            with _no_sink_warning():
                return rlm.completion("context for the sink tests")
        finally:
            rlm.close()

    def test_receives_a_real_run(self, sink_pm: Any, sink: Any) -> None:
        result = self._run(sink_pm, sink)
        assert result.response == "final 5678"

    @requires("output")
    def test_output_shows_the_run(self, sink_pm: Any, sink: Any) -> None:
        self._run(sink_pm, sink)
        text = self.sink_output(sink)
        assert "cell output 1234" in text, "a cell's output is missing from what the sink wrote"
        assert "final 5678" in text, "the final answer is missing from what the sink wrote"


class _no_sink_warning:
    """Fails the test when the kernel reports that the sink raised during a run."""

    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self._caught = self._cm.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)
        bad = [str(w.message) for w in self._caught if "logger sink" in str(w.message)]
        assert not bad, f"the sink raised during a run: {bad}"
