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


# --- Hostile replies (issue 16): the parser is linear, agrees with the reference, reads CRLF. ---

import re  # noqa: E402

import rlm.parsing as parsing  # noqa: E402

# The opening-fence rule as a regular expression: the reference the str-method parser must equal
# (applied only to short lines here, where its quadratic backtracking is harmless).
_REFERENCE_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})[ \t]*([A-Za-z0-9_+-]*)[^\n`]*$")
_REFERENCE_CLOSE = r"^[ \t]*{c}{{{n},}}[ \t]*$"

# Lines built from the characters that matter to fences and FINAL, in runs (the shapes that made
# the old regex backtrack: a marker, then a long tag or long blanks, then a stray backtick).
_hostile_piece = st.sampled_from(["`", "```", "````", "~~~", "~", " ", "\t", "repl", "py", "a", "-",
                                  "+", "(", ")", "FINAL(", "FINAL_VAR(", ">", "*", "_", ".", "x",
                                  "\u00e9", "\udcff", "\r"])
hostile_line = st.lists(st.tuples(_hostile_piece, st.integers(1, 6)), max_size=8).map(
    lambda runs: "".join(p * k for p, k in runs))


@given(line=hostile_line.filter(lambda s: "\r" not in s))
@settings(max_examples=500)
def test_fence_lines_agree_with_the_reference_regex(line):
    m = _REFERENCE_OPEN.match(line)
    got = parsing._opening(line)
    assert got == (None if m is None else (m.group(1), m.group(2), m.group(3)))
    for char in "`~":
        for n in (3, 4):
            expected = re.match(_REFERENCE_CLOSE.format(c=re.escape(char), n=n), line) is not None
            assert parsing._closes(line, char, n) == expected


@given(lines=st.lists(hostile_line, max_size=12), crlf=st.booleans())
@settings(max_examples=300)
def test_crlf_replies_parse_like_lf_replies(lines, crlf):
    lf = "\n".join(ln.replace("\r", "") for ln in lines)
    text = lf.replace("\n", "\r\n") if crlf else lf
    assert find_code_blocks(text) == find_code_blocks(lf)
    assert find_final_answer(text) == find_final_answer(lf)


def test_crlf_reply_runs_its_code():
    reply = "Let me look.\r\n```repl\r\nx = 1\r\nprint(x)\r\n```\r\nFINAL(done)\r\n"
    assert find_code_blocks(reply) == ["x = 1\nprint(x)"]
    assert find_final_answer(reply).value == "done"
    assert find_code_blocks("```repl\rx = 2\r```") == ["x = 2"]


def _charset(item) -> frozenset[int] | None:
    """The code points (below 0x300) one sre item matches, or None when it is not a single char."""
    op, av = item
    name = str(op)
    universe = range(0x300)
    if name == "LITERAL":
        return frozenset([av])
    if name == "NOT_LITERAL":
        return frozenset(c for c in universe if c != av)
    if name == "ANY":
        return frozenset(c for c in universe if c != 10)
    if name == "IN":
        chars: set[int] = set()
        negate = False
        probe = {"CATEGORY_DIGIT": str.isdigit, "CATEGORY_SPACE": str.isspace,
                 "CATEGORY_WORD": lambda ch: ch.isalnum() or ch == "_"}
        for sub_op, sub_av in av:
            sub = str(sub_op)
            if sub == "NEGATE":
                negate = True
            elif sub == "LITERAL":
                chars.add(sub_av)
            elif sub == "RANGE":
                chars.update(range(sub_av[0], min(sub_av[1], 0x2FF) + 1))
            elif sub == "CATEGORY":
                key = str(sub_av).replace("CATEGORY_UNI_", "CATEGORY_")
                if key in probe:
                    chars.update(c for c in universe if probe[key](chr(c)))
                else:  # CATEGORY_NOT_*: the complement of its positive category
                    test = probe.get(key.replace("NOT_", ""), str.isspace)
                    chars.update(c for c in universe if not test(chr(c)))
        return frozenset(c for c in universe if c not in chars) if negate else frozenset(chars)
    return None


def _ambiguous_repeats(seq) -> list[str]:
    """Pairs of unbounded single-character repeats that can split one run of characters between
    them (only empty-matching items in between): the shape that backtracks quadratically."""
    found: list[str] = []
    flat = []
    for op, av in seq:  # inline groups so ``([ \t]*)`` counts like ``[ \t]*``
        if str(op) == "SUBPATTERN":
            flat.extend(av[-1])
        else:
            flat.append((op, av))
    open_repeats: list[frozenset[int]] = []
    for op, av in flat:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            lo, hi, body = av
            if str(body[0][0]) == "SUBPATTERN" or len(body) != 1:
                found += _ambiguous_repeats(body)
                open_repeats = []
                continue
            chars = _charset(body[0])
            if chars is not None and hi == _sre_parser().MAXREPEAT:
                found += [f"{sorted(chars & prev)[:5]}" for prev in open_repeats if chars & prev]
                open_repeats = ([] if lo else open_repeats) + [chars]
            elif lo:
                open_repeats = []
        elif name == "BRANCH":
            for alt in av[1]:
                found += _ambiguous_repeats(alt)
            open_repeats = []
        elif name not in ("AT",):
            open_repeats = []
    return found


def _sre_parser():
    return getattr(re, "_parser", None) or __import__("sre_parse")


def _parse(pattern: re.Pattern[str]):
    return _sre_parser().parse(pattern.pattern, pattern.flags)


def test_the_structural_check_catches_the_old_fence_regex():
    assert _ambiguous_repeats(_parse(_REFERENCE_OPEN))
    assert _ambiguous_repeats(_parse(re.compile(r"^a*[a-z]*$")))
    assert not _ambiguous_repeats(_parse(re.compile(r"^[ \t]*x[a-z]*\)[ .]*$")))


def test_no_parser_regex_can_backtrack_quadratically():
    patterns = [v for v in vars(parsing).values() if isinstance(v, re.Pattern)]
    assert patterns, "the parser's regular expressions moved: point this test at them"
    for pattern in patterns:
        assert _ambiguous_repeats(_parse(pattern)) == [], pattern.pattern


@given(line=hostile_line, n=st.integers(1, 4))
@settings(max_examples=200)
def test_hostile_reply_results_match_a_line_by_line_reference(line, n):
    # A reply of the same hostile line repeated, then a real block: the block is always found
    # unless the hostile line is itself an unclosed opener (then nothing after it is code).
    reply = "\n".join([line] * n) + "\n```repl\nz = 3\n```"
    blocks = find_code_blocks(reply)
    opener = parsing._opening(line.replace("\r", ""))
    if opener is None and "\r" not in line:
        assert blocks == ["z = 3"]
    find_final_answer(reply)  # must not raise on any line
