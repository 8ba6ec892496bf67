"""A model folder is untrusted input: every bad one is refused with the file named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from allseg.errors import ModelError
from allseg.models import build_model, load_model_folder, save_model_folder

META = {"classes": ["background", "cytoplasm", "nucleus"], "um_per_px": 0.5, "crop_size": 96,
        "thresholds": {"blast": 0.5}}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    models = {"segmenter": build_model("unet_small", base_channels=4, depth=2),
              "classifier": build_model("cnn_classifier", width=4)}
    return save_model_folder(tmp_path / "model", models, META)


def edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def refused(folder: Path, *fragments: str) -> None:
    with pytest.raises(ModelError) as info:
        load_model_folder(folder)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_round_trip_keeps_meta_and_versions(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    assert config["schema_version"] == 1 and config["allseg_version"]
    assert config["stages"]["segmenter"] == {
        "arch": "unet_small", "task": "segment", "config": {"base_channels": 4, "depth": 2},
        "weights": "segmenter.safetensors"}
    models, meta = load_model_folder(folder)
    assert meta == META and set(models) == {"segmenter", "classifier"}
    assert not list(folder.glob("*.tmp*"))  # atomic writes leave no temporaries


def test_refuses_pickle_checkpoints(folder: Path):
    torch.save({"w": torch.zeros(1)}, folder / "segmenter.pth")
    refused(folder, "segmenter.pth", "pickle")


def test_refuses_pickle_weights_name(folder: Path):
    edit_config(folder, lambda c: c["stages"]["segmenter"].update(weights="segmenter.ckpt"))
    refused(folder, "config.json", ".safetensors")


@pytest.mark.parametrize("name", ["../segmenter.safetensors", "/etc/x.safetensors",
                                  "sub\\x.safetensors", ".."])
def test_refuses_path_traversal(folder: Path, name: str):
    edit_config(folder, lambda c: c["stages"]["segmenter"].update(weights=name))
    refused(folder, "config.json", "plain file name")


def test_refuses_unknown_arch(folder: Path):
    edit_config(folder, lambda c: c["stages"]["segmenter"].update(arch="evil_net"))
    refused(folder, "config.json", "evil_net", "unet_small")


def test_refuses_unknown_stage_and_schema(folder: Path):
    edit_config(folder, lambda c: c["stages"].update(extra=c["stages"]["segmenter"]))
    refused(folder, "config.json", "extra")
    edit_config(folder, lambda c: (c["stages"].pop("extra"), c.update(schema_version=99)))
    refused(folder, "config.json", "schema_version")


def test_refuses_absurd_config_before_allocating(folder: Path):
    edit_config(folder, lambda c: c["stages"]["segmenter"]["config"].update(base_channels=10**5))
    refused(folder, "config.json", "parameters")


def test_refuses_bad_constructor_kwargs(folder: Path):
    edit_config(folder, lambda c: c["stages"]["segmenter"]["config"].update(colour="red"))
    refused(folder, "config.json", "colour")


def test_refuses_task_mismatch(folder: Path):
    edit_config(folder, lambda c: c["stages"]["segmenter"].update(task="classify"))
    refused(folder, "config.json", "segment")


def test_refuses_mismatched_tensor_shape(folder: Path):
    edit_config(folder, lambda c: c["stages"]["segmenter"]["config"].update(base_channels=8))
    refused(folder, "segmenter.safetensors", "shape")


def test_refuses_missing_or_extra_tensors(folder: Path):
    save_file({"head.weight": torch.zeros(4, 4, 1, 1), "evil": torch.zeros(10**3)},
              str(folder / "segmenter.safetensors"))
    refused(folder, "segmenter.safetensors", "evil")


def test_refuses_corrupt_weights(folder: Path):
    (folder / "classifier.safetensors").write_bytes(b"\xff" * 64)
    refused(folder, "classifier.safetensors", "safetensors")


def test_refuses_missing_weights(folder: Path):
    (folder / "classifier.safetensors").unlink()
    refused(folder, "classifier.safetensors", "missing")


def test_refuses_missing_config(folder: Path):
    (folder / "config.json").unlink()
    refused(folder, "config.json", "missing")


def test_refuses_malformed_json(folder: Path):
    (folder / "config.json").write_text("{not json")
    refused(folder, "config.json", "JSON")


def test_refuses_missing_folder(tmp_path: Path):
    refused(tmp_path / "nowhere", "nowhere", "not found")
