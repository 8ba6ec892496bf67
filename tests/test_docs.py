"""The docs are true to the CLI: every allseg command line in README and docs/ uses a real
command and real options, and the README's first-model walkthrough runs as written. (The
README's Python example runs as a doctest; `make docs-check` runs every documented command.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from allseg.cli import app

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from docs_check import command_lines, free_port, serving  # noqa: E402  (shared with docs-check)

runner = CliRunner()


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


def readme_block(heading: str) -> list[str]:
    """The command lines of the first bash block under a README heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split(" #")[0].strip() for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_readme_first_model_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Every line of "Your first model in five minutes", run as a newcomer would; the
    server is started, asked for its page and model, and stopped."""
    lines = readme_block("Your first model in five minutes (synthetic data)")
    assert any(" serve" in line for line in lines) and len(lines) >= 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for line in lines:
        args = shlex.split(line)
        assert args[0] == ".venv/bin/allseg", line
        cmd = [sys.executable, "-m", "allseg", *args[1:]]
        if args[1] == "serve":
            _check_server([*cmd, "--port", str(free_port())], tmp_path, env)
            continue
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
    report = tmp_path / "first" / "eval" / "report.html"
    assert report.is_file() and "Research use only" in report.read_text(encoding="utf-8")


def _check_server(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    with serving(cmd, cwd, env) as base:
        with urllib.request.urlopen(f"{base}/v1/model") as reply:
            model = json.loads(reply.read())
        with urllib.request.urlopen(f"{base}/") as reply:
            assert reply.status == 200 and b"<html" in reply.read().lower()
    assert model["name"] == "model"  # first/run/model, not the bundled "default"
