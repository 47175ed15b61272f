"""docs/integrations.md says what it shows: its config example loads as the profiles it names,
and every command it runs exists with the flags it uses."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from rlm_cli.cli import build_parser
from rlm_cli.surface import load_profiles

DOC = Path(__file__).resolve().parents[3] / "docs" / "integrations.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", DOC.read_text(), re.S | re.M)


def test_the_config_example_loads_as_profiles():
    (toml,) = blocks("toml")
    profiles = load_profiles(tomllib.loads(toml), where="docs/integrations.md")
    assert list(profiles) == ["fast", "deep", "local"]
    assert profiles["fast"].rlm_kwargs()["max_budget"] == 0.5
    assert profiles["deep"].rlm_kwargs()["environment"] == "docker"
    assert profiles["local"].rlm_kwargs()["backend_kwargs"] == {
        "api_key": "none", "base_url": "http://127.0.0.1:8080/v1", "model_name": "qwen2.5-coder"}


def rlm_commands() -> list[list[str]]:
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("rlm "):
                out.append(line.split()[1:])
            elif " -- rlm " in line:
                out.append(line.split(" -- rlm ")[1].split())
    return out


@pytest.mark.parametrize("argv", rlm_commands(), ids=" ".join)
def test_every_rlm_command_of_the_page_parses(argv):
    args = build_parser().parse_args(argv)
    assert args.func.__module__ in ("rlm_serve.cli", "rlm_mcp.cli")
