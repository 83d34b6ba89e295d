"""The parser is the single source of truth for options: each has help, each is documented."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pmigrate.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "reference.md"


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    top = build_parser()
    found = [("pmigrate", top)]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"pmigrate {name}", p) for name, p in action.choices.items()]
    return found


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        yield action


@pytest.mark.parametrize("name,parser", _parsers(), ids=[n for n, _ in _parsers()])
def test_every_option_has_help(name, parser):
    for action in _options(parser):
        assert action.help and action.help != argparse.SUPPRESS and len(action.help) > 10, (
            f"{name}: {action.option_strings or action.dest} has no help text"
        )


@pytest.mark.parametrize("name,parser", _parsers(), ids=[n for n, _ in _parsers()])
def test_every_option_is_in_the_reference(name, parser):
    text = REFERENCE.read_text(encoding="utf-8")
    missing = []
    for action in _options(parser):
        if action.dest == "help":
            continue
        names = action.option_strings or [action.metavar or action.dest]
        if not any(re.search(rf"`{re.escape(n)}\b", text) for n in names):
            missing.append(names[0])
    assert not missing, f"{name}: options missing from docs/reference.md: {missing}"


@pytest.mark.parametrize("args", [["--help"], ["verify", "--help"], ["fakedb", "--help"]])
def test_help_ends_with_examples(args):
    out = subprocess.run(
        [sys.executable, "-m", "pmigrate", *args], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    tail = out[out.rindex("examples:") :]
    assert len(re.findall(r"^  pmigrate ", tail, flags=re.M)) >= 2
