"""docs/plugins.md documents every hookspec with its exact signature, and nothing else.

A hook is documented by a heading whose text is the hook's name (backticks allowed), followed by
a fenced code block whose first line is ``def <hook>(<params>) -> <return>``, exactly as
``inspect.signature`` renders the spec without ``self``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rlm._hookspecs import HOOK_KINDS, PROJECT_NAME, RLMHookSpecs, hookspec

if TYPE_CHECKING:
    from rlm._registrar import Registrar

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_HOOK_NAME = re.compile(r"rlm_\w+")


class _Annotation:
    """Renders a (string) annotation as written, so ``'Registrar'`` prints as ``Registrar``."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _plain(annotation: object) -> object:
    if annotation is inspect.Parameter.empty:
        return annotation
    if isinstance(annotation, str):
        return _Annotation(annotation)
    return _Annotation(inspect.formatannotation(annotation))


def spec_functions(specs: type) -> dict[str, object]:
    marker = f"{PROJECT_NAME}_spec"
    return {name: getattr(specs, name) for name in dir(specs)
            if hasattr(getattr(specs, name), marker)}


def expected_signature(name: str, function: object) -> str:
    sig = inspect.signature(function)  # annotations stay strings (postponed evaluation)
    params = list(sig.parameters.values())
    assert params and params[0].name == "self", f"{name}: a hookspec method must take self first"
    params = [p.replace(annotation=_plain(p.annotation)) for p in params[1:]]
    shown = sig.replace(parameters=params, return_annotation=_plain(sig.return_annotation))
    return f"def {name}{shown}"


def documented_hooks(markdown: str) -> dict[str, list[str | None]]:
    """hook name -> the signature line of each section documenting it (None if it has none)."""
    found: dict[str, list[str | None]] = {}
    current: str | None = None
    in_fence = False
    fence_first_line: bool = False
    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
            fence_first_line = in_fence
            if not in_fence and current is not None and found[current][-1] is None:
                current = None  # an empty block: no signature for this section
            continue
        if in_fence:
            if current is not None and fence_first_line and stripped:
                found[current][-1] = stripped
                current = None  # only the first block after the heading counts
                fence_first_line = False
            continue
        heading = _HEADING.match(line)
        if heading:
            text = heading.group(2).strip().strip("`").strip()
            if _HOOK_NAME.fullmatch(text):
                current = text
                found.setdefault(text, []).append(None)
            else:
                current = None
    return found


def problems(markdown: str, specs: type) -> list[str]:
    expected = {name: expected_signature(name, fn) for name, fn in spec_functions(specs).items()}
    documented = documented_hooks(markdown)
    out: list[str] = []
    for name, signature in sorted(expected.items()):
        if name not in documented:
            out.append(f"{name} is not documented: add a '### `{name}`' section whose first code "
                       f"line is: {signature}")
            continue
        if len(documented[name]) > 1:
            out.append(f"{name} is documented {len(documented[name])} times")
        for line in documented[name]:
            if line != signature:
                out.append(f"{name}: documented signature {line!r} differs from the spec's "
                           f"{signature!r}")
    for name in sorted(set(documented) - set(expected)):
        out.append(f"{name} is documented but is not a hookspec of {specs.__name__}")
    return out


def test_docs_exist():
    assert DOCS.is_file(), f"{DOCS} is missing"


def test_every_hook_is_documented_with_its_exact_signature():
    assert problems(DOCS.read_text(encoding="utf-8"), RLMHookSpecs) == []


def test_the_six_hooks_are_the_specs_and_render_as_documented():
    specs = spec_functions(RLMHookSpecs)
    assert sorted(specs) == sorted(HOOK_KINDS.values())
    assert expected_signature("rlm_register_backends", specs["rlm_register_backends"]) == (
        "def rlm_register_backends(registrar: Registrar) -> None")


# --- the check itself catches drift --------------------------------------------------------


class _SpecsWithExtraHook(RLMHookSpecs):
    @hookspec
    def rlm_register_widgets(self, registrar: Registrar, *, strict: bool = False) -> None:
        """A hook the docs do not know about."""


def test_a_new_hook_without_docs_is_caught():
    found = problems(DOCS.read_text(encoding="utf-8"), _SpecsWithExtraHook)
    assert len(found) == 1 and "rlm_register_widgets is not documented" in found[0]
    assert "def rlm_register_widgets(registrar: Registrar, *, strict: bool = False) -> None" in found[0]


def test_a_changed_signature_is_caught():
    text = DOCS.read_text(encoding="utf-8").replace(
        "def rlm_register_environments(registrar: Registrar) -> None",
        "def rlm_register_environments(registrar) -> None")
    [problem] = problems(text, RLMHookSpecs)
    assert problem.startswith("rlm_register_environments: documented signature "
                              "'def rlm_register_environments(registrar) -> None' differs")


def test_a_documented_hook_that_is_not_a_spec_is_caught():
    text = DOCS.read_text(encoding="utf-8") + (
        "\n### `rlm_register_gadgets`\n\n```python\n"
        "def rlm_register_gadgets(registrar: Registrar) -> None\n```\n")
    assert problems(text, RLMHookSpecs) == [
        "rlm_register_gadgets is documented but is not a hookspec of RLMHookSpecs"]


@pytest.mark.parametrize("section", ["### `rlm_register_commands`", "### rlm_register_commands"])
def test_a_removed_section_or_missing_signature_is_caught(section):
    text = DOCS.read_text(encoding="utf-8")
    assert "### `rlm_register_commands`" in text
    without_section = text.replace("### `rlm_register_commands`", "### Commands")
    assert any("rlm_register_commands is not documented" in p
               for p in problems(without_section, RLMHookSpecs))
    no_signature = "# Hooks\n\n" + section + "\n\nJust prose, no code.\n\n## Next\n\n```python\nx = 1\n```\n"
    assert any("rlm_register_commands: documented signature None" in p
               for p in problems(no_signature, RLMHookSpecs))
