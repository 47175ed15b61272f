"""What ``rlm run`` reads and checks before a run starts: the context (files, piped stdin), the
prompt, the base URL, ``-o`` options; and how messages written for Python users read on the
command line.

Every check raises :class:`UsageError` (exit status 2) with a message in the CLI's terms.
Standard library only; nothing here runs a model.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlsplit

__all__ = ["UsageError", "check_base_url", "check_options", "check_prompt", "cli_words",
           "parse_value", "read_contexts", "stdin_is_piped"]


class UsageError(Exception):
    """A wrong invocation: the CLI prints the message and exits with status 2."""


def parse_value(raw: str) -> Any:
    """A value given on the command line: JSON when it parses (``0.2``, ``true``, ``["a"]``),
    else the string itself."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def stdin_is_piped(stream: IO[Any] | None = None) -> bool:
    """True when stdin is a pipe, a socket or a redirected regular file (``cat f | rlm ...``,
    ``rlm ... < f``); False for a terminal, ``/dev/null`` and a closed stdin, which are never
    read (reading a terminal would wait for typing)."""
    stream = stream or sys.stdin
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISREG(mode)


def _decode(data: bytes, where: str, flag: str, encoding: str) -> str:
    if b"\x00" in data[:65536]:
        raise UsageError(
            f"{where} looks binary (it contains NUL bytes), and a context is text. Convert it "
            f"first (e.g. pdftotext FILE -, or base64 FILE | rlm PROMPT to give the model the "
            f"encoded bytes), or load the bytes in Python: RLM().completion(data).")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{where} is not {encoding} text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}). If it is text in another encoding, name it: {flag} FILE "
            f"--encoding latin-1 (or cp1252, utf-16, ...); if it is binary, convert it to text "
            f"first.") from None
    except LookupError:
        raise UsageError(f"unknown --encoding {encoding!r}; use a Python codec name such as "
                         "utf-8, latin-1 or utf-16.") from None


def read_contexts(specs: list[str], *, as_dict: bool = False, encoding: str = "utf-8",
                  stdin: IO[Any] | None = None) -> Any:
    """The context of ``--context FILE`` (repeatable, ``-`` for stdin): one file gives a string,
    several a list of strings in the order given (``as_dict``: a dict by file name)."""
    texts: dict[str, str] = {}
    for spec in specs:
        if spec == "-":
            stream = stdin or sys.stdin
            raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
            name, where = "-", "the context piped on stdin"
        else:
            try:
                with open(spec, "rb") as fh:
                    data = fh.read()
            except IsADirectoryError:
                raise UsageError(f"--context {spec!r} is a directory; pass its files, e.g. "
                                 f"--context {spec.rstrip('/')}/*.txt --context-dict") from None
            except OSError as exc:
                raise UsageError(f"cannot read --context {spec!r}: {exc.strerror}") from None
            name, where = spec, f"--context {spec!r}"
        if name in texts:
            raise UsageError(f"--context {spec!r} is given twice.")
        texts[name] = _decode(data, where, "--context", encoding)
    if as_dict:
        return {os.path.basename(k) if k != "-" else "stdin": v for k, v in texts.items()} \
            if len({os.path.basename(k) for k in texts}) == len(texts) else dict(texts)
    values = list(texts.values())
    return values[0] if len(values) == 1 else values


def check_prompt(prompt: str | None) -> str:
    if prompt is None or not prompt.strip():
        raise UsageError("the prompt is empty; say what you want, e.g. rlm \"How many lines say "
                         "ERROR?\" --context app.log (or pipe the context: cat app.log | rlm "
                         "\"How many lines say ERROR?\").")
    return prompt


def check_base_url(url: str, flag: str = "--base-url") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        guess = url if "://" not in url else url.split("://", 1)[1]
        raise UsageError(f"{flag} {url!r} is not an http(s) URL; write the scheme, e.g. "
                         f"{flag} http://{guess}")
    return url


def check_options(options: Mapping[str, Any], accepted: Mapping[str, str] | None,
                  backend: str) -> None:
    """``-o`` names against the backend's declared ``sampling_options`` (None: not declared)."""
    if accepted is None:
        return
    bad = [k for k in options if k not in accepted]
    if not bad:
        return
    import difflib

    close = difflib.get_close_matches(bad[0], list(accepted), n=1, cutoff=0.6)
    hint = f" Did you mean -o {close[0]}?" if close else ""
    valid = "\n".join(f"  {k:<22} {v}" for k, v in sorted(accepted.items()))
    raise UsageError(f"the {backend} backend has no option {bad[0]!r}.{hint} Valid -o options "
                     f"(rlm models lists them per backend):\n{valid}")


_KWARGS = re.compile(r"(backend|environment)_kwargs=\{([^{}]*)\}")
_PAIR = re.compile(r"""['"](\w+)['"]\s*:\s*((?:'[^']*'|"[^"]*"|[^,])+)""")
_FLAG = {"backend": "--backend-arg", "environment": "--env-arg"}
_ARGS = {"backend=": "--backend ", "environment=": "--env ", "max_iterations=": "--max-iterations ",
         "max_budget=": "--max-budget ", "max_timeout=": "--timeout ", "max_depth=": "--max-depth ",
         "cell_timeout=": "--cell-timeout ", "max_tokens=": "--max-tokens ",
         "max_errors=": "--max-errors "}


def cli_words(message: str) -> str:
    """A message written for Python users, in the CLI's terms: ``backend_kwargs={"api_key": ...}``
    becomes ``--backend-arg api_key=...``, ``environment_kwargs={'k': v}`` ``--env-arg k=v``,
    ``max_iterations=`` ``--max-iterations``; repository paths (``scripts/...``) are dropped."""
    def kwargs(m: re.Match[str]) -> str:
        flag = _FLAG[m.group(1)]
        pairs = _PAIR.findall(m.group(2))
        if not pairs:
            return f"{flag} KEY=VALUE"
        return " ".join(f"{flag} {k}={v.strip().strip(chr(39)).strip(chr(34))}" for k, v in pairs)

    text = _KWARGS.sub(kwargs, message)
    text = re.sub(r"(backend|environment)_kwargs=\{[^}]*\{[^}]*\}[^}]*\}",
                  lambda m: f"{_FLAG[m.group(1)]} KEY=VALUE", text)
    for word, flag in _ARGS.items():
        text = re.sub(rf"(?<![\w.-]){re.escape(word)}", flag, text)
    text = re.sub(r"\s*\(?\bscripts/[\w./-]+\.sh[^;,)]*\)?", "", text)
    return text
