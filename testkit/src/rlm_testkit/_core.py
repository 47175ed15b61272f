"""What every standard test class shares: capability flags, skips with reasons, and the guard.

A *kit class* (``BackendTests``, ``ToolProviderTests``, ...) is declared with
``class BackendTests(StandardTests, kit=True)``. Its methods named ``test_*`` are the *standard
tests*, listed in :mod:`rlm_testkit._manifest`. A plugin author subclasses a kit class and names
the plugin and its parameters; pytest then collects every standard test for that plugin.

Capabilities: each kit class declares ``CAPABILITIES = {name: (default, description)}``; a
subclass turns them on or off with ``capabilities = {"cost": True}``. A standard test marked
``@requires("cost")`` is skipped, with a reason that names the flag and how to turn it on, when the
subclass declares the capability off.

The guard: when a subclass is created, every standard test of its kit classes is checked. A
standard test that the subclass *deletes* (``test_x = None``) or *overrides* is a problem unless
the override carries ``@pytest.mark.xfail(reason="...")`` with a non-empty reason. Problems are
reported by the standard test ``test_kit_guard``, which itself cannot be overridden (trying to
raises :class:`KitGuardError` when the class is defined, so the test module fails to import).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeGuard, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings

from ._manifest import STANDARD_TESTS

F = TypeVar("F", bound=Callable[..., Any])

GUARD_TEST = "test_kit_guard"
_REQUIRES_ATTR = "__rlm_kit_requires__"


class KitGuardError(TypeError):
    """A subclass of a kit class is malformed in a way that must stop the test run at once."""


def requires(*capabilities: str) -> Callable[[F], F]:
    """Mark a standard test as needing ``capabilities``; it skips (with the reason) without them."""
    if not capabilities:
        raise ValueError("requires() needs at least one capability name")

    def mark(func: F) -> F:
        setattr(func, _REQUIRES_ATTR, tuple(getattr(func, _REQUIRES_ATTR, ())) + capabilities)
        return func

    return mark


def xfail_reason(func: object) -> str | None:
    """The reason of an ``xfail`` mark on ``func`` (``None`` without one or with an empty reason)."""
    for m in getattr(func, "pytestmark", None) or []:
        if getattr(m, "name", None) != "xfail":
            continue
        reason = m.kwargs.get("reason")
        if isinstance(reason, str) and reason.strip():
            return reason.strip()
    return None


def _is_kit_class(klass: type) -> TypeGuard[type[StandardTests]]:
    """Whether ``klass`` is a kit class (``StandardTests`` or one declared with ``kit=True``)."""
    return bool(klass.__dict__.get("_kit_root", False))


def _own_tests(klass: type) -> list[str]:
    return [n for n, v in klass.__dict__.items() if n.startswith("test") and callable(v)]


class StandardTests:
    """Base of every kit class. Not collected by pytest (its name does not start with ``Test``)."""

    #: ``{capability: (default, description)}``, declared by each kit class.
    CAPABILITIES: ClassVar[Mapping[str, tuple[bool, str]]] = {}
    #: What the plugin under test can do; merged over the kit's defaults.
    capabilities: ClassVar[Mapping[str, bool]] = {}
    #: Class attributes a concrete subclass (a ``Test*`` class) must set: ``{name: hint}``.
    REQUIRED: ClassVar[Mapping[str, str]] = {}

    _kit_root: ClassVar[bool] = False
    _kit_standard: ClassVar[tuple[str, ...]] = ()
    _kit_marks: ClassVar[dict[str, int]] = {}
    _kit_problems: ClassVar[tuple[str, ...]] = ()
    _kit_xfailed: ClassVar[tuple[str, ...]] = ()
    _kit_effective: ClassVar[dict[str, bool]] = {}

    def __init_subclass__(cls, kit: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._kit_root = kit
        if kit:
            _init_kit_class(cls)
        else:
            if GUARD_TEST in cls.__dict__:
                raise KitGuardError(
                    f"{cls.__qualname__} overrides {GUARD_TEST}, the conformance kit's guard. The "
                    f"guard cannot be overridden or deleted: remove {GUARD_TEST} from the class. To "
                    "opt out of one standard test, override it with "
                    "@pytest.mark.xfail(reason='why this plugin cannot pass it').")
        cls._kit_effective = _effective_capabilities(cls)
        cls._kit_problems, cls._kit_xfailed = _guard_problems(cls)
        if not kit and cls.__name__.startswith("Test"):
            missing = [f"{name} ({hint})" for name, hint in cls.REQUIRED.items()
                       if getattr(cls, name, None) in (None, "")]
            if missing:
                raise KitGuardError(
                    f"{cls.__qualname__} must set: " + "; ".join(missing) + ". See the rlm "
                    "conformance kit reference (docs/testkit.md).")

    # -- capabilities ------------------------------------------------------------------
    @classmethod
    def has(cls, capability: str) -> bool:
        """Whether the plugin under test declares ``capability``."""
        if capability not in cls._kit_effective:
            raise KeyError(f"{cls.__qualname__} has no capability {capability!r}; known: "
                           f"{', '.join(sorted(cls._kit_effective)) or 'none'}")
        return cls._kit_effective[capability]

    @pytest.fixture(autouse=True)
    def _rlm_kit_capabilities(self, request: pytest.FixtureRequest) -> None:
        self._kit_session = request.session
        func = getattr(request, "function", None)
        for cap in getattr(func, _REQUIRES_ATTR, ()):
            if not self.has(cap):
                default, description = _describe(type(self), cap)
                pytest.skip(
                    f"capability {cap!r} is off for {type(self).__qualname__} ({description}); "
                    f"set capabilities = {{{cap!r}: True}} on the class if the plugin supports it")

    # -- the guard ---------------------------------------------------------------------
    @classmethod
    def _kit_session_problems(cls, session: pytest.Session) -> list[str]:
        """What is wrong with the class given the other tests of this session (a kit class
        adds its own rules, e.g. EnvironmentTests: an isolated environment runs EscapeTests)."""
        return []

    def test_kit_guard(self) -> None:
        """Every standard test is present and either inherited or an xfail with a reason; what
        the class declares is backed by the tests it needs (an ``isolated`` environment runs
        the escape suite in the same session)."""
        session = getattr(self, "_kit_session", None)
        problems = (*type(self)._kit_problems,
                    *(type(self)._kit_session_problems(session) if session is not None else ()))
        if problems:
            pytest.fail(
                f"{type(self).__qualname__} breaks the conformance kit's rules:\n  - "
                + "\n  - ".join(problems)
                + "\nA standard test may only be replaced by an override marked "
                  "@pytest.mark.xfail(reason='why this plugin cannot pass it').", pytrace=False)


StandardTests._kit_root = True  # its guard test is the kit's own, not an override


def _describe(cls: type, cap: str) -> tuple[bool, str]:
    for klass in cls.__mro__:
        caps = klass.__dict__.get("CAPABILITIES")
        if caps and cap in caps:
            return caps[cap]
    return False, "no description"


def _init_kit_class(cls: type[StandardTests]) -> None:
    """Record the standard tests of a kit class and the marks they were defined with."""
    own = _own_tests(cls)
    listed = STANDARD_TESTS.get(cls.__qualname__)
    names = list(listed) if listed is not None else own
    if GUARD_TEST not in names:
        names.append(GUARD_TEST)
    cls._kit_standard = tuple(names)
    marks: dict[str, int] = {}
    for klass in cls.__mro__:
        for name in names:
            if name in klass.__dict__ and name not in marks:
                marks[name] = len(getattr(klass.__dict__[name], "pytestmark", None) or [])
    cls._kit_marks = marks
    for name, value in cls.__dict__.get("capabilities", {}).items():
        if not isinstance(value, bool):
            raise KitGuardError(f"{cls.__qualname__}.capabilities[{name!r}] must be True or False")


def _effective_capabilities(cls: type) -> dict[str, bool]:
    known: dict[str, bool] = {}
    for klass in reversed(cls.__mro__):
        for name, (default, _desc) in (klass.__dict__.get("CAPABILITIES") or {}).items():
            known.setdefault(name, default)
    for klass in reversed(cls.__mro__):
        declared = klass.__dict__.get("capabilities")
        if not declared:
            continue
        if not isinstance(declared, Mapping):
            raise KitGuardError(f"{klass.__qualname__}.capabilities must be a dict of "
                                "{capability: True/False}")
        for name, value in declared.items():
            if name not in known:
                raise KitGuardError(
                    f"{klass.__qualname__}.capabilities names unknown capability {name!r}; the "
                    f"capabilities of this kit class are: {', '.join(sorted(known)) or 'none'}")
            if not isinstance(value, bool):
                raise KitGuardError(f"{klass.__qualname__}.capabilities[{name!r}] must be True or "
                                    f"False, got {value!r}")
            known[name] = value
    return known


def _guard_problems(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    problems: list[str] = []
    xfailed: list[str] = []
    seen: set[str] = set()
    for kit_cls in cls.__mro__:
        if not (isinstance(kit_cls, type) and _is_kit_class(kit_cls)):
            continue
        for name in kit_cls._kit_standard:
            if name in seen:
                continue
            seen.add(name)
            owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
            if owner is None:
                problems.append(
                    f"standard test {name} of {kit_cls.__qualname__} is missing from the kit "
                    "itself: rlm-testkit is damaged or out of date; reinstall it.")
                continue
            value = owner.__dict__[name]
            if _is_kit_class(owner):
                before = owner._kit_marks.get(name, 0)
                now = len(getattr(value, "pytestmark", None) or [])
                if now > before:
                    problems.append(
                        f"{name}: marks were added to the kit's own function (which changes it "
                        f"for every plugin); define a method {name} on {cls.__qualname__} "
                        "with @pytest.mark.xfail(reason=...) instead.")
                continue
            if value is None or not callable(value):
                problems.append(f"{name} (a standard test of {kit_cls.__qualname__}) is deleted by "
                                f"{owner.__qualname__} ({name} = {value!r}).")
                continue
            if isinstance(value, (staticmethod, classmethod)) or not inspect.isfunction(value):
                problems.append(f"{name} is replaced by {owner.__qualname__} with a "
                                f"{type(value).__name__}, not a test method.")
                continue
            reason = xfail_reason(value)
            if reason is None:
                problems.append(
                    f"{name} (a standard test of {kit_cls.__qualname__}) is overridden by "
                    f"{owner.__qualname__} without @pytest.mark.xfail(reason=...).")
            else:
                xfailed.append(f"{name}: {reason}")
    return tuple(problems), tuple(xfailed)


def standard_tests(cls: type) -> list[str]:
    """The names of the standard tests a class inherits from its kit classes."""
    out: list[str] = []
    for klass in cls.__mro__:
        if isinstance(klass, type) and _is_kit_class(klass):
            out.extend(n for n in klass._kit_standard if n not in out)
    return out


def property_test(max_examples: int) -> Any:
    """Hypothesis settings of the kit's property tests.

    Each standard property test builds its ``@given`` function inside the test body, so every
    plugin class gets a fresh one (an inherited ``@given`` method would share Hypothesis' state
    between the plugins under test). No example database: a plugin's failing input is reported,
    not replayed against the next plugin. No ``explain`` phase: on Python 3.11 its line tracer
    hangs once a local-REPL cell has run in the process (seen with hypothesis 6.170), and it only
    adds hints to a failure that is reported anyway.
    """
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target,
                            Phase.shrink])
