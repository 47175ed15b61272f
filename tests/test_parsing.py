"""Fence and FINAL parsing: examples plus hypothesis properties."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from rlm.parsing import find_code_blocks, find_final_answer, strip_fences

# Code lines never look like a fence (no line starting with ``` or ~~~ after whitespace).
code_line = st.text(alphabet=string.ascii_letters + string.digits + " =()+-*/_'\":,.[]{}#\t",
                    max_size=40).filter(lambda s: not s.lstrip().startswith(("```", "~~~")))
code_text = st.lists(code_line, min_size=1, max_size=8).map("\n".join)
prose_line = st.text(alphabet=string.ascii_letters + string.digits + " .,!?-", max_size=60)
prose = st.lists(prose_line, max_size=4).map("\n".join)


def test_repl_and_python_fences_in_order():
    text = "intro\n```repl\na = 1\n```\nmiddle\n```python\nb = 2\n```\n```py\nc = 3\n```\nend"
    assert find_code_blocks(text) == ["a = 1", "b = 2", "c = 3"]


def test_other_languages_are_not_code():
    text = "```bash\nrm -rf /\n```\n```json\n{}\n```\n```\nplain\n```"
    assert find_code_blocks(text) == []


def test_unclosed_fence_is_ignored():
    assert find_code_blocks("```repl\nx = 1\n") == []
    assert find_code_blocks("```repl\nx = 1\n```\n```repl\ny = 2") == ["x = 1"]


def test_longer_fence_can_contain_triple_backticks():
    text = "````repl\ns = '''\n```\n'''\n````"
    assert find_code_blocks(text) == ["s = '''\n```\n'''"]


def test_indented_fence_is_dedented():
    text = "1. step\n   ```repl\n   for i in range(2):\n       print(i)\n   ```"
    assert find_code_blocks(text) == ["for i in range(2):\n    print(i)"]


def test_case_insensitive_tag_and_trailing_spaces():
    assert find_code_blocks("```REPL  \nx=1\n```  ") == ["x=1"]


@given(before=prose, code=code_text, after=prose)
def test_any_code_round_trips_through_a_repl_fence(before, code, after):
    text = f"{before}\n```repl\n{code}\n```\n{after}"
    blocks = find_code_blocks(text)
    assert blocks == [__import__("textwrap").dedent(code)]


@given(codes=st.lists(code_text, min_size=1, max_size=5), tag=st.sampled_from(["repl", "python"]))
def test_many_blocks_keep_order(codes, tag):
    text = "\n\nthinking\n\n".join(f"```{tag}\n{c}\n```" for c in codes)
    import textwrap

    assert find_code_blocks(text) == [textwrap.dedent(c) for c in codes]


def test_final_text_and_var():
    assert find_final_answer("Done.\nFINAL(42)").value == "42"
    fa = find_final_answer("FINAL_VAR(result)")
    assert (fa.kind, fa.value) == ("var", "result")
    assert find_final_answer("FINAL_VAR('result')").value == "result"
    assert find_final_answer('FINAL("quoted answer")').value == "quoted answer"


def test_final_inside_code_is_not_prose():
    assert find_final_answer("```repl\nFINAL(3)\n```") is None


def test_final_must_start_a_line():
    assert find_final_answer("I will call FINAL(x) later") is None


def test_final_var_wins_over_final():
    fa = find_final_answer("FINAL(a)\nFINAL_VAR(b)")
    assert (fa.kind, fa.value) == ("var", "b")


def test_final_nested_and_unbalanced_parentheses():
    assert find_final_answer("FINAL(f(x) = (a + b))").value == "f(x) = (a + b)"
    assert find_final_answer("FINAL(5 (approx))\n\nThanks (really)").value == "5 (approx)"
    assert find_final_answer("FINAL(the range [1, 2)").value == "the range [1, 2"
    assert find_final_answer("FINAL(multi\nline\nanswer)").value == "multi\nline\nanswer"


answer_text = st.text(alphabet=string.ascii_letters + string.digits + " .,:;!?-+*/=%$", min_size=1,
                      max_size=80).filter(lambda s: s.strip() and s.strip()[0] not in "\"'"
                                          and s.strip()[-1] not in "\"'")


@given(before=prose, answer=answer_text)
@settings(max_examples=200)
def test_final_round_trips(before, answer):
    fa = find_final_answer(f"{before}\nFINAL({answer})")
    assert fa is not None and fa.kind == "text"
    assert fa.value == answer.strip()


@given(name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True), before=prose)
def test_final_var_round_trips(name, before):
    fa = find_final_answer(f"{before}\nFINAL_VAR({name})")
    assert fa is not None and (fa.kind, fa.value) == ("var", name)


@given(code=code_text, before=prose)
def test_strip_fences_removes_code(code, before):
    text = f"{before}\n```repl\n{code}\n```"
    assert strip_fences(text) == before
