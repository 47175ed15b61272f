"""The "standard tests, by class" reference of docs/testkit.md, rendered from the kit classes.

Each kit class gets: what to set on it (``REQUIRED``), its other settings with their defaults,
a capability table (its own and inherited ``CAPABILITIES``), and every standard test it runs
(inherited ones too) with the capabilities it needs. ``python -m rlm_testkit._reference`` prints
the section; ``tests/test_docs_testkit.py`` fails when docs/testkit.md differs from it, so the
reference cannot fall behind the code.
"""

from __future__ import annotations

import inspect
from typing import Any

from ._core import _REQUIRES_ATTR, StandardTests, _effective_capabilities, standard_tests

HEADING = "## The standard tests, by class"


def kit_classes() -> list[type[StandardTests]]:
    """Every public kit class, in the order the reference lists them."""
    from .backends import BackendTests, OpenAICompatibleBackendTests
    from .compaction import CompactionStrategyTests
    from .environments import EnvironmentTests, EscapeTests
    from .sinks import LoggerSinkTests
    from .tools import ToolProviderTests

    return [BackendTests, OpenAICompatibleBackendTests, EnvironmentTests, EscapeTests,
            ToolProviderTests, CompactionStrategyTests, LoggerSinkTests]


def _capabilities(cls: type) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get("CAPABILITIES") or {})
    effective = _effective_capabilities(cls)
    return {name: (effective[name], text) for name, (_default, text) in out.items()}


def _settings(cls: type) -> dict[str, Any]:
    """Public, non-test, non-callable class attributes other than the required ones."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name, value in klass.__dict__.items():
            if name.startswith(("_", "test")) or name.isupper() \
                    or name in ("capabilities", "plugin") or callable(value) \
                    or isinstance(value, (classmethod, staticmethod, property)):
                continue
            out[name] = value
    for name in getattr(cls, "REQUIRED", {}):
        out.pop(name, None)
    return out


def _needs(cls: type, test: str) -> tuple[str, ...]:
    func = getattr(cls, test, None)
    return tuple(getattr(func, _REQUIRES_ATTR, ()))


def _first_line(cls: type, test: str) -> str:
    doc = inspect.getdoc(getattr(cls, test, None)) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def render_class(cls: type[StandardTests]) -> str:
    lines = [f"### `{cls.__name__}`", ""]
    bases = [b.__name__ for b in cls.__bases__ if b is not StandardTests
             and issubclass(b, StandardTests) and b.__name__[0] != "_"]
    if bases:
        lines += [f"Inherits every standard test, capability and setting of "
                  f"{', '.join(f'`{b}`' for b in bases)}.", ""]
    lines.append("Set on the class: " + "; ".join(
        f"`{name}` ({hint})" for name, hint in cls.REQUIRED.items()) + ".")
    settings = _settings(cls)
    if settings:
        lines += ["", "Optional settings (default): " + "; ".join(
            f"`{name}` (`{value!r}`)" for name, value in settings.items()) + "."]
    caps = _capabilities(cls)
    lines.append("")
    if caps:
        lines += ["| capability | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | {default} | {text} |" for name, (default, text) in caps.items()]
    else:
        lines.append("Capabilities: none.")
    lines += ["", "Standard tests:", ""]
    for test in standard_tests(cls):
        needs = _needs(cls, test)
        line = f"* `{test}`" + (f" (needs {', '.join(f'`{n}`' for n in needs)})" if needs else "")
        doc = _first_line(cls, test)
        lines.append(line + (f": {doc}" if doc else ""))
    return "\n".join(lines)


def render() -> str:
    """The whole section, heading included, ending with one newline."""
    intro = ("Generated from the kit classes (`python -m rlm_testkit._reference`); "
             "`tests/test_docs_testkit.py` checks that this section matches the code.")
    return "\n\n".join([HEADING, intro, *(render_class(c) for c in kit_classes())]) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
