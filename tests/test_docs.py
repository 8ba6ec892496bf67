"""The docs are true to the CLI: every allseg command line in README and docs/ uses a real
command and real options. (The README's Python example runs as a doctest.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from allseg.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
runner = CliRunner()


def command_lines() -> list[tuple[str, str]]:
    """(file name, command line) for every ``allseg`` call in a bash block."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if re.search(r"(^|\s|/)allseg\s", line) and "make " not in line:
                    found.append((doc.name, line))
    return found


@pytest.mark.parametrize("doc, line", command_lines())
def test_documented_command_uses_real_options(doc: str, line: str) -> None:
    tokens = shlex.split(line)
    start = next(i for i, t in enumerate(tokens) if t == "allseg" or t.endswith("/allseg"))
    args = tokens[start + 1:]
    if not args or args[0].startswith("-"):
        return  # `allseg --help`
    help_text = runner.invoke(app, [args[0], "--help"], terminal_width=200).output
    assert "Usage" in help_text, f"{doc}: unknown command in {line!r}"
    for option in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
        assert option in help_text, f"{doc}: {option} is not an option of {args[0]!r}: {line!r}"


def test_docs_have_commands_to_check() -> None:
    assert len(command_lines()) > 20
