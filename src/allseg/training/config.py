"""The training recipe: a TOML file validated by pydantic, with CLI overrides.

A recipe lists data sources (dataset folders in any reader format, or synthetic data
generated on the fly) and the settings of each stage. ``configs/default.toml`` is the
recipe of the bundled model.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    model_validator,
)

from allseg.errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SynthSource(_Strict):
    """Synthetic data written by ``allseg synth`` into the run folder before training."""

    layout: Literal["allidb1", "allidb2", "masks"] = "allidb1"
    n: int = Field(10, ge=1, le=100_000)
    seed: int = 0
    um_per_px: float | tuple[float, float] | None = None
    #: The red cells' stained diameters (µm), sampled per cell; by default those of real
    #: photos (``allseg.synth.cells.RED_CELL_UM``). Their number does not change with it.
    red_cell_um: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _red_cells_in_order(self) -> SynthSource:
        if self.red_cell_um is not None and not 0 < self.red_cell_um[0] <= self.red_cell_um[1]:
            raise ValueError("red_cell_um must be two diameters in µm, low then high, with "
                             f"0 < low <= high; got {self.red_cell_um[0]:g} and "
                             f"{self.red_cell_um[1]:g}")
        return self


class DataSource(_Strict):
    """One dataset: a folder (``path``) or synthetic data (``synth``)."""

    path: str | None = None
    format: str = "auto"
    split: str | None = None
    synth: SynthSource | None = None
    #: Pixel size of the dataset when known; otherwise estimated per image from red cells.
    um_per_px: float | None = Field(None, gt=0)
    #: How many times each image counts per epoch (oversampling small datasets).
    repeat: int = Field(1, ge=1, le=1000)
    #: Image file stems never used for training (e.g. a held-out test set); shell-style
    #: patterns such as ``"raabin_*"`` leave out every match (a whole source, say).
    exclude: list[str] = []
    #: ``[k, i]``: hold out every image whose position in the sorted listing is i mod k
    #: (fold i of a k-fold split by image), e.g. to report cross-validated scores.
    hold_out: tuple[int, int] | None = None
    #: Use this source's cell labels for the classifier (only datasets with real blast labels).
    cell_labels: bool = True
    #: Train the segmenter on this source's masks.
    masks: bool = True
    #: A CSV of per-image labels (``file`` + ``class`` and/or ``patient``/``slide``
    #: columns, see :mod:`allseg.data.labels_table`); a path relative to the dataset
    #: folder or absolute.
    labels_csv: str | None = None
    #: Class codes of ``labels_csv`` to names, e.g. ``{ 2 = "lymphocyte" }``.
    class_names: dict[str, str] | None = None
    #: A regular expression on the file stem whose first group (or whole match) names the
    #: patient or slide, e.g. ``"^(P\\d+)_"``; images of one patient stay on one side of
    #: the train/validation split.
    group_pattern: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> DataSource:
        if (self.path is None) == (self.synth is None):
            raise ValueError("each [[data]] entry needs exactly one of 'path' or 'synth'")
        if self.hold_out is not None and not 0 <= self.hold_out[1] < self.hold_out[0]:
            raise ValueError(f"hold_out {list(self.hold_out)} must be [k, i] with 0 <= i < k")
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as exc:
                raise ValueError(f"group_pattern {self.group_pattern!r}: {exc}") from exc
        return self

    def group_of(self, stem: str) -> str | None:
        """The patient or slide ``group_pattern`` finds in a file stem, or None.

        >>> DataSource(path="x", group_pattern=r"^(P\\d+)_").group_of("P12_cell3")
        'P12'
        """
        if self.group_pattern is None:
            return None
        match = re.search(self.group_pattern, stem)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)

    def excludes(self, stem: str) -> bool:
        """Whether ``exclude`` names this file stem or a pattern it matches.

        >>> DataSource(path="x", exclude=["Im006_1", "raabin_*"]).excludes("raabin_01")
        True
        """
        return any(fnmatch.fnmatchcase(stem, pattern) for pattern in self.exclude)

    def held_out(self, position: int) -> bool:
        """Whether the image at this position of the sorted listing is held out."""
        return self.hold_out is not None and position % self.hold_out[0] == self.hold_out[1]


class StageConfig(_Strict):
    arch: str
    kwargs: dict[str, Any] = {}
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    steps_per_epoch: int = Field(50, ge=1)
    patience: int = Field(5, ge=1)
    #: Fine-tuning: start from this model folder's network of the stage ("default" is the
    #: bundled model), its architecture and weights, instead of a fresh ``arch``.
    init_from: str | None = None


class SegmenterConfig(StageConfig):
    arch: str = "unet_small"
    kwargs: dict[str, Any] = {"base_channels": 16}
    #: Synthetic fields (with exact instance masks; a seed no data source uses) on which
    #: the centre threshold that splits touching cells is chosen after training
    #: (:mod:`allseg.training.centre_threshold`); None keeps 0.5.
    centre_tuning: SynthSource | None = None
    #: Share of training patches whose red cells get the nuclei's hue
    #: (:func:`allseg.training.augment.stain_red_cells_like_nuclei`).
    purple_red_cells: float = Field(0.0, ge=0, le=1)
    #: Share of training patches centred on a sample's darkest background pixels, where
    #: red cells overlap (:func:`allseg.training.datasets.dark_background_pixels`).
    dark_background: float = Field(0.0, ge=0, le=1)


class ClassifierConfig(StageConfig):
    arch: str = "cnn_classifier"
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    #: Loss weight of normal cells by type (``{ lymphocyte = 3.0 }``: the blast's
    #: look-alike counts three times); types the data does not name weigh 1.
    type_weights: dict[str, PositiveFloat] = {}
    #: Weigh the CNN with the cell's morphometry in a logistic regression fitted on the
    #: validation cells (:mod:`allseg.models.blast_head`); needs a segmenter in the model.
    blast_head: bool = True
    #: Balance each crop's background to neutral grey before the CNN sees it
    #: (:func:`allseg.postprocess.crops.balance_background`).
    crop_background: bool = False


class TrainConfig(_Strict):
    stage: Literal["segmenter", "classifier", "both"] = "both"
    data: list[DataSource] = []
    out: str = "runs/model"
    seed: int = 0
    #: Pixel size every image is resampled to before the segmenter sees it.
    canonical_um_per_px: float = Field(0.3, gt=0)
    #: Segmenter training patch side in canonical pixels.
    patch_size: int = Field(256, ge=32)
    #: Classifier crop: side in pixels and the physical field of view it shows.
    crop_size: int = Field(96, ge=32)
    crop_um: float = Field(24.0, gt=0)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    folds: int = Field(0, ge=0)
    fold: int = Field(0, ge=0)
    accelerator: str = "auto"
    devices: int | str = "auto"
    #: Lightning strategy: "auto", "ddp" (gloo on CPU, NCCL on GPU), ...
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: str = "auto"
    num_workers: int = Field(0, ge=0)
    segmenter: SegmenterConfig = SegmenterConfig()
    classifier: ClassifierConfig = ClassifierConfig()

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.folds and self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} out of range for {self.folds} folds")
        return self

    def stages(self) -> list[str]:
        return ["segmenter", "classifier"] if self.stage == "both" else [self.stage]


def _parse_value(text: str) -> Any:
    """Parse an override value as TOML (numbers, booleans, arrays) or fall back to a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):  # RecursionError: absurdly nested
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a raw config dict; a number picks a list item
    (``data.0.hold_out=[5,1]`` changes the first ``[[data]]`` entry).

    >>> apply_overrides({"segmenter": {"epochs": 5}}, ["segmenter.epochs=2", "out=x"])
    {'segmenter': {'epochs': 2}, 'out': 'x'}
    >>> apply_overrides({"data": [{"path": "a"}]}, ["data.0.hold_out=[5, 1]"])
    {'data': [{'path': 'a', 'hold_out': [5, 1]}]}
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form key=value")
        node: Any = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            if isinstance(node, list):
                node = _list_item(node, part, item)
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ValueError(f"override {item!r}: {part!r} is not a table")
        if isinstance(node, list):
            raise ValueError(f"override {item!r}: name a key inside the list item, e.g. "
                             f"{key.strip()}.path=...")
        node[leaf] = _parse_value(value.strip())
    return raw


def _list_item(items: list, index: str, override: str) -> Any:
    if not index.isdigit() or int(index) >= len(items):
        raise ValueError(f"override {override!r}: {index!r} is not an index of a list of "
                         f"{len(items)}")
    return items[int(index)]


def load_config(path: str | Path | None, overrides: list[str] = (),
                extra_data: list[str] = ()) -> TrainConfig:
    """Read a TOML recipe (or start from defaults), add ``extra_data`` folders as
    ``[[data]]`` entries after the recipe's own (so ``data.N`` overrides reach them),
    apply overrides and validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(path, "config file not found") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise InputError(path, f"not valid TOML: {exc}") from exc
    if extra_data:
        raw["data"] = [*raw.get("data", []), *({"path": str(d)} for d in extra_data)]
    try:
        raw = apply_overrides(raw, list(overrides))
        return TrainConfig.model_validate(raw)
    except (ValidationError, ValueError) as exc:
        raise InputError(path or "<overrides>", f"invalid training config: {exc}") from exc
