"""rlm.settings: one frozen list of settings that RLM, children, remote children and batch lines
derive from."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlm import RLM, ConfigurationError
from rlm.settings import NAMES, PER_LINE, PROCESS_ARGUMENTS, Settings


def test_every_rlm_argument_is_a_setting_or_a_process_object() -> None:
    params = [n for n in inspect.signature(RLM.__init__).parameters if n not in ("self", "_resources")]
    assert set(params) == set(NAMES) | set(PROCESS_ARGUMENTS)
    assert not set(NAMES) & set(PROCESS_ARGUMENTS)
    # The settings keep RLM's argument order (the list is written once, in one place).
    assert [n for n in params if n in NAMES] == list(NAMES)


def test_rlm_settings_are_frozen_and_read_as_attributes() -> None:
    rlm = RLM(backend="scripted", max_iterations=3, sampling_args={"temperature": 0})
    assert isinstance(rlm.settings, Settings)
    assert rlm.max_iterations == 3 == rlm.settings.max_iterations
    assert rlm.sub_sampling_args == {"temperature": 0}  # defaults to the root's
    with pytest.raises(AttributeError, match=r"create a new RLM\(max_iterations=\.\.\.\)"):
        rlm.max_iterations = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        rlm.settings.max_iterations = 5  # type: ignore[misc]
    rlm.close()


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("max_iterations", 0, "max_iterations must be an integer >= 1"),
    ("max_budget", -1, "max_budget must be a positive number"),
    ("max_tokens", 1.5, "max_tokens must be a positive integer"),
    ("compaction_threshold_pct", 1.5, r"compaction_threshold_pct must be in \(0, 1\]"),
    ("tool_code", "def (", "tool_code is not valid Python"),
    ("environment", 3, "environment must be a str"),
])
def test_bad_arguments_name_the_argument(argument: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_arguments(backend="scripted", **{argument: value})
    with pytest.raises(ConfigurationError, match=message):
        RLM(backend="scripted", **{argument: value})  # type: ignore[arg-type]


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown RLM settings"):
        Settings.from_arguments(backend="scripted", max_iteration=3)


def test_a_child_is_one_level_down_with_what_the_tree_has_left() -> None:
    root = Settings.from_arguments(
        backend="openai", backend_kwargs={"model_name": "big"}, persistent=True, verbose=True,
        custom_tools={"a": 1}, custom_sub_tools={"b": 2}, sampling_args={"temperature": 0.9},
        sub_sampling_args={"temperature": 0.1}, max_budget=1.0, subcall_executor="ray",
        other_backends=["openai"], other_backend_kwargs=[{"model_name": "small"}])
    child = root.for_child(backend="openai", backend_kwargs={"model_name": "small"},
                           sampling_overrides={"model": "x"}, max_budget=0.25, max_timeout=3.0,
                           max_tokens=None)
    assert child.depth == root.depth + 1
    assert child.backend_kwargs == {"model_name": "small"}
    assert (child.max_budget, child.max_timeout, child.max_tokens) == (0.25, 3.0, None)
    assert child.persistent is False and child.verbose is False
    assert child.custom_tools == {"b": 2} == child.custom_sub_tools
    assert child.sampling_args == {"temperature": 0.1, "model": "x"}
    assert child.subcall_executor is None  # a child's own children run on threads
    # Everything else is inherited as it is.
    same = set(NAMES) - {"depth", "backend", "backend_kwargs", "max_budget", "max_timeout",
                         "max_tokens", "persistent", "verbose", "custom_tools", "sampling_args",
                         "subcall_executor", "subcall_executor_kwargs"}
    assert {n: getattr(child, n) for n in same} == {n: getattr(root, n) for n in same}


def test_kwargs_rebuild_the_same_settings_and_survive_pickling() -> None:
    s = Settings.from_arguments(backend="scripted", backend_kwargs={"k": [1]}, tool_prompts="p",
                                other_backends=["scripted"], max_timeout=5)
    kwargs = pickle.loads(pickle.dumps(s.to_kwargs()))
    assert Settings.from_arguments(**kwargs) == s
    kwargs["backend_kwargs"]["k2"] = 1  # a copy: the settings do not change
    assert "k2" not in s.backend_kwargs


def test_persistent_is_not_a_batch_line_setting() -> None:
    assert "persistent" not in PER_LINE and "max_iterations" in PER_LINE
    assert not PER_LINE & set(PROCESS_ARGUMENTS)


@given(st.dictionaries(st.sampled_from(["max_iterations", "max_depth", "max_budget", "max_tokens",
                                        "max_errors", "cell_timeout", "max_concurrent_subcalls"]),
                       st.one_of(st.integers(-3, 50), st.floats(-2, 50, allow_nan=False), st.none(),
                                 st.text(max_size=3))))
def test_from_arguments_accepts_or_names_the_argument(arguments: dict[str, object]) -> None:
    try:
        s = Settings.from_arguments(backend="scripted", **arguments)
    except ConfigurationError as exc:
        assert any(name in str(exc) for name in arguments), str(exc)
    else:
        for name, value in arguments.items():
            assert getattr(s, name) == value
