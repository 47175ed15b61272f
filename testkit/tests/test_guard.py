"""The kit's guard, capability flags and manifest, checked on throwaway subclasses."""

from __future__ import annotations

import inspect

import pytest

import rlm_testkit
from rlm_testkit import (BackendTests, CompactionStrategyTests, KitGuardError, LoggerSinkTests,
                         OpenAICompatibleBackendTests, StandardTests, ToolProviderTests,
                         standard_tests)
from rlm_testkit._manifest import STANDARD_TESTS

KIT_CLASSES = [BackendTests, OpenAICompatibleBackendTests, ToolProviderTests,
               CompactionStrategyTests, LoggerSinkTests]
if "EnvironmentTests" in rlm_testkit.__all__:  # its own module, rlm_testkit.environments
    from rlm_testkit.environments import EscapeTests

    KIT_CLASSES += [rlm_testkit.EnvironmentTests, EscapeTests]


def _guard_fails(cls: type) -> str:
    with pytest.raises(pytest.fail.Exception) as info:
        cls().test_kit_guard()
    return str(info.value)


@pytest.mark.parametrize("kit", KIT_CLASSES, ids=lambda k: k.__name__)
def test_manifest_matches_the_classes(kit: type) -> None:
    own = {n for n, v in vars(kit).items() if n.startswith("test") and callable(v)}
    assert kit.__qualname__ in STANDARD_TESTS, (
        f"list the standard tests of {kit.__qualname__} in rlm_testkit/_manifest.py")
    listed = set(STANDARD_TESTS[kit.__qualname__])
    assert own | {"test_kit_guard"} == listed, (
        f"add new standard tests of {kit.__name__} to rlm_testkit/_manifest.py: "
        f"missing {sorted(own - listed)}, stale {sorted(listed - own - {'test_kit_guard'})}")


@pytest.mark.parametrize("kit", KIT_CLASSES, ids=lambda k: k.__name__)
def test_every_capability_used_is_declared(kit: type) -> None:
    for name in standard_tests(kit):
        for cap in getattr(getattr(kit, name), "__rlm_kit_requires__", ()):
            assert cap in kit._kit_effective, f"{kit.__name__}.{name} requires unknown {cap!r}"


def test_untouched_subclass_passes_the_guard() -> None:
    class Fine(BackendTests):
        plugin, backend_name = "x", "y"

    assert Fine._kit_problems == ()
    Fine().test_kit_guard()


def test_override_without_xfail_fails_the_guard() -> None:
    class Cheater(BackendTests):
        plugin, backend_name = "x", "y"

        def test_usage_is_reported(self) -> None:
            pass

    message = _guard_fails(Cheater)
    assert "test_usage_is_reported" in message and "without @pytest.mark.xfail" in message


@pytest.mark.parametrize("value", [None, 0, "skip"])
def test_deleted_standard_test_fails_the_guard(value: object) -> None:
    class Deleter(ToolProviderTests):
        plugin, provider_name = "x", "y"
        test_tools_are_valid = value

    assert "test_tools_are_valid" in _guard_fails(Deleter)
    assert "deleted" in _guard_fails(Deleter)


def test_staticmethod_replacement_fails_the_guard() -> None:
    class Sneaky(LoggerSinkTests):
        plugin, sink_name = "x", "y"
        test_handles_child_runs = staticmethod(lambda: None)

    assert "test_handles_child_runs" in _guard_fails(Sneaky)


def test_xfail_with_a_reason_is_allowed_and_recorded() -> None:
    class Honest(CompactionStrategyTests):
        plugin, strategy_name = "x", "y"

        @pytest.mark.xfail(reason="our strategy keeps the whole history by design")
        def test_compact_returns_a_smaller_valid_history(self) -> None:
            raise AssertionError

    assert Honest._kit_problems == ()
    assert Honest._kit_xfailed == (
        "test_compact_returns_a_smaller_valid_history: our strategy keeps the whole history by design",)
    Honest().test_kit_guard()


@pytest.mark.parametrize("mark", [pytest.mark.xfail, pytest.mark.xfail(reason=""),
                                  pytest.mark.xfail(reason="   "), pytest.mark.skip(reason="no"),
                                  pytest.mark.skipif(True, reason="no")])
def test_xfail_without_a_reason_or_a_skip_fails_the_guard(mark: pytest.MarkDecorator) -> None:
    class Lazy(BackendTests):
        plugin, backend_name = "x", "y"

        @mark
        def test_close_is_idempotent(self) -> None:
            pass

    assert "test_close_is_idempotent" in _guard_fails(Lazy)


def test_problems_are_inherited_by_further_subclasses() -> None:
    class Base(BackendTests):
        test_is_a_backend = None

    class TestConcrete(Base):
        plugin, backend_name = "x", "y"

    assert "test_is_a_backend" in _guard_fails(TestConcrete)


def test_the_guard_itself_cannot_be_overridden() -> None:
    with pytest.raises(KitGuardError, match="test_kit_guard"):
        class Tamper(BackendTests):
            def test_kit_guard(self) -> None:
                pass
    with pytest.raises(KitGuardError, match="test_kit_guard"):
        class Delete(BackendTests):
            test_kit_guard = None


def test_marks_added_to_the_kit_function_are_caught() -> None:
    class DemoKit(StandardTests, kit=True):
        def test_something(self) -> None:
            pass

    class TestUser(DemoKit):
        pass

    assert TestUser._kit_problems == ()
    pytest.mark.xfail(reason="marks the shared function")(DemoKit.test_something)

    class TestLater(DemoKit):
        pass

    assert "marks were added to the kit's own function" in _guard_fails(TestLater)


def test_a_test_removed_from_the_kit_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    class DemoKit(StandardTests, kit=True):
        def test_one(self) -> None:
            pass

    monkeypatch.setattr(DemoKit, "_kit_standard", ("test_one", "test_two", "test_kit_guard"))

    class TestUser(DemoKit):
        pass

    assert "test_two" in _guard_fails(TestUser) and "reinstall" in _guard_fails(TestUser)


def test_unknown_capability_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(KitGuardError, match="unknown capability 'costs'.*cost"):
        class Typo(BackendTests):
            capabilities = {"costs": True}
    with pytest.raises(KitGuardError, match="True or False"):
        class NotBool(BackendTests):
            capabilities = {"cost": "yes"}


def test_concrete_class_must_name_its_plugin() -> None:
    with pytest.raises(KitGuardError, match="backend_name"):
        class TestNoName(BackendTests):
            plugin = "x"
    # an abstract intermediate base (not collected) may leave them out
    class SharedBase(BackendTests):
        pass

    assert SharedBase._kit_problems == ()


def test_capabilities_merge_down_the_hierarchy() -> None:
    class Base(BackendTests):
        capabilities = {"cost": True, "timeout": False}

    class Child(Base):
        capabilities = {"timeout": True}

    assert Child.has("cost") and Child.has("timeout") and Child.has("usage")
    assert not Base.has("timeout")
    with pytest.raises(KeyError, match="known"):
        Child.has("nope")


def test_public_api_is_documented() -> None:
    for name in rlm_testkit.__all__:
        obj = getattr(rlm_testkit, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"rlm_testkit.{name} has no docstring"
