"""Self-describing model folder (StarDist style): ``config.json`` + one safetensors per stage.

```
model/
  config.json            schema version, allseg version, stages, free-form meta
  segmenter.safetensors  weights of the "segmenter" stage
  classifier.safetensors weights of the "classifier" stage
```
A model folder is something users download, so loading treats it as untrusted input:
the config is validated, weights are read with safetensors only (pickle can run code),
and every tensor name and shape is checked before any real allocation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

import allseg
from allseg.errors import ModelError
from allseg.io.atomic import write_atomic, write_json_atomic
from allseg.models.blocks import AllsegModel
from allseg.models.registry import ARCHITECTURES, build_model

SCHEMA_VERSION = 1
CONFIG_NAME = "config.json"
STAGES = ("segmenter", "classifier")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30
MAX_PARAMETERS = 100_000_000  # ~400 MB of float32; the bundled models are < 10 M


class StageEntry(BaseModel):
    """One network of the pipeline, as written in config.json."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    task: Literal["segment", "classify"]
    config: dict[str, Any]
    weights: str

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        return arch

    @field_validator("weights")
    @classmethod
    def _plain_safetensors_name(cls, name: str) -> str:
        if "/" in name or "\\" in name or name in ("", ".", "..") or name.startswith("."):
            raise ValueError(f"weights must be a plain file name inside the folder; got {name!r}")
        if not name.endswith(".safetensors"):
            raise ValueError(f"weights must be a .safetensors file (pickle formats are refused); "
                             f"got {name!r}")
        return name


class FolderConfig(BaseModel):
    """The whole config.json."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1]
    allseg_version: str
    stages: dict[str, StageEntry]
    meta: dict[str, Any] = {}

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: dict[str, StageEntry]) -> dict[str, StageEntry]:
        if not stages:
            raise ValueError("a model folder needs at least one stage")
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
        return stages


def save_model_folder(folder: str | Path, models: dict[str, AllsegModel],
                      meta: dict[str, Any]) -> Path:
    """Write ``<stage>.safetensors`` for each model, then ``config.json`` (all atomic).

    config.json is written last, so a folder with a config always has its weights.
    ``meta`` is free-form JSON (classes, um_per_px, crop size, thresholds, metrics, ...).
    """
    folder = Path(folder)
    stages = {
        stage: StageEntry(arch=model.arch, task=model.task, config=model.config,
                          weights=f"{stage}.safetensors")
        for stage, model in models.items()
    }
    config = FolderConfig(schema_version=SCHEMA_VERSION, allseg_version=allseg.__version__,
                          stages=stages, meta=meta)
    for stage, model in models.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        write_atomic(folder / stages[stage].weights,
                     lambda tmp, t=tensors, s=stage: save_file(t, str(tmp), metadata={"stage": s}))
    write_json_atomic(folder / CONFIG_NAME, config.model_dump(mode="json"))
    return folder


def load_model_folder(folder: str | Path) -> tuple[dict[str, AllsegModel], dict[str, Any]]:
    """Validate and load a model folder; returns ``({stage: model in eval mode}, meta)``.

    Raises ModelError (naming the file at fault) for anything missing, malformed or unsafe.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: model folder not found")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise ModelError(f"{folder / pickles[0]}: refusing a model folder with pickle "
                         f"checkpoints ({', '.join(pickles)}); allseg loads only .safetensors "
                         "weights described by config.json (pickle files can run code)")
    config = _read_config(folder / CONFIG_NAME)
    models = {stage: _load_stage(folder, entry) for stage, entry in config.stages.items()}
    return models, config.meta


def _read_config(path: Path) -> FolderConfig:
    if not path.is_file():
        raise ModelError(f"{path}: missing; a model folder needs a config.json")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a model config")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return FolderConfig.model_validate(raw)
    except ValidationError as exc:
        raise ModelError(f"{path}: invalid model config:\n{exc}") from exc


def _load_stage(folder: Path, entry: StageEntry) -> AllsegModel:
    path = folder / entry.weights
    if not path.is_file():
        raise ModelError(f"{path}: weights file named in {CONFIG_NAME} is missing")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ModelError(f"{path}: larger than {MAX_WEIGHTS_BYTES} bytes; refusing to load")
    expected = _expected_shapes(folder / CONFIG_NAME, entry)
    _check_tensor_shapes(path, expected)
    model = build_model(entry.arch, **entry.config)
    model.load_state_dict(load_file(path), strict=True)
    return model.eval()


def _expected_shapes(config_path: Path, entry: StageEntry) -> dict[str, tuple[int, ...]]:
    """Build the model on the meta device (no memory) to learn its tensor shapes.

    This also bounds the size: an absurd config is refused before anything is allocated.
    """
    try:
        with torch.device("meta"):
            model = build_model(entry.arch, **entry.config)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{config_path}: cannot build {entry.arch} from config "
                         f"{entry.config}: {exc}") from exc
    if model.task != entry.task:
        raise ModelError(f"{config_path}: {entry.arch} is a {model.task!r} model, config says "
                         f"{entry.task!r}")
    n_params = sum(p.numel() for p in model.parameters())
    if n_params > MAX_PARAMETERS:
        raise ModelError(f"{config_path}: {entry.arch} with config {entry.config} has "
                         f"{n_params:,} parameters (limit {MAX_PARAMETERS:,})")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_tensor_shapes(path: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """Compare the safetensors header with the model; reads no tensor data."""
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ModelError(f"{path}: tensor names do not match the model; missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if found[name] != shape:
            raise ModelError(f"{path}: tensor {name!r} has shape {list(found[name])}, "
                             f"the model needs {list(shape)}")
