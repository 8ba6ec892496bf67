"""The command line: help texts, argument errors and the synth command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from allseg.cli import app

runner = CliRunner()
COMMANDS = ("synth", "train", "predict", "evaluate", "export", "serve", "demo", "version")


def test_top_level_help_lists_every_command_and_the_disclaimer() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output
    assert "Research use only" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_explains_itself(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_python_dash_m_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "allseg", "version"], capture_output=True,
                          text=True, check=True)
    from allseg import __version__

    assert done.stdout.strip() == __version__


def test_synth_cli_writes_a_dataset(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "--layout", "masks", "--n", "2", "--seed", "3",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "images").iterdir())) == 2
    assert len(list((tmp_path / "masks").iterdir())) == 2


@pytest.mark.parametrize("args, message", [
    (["synth", "--layout", "nope", "--out", "x"], "unknown layout"),
    (["synth", "--um-per-px", "-1", "--out", "x"], "positive number"),
    (["synth", "--um-per-px", "0.1", "--magnification", "2", "--out", "x"], "not both"),
    (["train"], "no training data"),
])
def test_bad_arguments_say_what_is_wrong(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_error_messages_keep_their_brackets(tmp_path: Path) -> None:
    """A message's "[[data]]" or "[k, i]" is text: rich must not take it for markup."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[data]]\npath = "x"\nsynth = { layout = "masks" }\n', encoding="utf-8")
    result = runner.invoke(app, ["train", "--config", str(recipe), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "each [[data]] entry needs exactly one of 'path' or 'synth'" in result.output


def test_printed_paths_keep_their_brackets(tmp_path: Path) -> None:
    out_dir = tmp_path / "smears[a]"
    result = runner.invoke(app, ["synth", "--layout", "masks", "--n", "1", "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    assert "smears[a]" in result.output.replace("\n", "")


def test_predict_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "contains no image files" in result.output


def test_predict_missing_input_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nothing_here.jpg"
    result = runner.invoke(app, ["predict", str(missing), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "nothing_here.jpg" in result.output and "no such file" in result.output


def test_predict_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    from allseg.demo import bundled_samples

    result = runner.invoke(app, ["predict", str(bundled_samples()[0]), "--model",
                                 str(tmp_path / "m"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "model folder not found" in result.output


def test_predict_with_a_one_stage_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    from allseg.demo import bundled_samples
    from allseg.models import build_model, save_model_folder

    folder = save_model_folder(tmp_path / "m", {"segmenter": build_model(
        "unet_small", base_channels=4, depth=3)}, {"canonical_um_per_px": 0.3})
    result = runner.invoke(app, ["predict", str(bundled_samples()[0]), "--model", str(folder),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "lacks the classifier stage" in result.output


def test_train_init_from_a_missing_folder_names_it(tmp_path: Path) -> None:
    synth = runner.invoke(app, ["synth", "--layout", "masks", "--n", "2", "--seed", "3",
                                "--out", str(tmp_path / "data")])
    assert synth.exit_code == 0, synth.output
    missing = tmp_path / "no_model_here"
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "data"), "--stage",
                                 "segmenter", "--out", str(tmp_path / "run"), "--init-from",
                                 str(missing), "--set", "val_fraction=0.5"])
    assert result.exit_code == 2, result.output
    assert "no_model_here" in result.output


@pytest.mark.parametrize("flag, ran", [([], True), (["--tta"], True), (["--no-tta"], False)])
def test_predict_tta_flags_say_in_the_json_whether_flips_ran(tmp_path: Path, flag: list[str],
                                                               ran: bool) -> None:
    import json

    from allseg.demo import bundled_samples

    sample = bundled_samples()[0]  # a 640 x 480 BCCD photo: small enough for flips by default
    result = runner.invoke(app, ["predict", str(sample), "--out", str(tmp_path), *flag])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / f"{sample.stem}.json").read_text())["model"]["tta"] is ran
