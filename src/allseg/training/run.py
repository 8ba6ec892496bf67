"""``allseg train``: prepare data, fit each stage, write the model folder."""

from __future__ import annotations

import copy
import importlib.util
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from rich.progress import track
from torch.utils.data import DataLoader

from allseg import __version__
from allseg.data.labels_table import ImageLabels, apply_labels, read_labels_table, stem_key
from allseg.data.readers import open_dataset
from allseg.errors import AllsegError, InputError
from allseg.inference.appearance import as_networks_see_it
from allseg.inference.models import resolve_model_dir
from allseg.inference.monochrome import for_red_cells
from allseg.inference.scale import resolve_scale
from allseg.models import SEG_CLASSES, build_model, load_model_folder, save_model_folder
from allseg.training import centre_threshold
from allseg.training.blast_head import fit_blast_head
from allseg.training.config import DataSource, TrainConfig
from allseg.training.datasets import CellCropDataset, SegImageDataset, SegPatchDataset
from allseg.training.learning_curve import curve_row, learning_curve, write_curve
from allseg.training.modules import ClassifierModule, SegmenterModule
from allseg.training.samples import (
    cell_samples,
    record_scale,
    seg_sample,
    source_key,
    split_names,
)
from allseg.training.threshold import real_normal_threshold
from allseg.training.validation import classifier_report

#: Default decision thresholds written into every model folder. The smallest leukocyte
#: kept is 25 µm² (5.6 µm across): no whole leukocyte of TXL-PBC is smaller (their boxes
#: hold at least ~30 µm²), while large platelets and platelet clumps of 4-6 µm, once
#: faint photos' levels are spread, came back as small "leukocytes" at 15 µm².
DEFAULT_THRESHOLDS = {"blast_probability": 0.5, "centre": centre_threshold.DEFAULT,
                      "min_cell_area_um2": 25.0}


@dataclass
class StageData:
    """Training and validation samples of one stage, split by image."""

    train: list = field(default_factory=list)
    val: list = field(default_factory=list)


def source_folder(source: DataSource, run_dir: Path) -> Path:
    """The folder of a data source; synthetic sources are generated once into the run."""
    if source.path is not None:
        return Path(source.path)
    from allseg.synth import write_dataset

    s = source.synth
    name = f"synth_{s.layout}_n{s.n}_seed{s.seed}"
    # another draw than the default gets a folder of its own: a folder is never redrawn
    if s.um_per_px is not None:
        scales = s.um_per_px if isinstance(s.um_per_px, tuple) else (s.um_per_px,)
        name += "_px" + "-".join(f"{v:g}" for v in scales)
    if s.red_cell_um is not None:
        name += "_red{:g}-{:g}um".format(*s.red_cell_um)
    folder = run_dir / "data" / name
    done = folder / ".complete"
    if not done.exists():
        write_dataset(s.layout, folder, n=s.n, seed=s.seed, um_per_px=s.um_per_px, progress=True,
                      red_cell_um=s.red_cell_um)
        done.touch()
    return folder


def table_path(source: DataSource, folder: Path) -> Path:
    """``labels_csv`` as given when absolute, else relative to the dataset folder."""
    path = Path(source.labels_csv)
    return path if path.is_absolute() else folder / path


def _labels_table(source: DataSource, folder: Path) -> dict[str, ImageLabels] | None:
    if source.labels_csv is None:
        return None
    return read_labels_table(table_path(source, folder), source.class_names)


def collect_samples(cfg: TrainConfig, run_dir: Path) -> dict[str, StageData]:
    """Read every source once, resample to canonical scale and split by image."""
    per_stage: dict[str, list[tuple[str, object, int]]] = {"segmenter": [], "classifier": []}
    for source in cfg.data:
        wanted = ((source.masks and "segmenter" in cfg.stages())
                  or (source.cell_labels and "classifier" in cfg.stages()))
        if not wanted:  # nothing of this source is used by the stages trained
            continue
        folder = source_folder(source, run_dir)
        dataset = open_dataset(folder, format=source.format, split=source.split)
        table = _labels_table(source, folder)
        unsure: list[str] = []
        unlisted: list[str] = []
        ungrouped: list[str] = []
        for i, path in enumerate(track(dataset.items, description=f"reading {folder.name}")):
            if source.excludes(path.stem) or source.held_out(i):
                continue
            try:
                record = dataset[i]
            except InputError as exc:
                if dataset.strict:
                    raise
                dataset.warn(f"skipped: {exc}")
                continue
            if table is not None:
                if (labels := table.get(stem_key(record.name))) is None:
                    unlisted.append(record.name)
                else:
                    apply_labels(record, labels)
            if source.group_pattern is not None:
                if (group := source.group_of(record.name)) is None:
                    ungrouped.append(record.name)
                record.group = group or record.group
            key = source_key(folder, record.group or record.name)
            first = resolve_scale(for_red_cells(record.image))  # as prediction first reads it
            scale, trusted = record_scale(record, source.um_per_px, first)
            if not trusted:
                unsure.append(record.name)
            record.image = as_networks_see_it(record.image, first.over_exposed)[0]
            if source.masks and "segmenter" in cfg.stages():
                sample = seg_sample(record, scale, cfg.canonical_um_per_px)
                if sample is not None:
                    per_stage["segmenter"].append((key, sample, source.repeat))
            if source.cell_labels and "classifier" in cfg.stages():
                for crop in cell_samples(record, scale, cfg.crop_size, cfg.crop_um,
                                         real=source.path is not None, group=key,
                                         balance=cfg.classifier.crop_background):
                    per_stage["classifier"].append((key, crop, source.repeat))
        if ungrouped:
            warnings.warn(f"{folder}: group_pattern {source.group_pattern!r} names no patient "
                          f"in {len(ungrouped)} file name(s) (e.g. {ungrouped[0]}); each of "
                          "those is split on its own", stacklevel=2)
        if unlisted:
            warnings.warn(f"{table_path(source, folder)}: {len(unlisted)} image(s) of {folder} "
                          f"are not in the labels table (e.g. {unlisted[0]}); their own "
                          "labels are kept", stacklevel=2)
        if unsure:  # once per source, not once per image
            warnings.warn(f"{folder}: the pixel size of {len(unsure)} image(s) (e.g. "
                          f"{unsure[0]}) was estimated with low confidence; set um_per_px "
                          "for this dataset if you know it", stacklevel=2)
    out: dict[str, StageData] = {}
    for stage, items in per_stage.items():
        train_names, _ = split_names([k for k, _, _ in items], cfg.val_fraction, cfg.seed,
                                     cfg.folds, cfg.fold)
        data = StageData()
        for key, sample, repeat in items:
            if key in train_names:
                data.train.extend([sample] * repeat)
            else:
                data.val.append(sample)
        out[stage] = data
    return out


def _loaders(stage: str, cfg: TrainConfig, data: StageData) -> tuple[DataLoader, DataLoader | None]:
    st = getattr(cfg, stage)
    workers = cfg.num_workers
    if stage == "segmenter":
        train_ds = SegPatchDataset(data.train, cfg.patch_size, st.steps_per_epoch * st.batch_size,
                                   cfg.seed, st.purple_red_cells, st.dark_background)
        val_ds = SegImageDataset(data.val) if data.val else None
        val_bs = 1
    else:
        train_ds = CellCropDataset(data.train, augment=True, seed=cfg.seed,
                                   type_weights=st.type_weights)
        val_ds = CellCropDataset(data.val, augment=False) if data.val else None
        val_bs = st.batch_size
    train = DataLoader(train_ds, batch_size=st.batch_size, shuffle=stage == "classifier",
                       num_workers=workers, drop_last=len(train_ds) > st.batch_size,
                       persistent_workers=workers > 0)
    val = DataLoader(val_ds, batch_size=val_bs, num_workers=workers) if val_ds else None
    return train, val


def _loggers(run_dir: Path, stage: str) -> list:
    """CSV logs always; TensorBoard too when it is installed."""
    loggers: list = [CSVLogger(run_dir / "logs", name=stage)]
    if importlib.util.find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir / "tensorboard", name=stage))
    return loggers


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename: a kill mid-write never leaves a
    truncated ``last.ckpt`` for ``--resume`` to choke on."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path,
                        storage_options: object = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except BaseException:  # e.g. a full disk: drop the half file, keep the old checkpoint
            tmp.unlink(missing_ok=True)
            raise


class KeepBestWeights(L.Callback):
    """Hold the best model weights in memory, so none are read back from a pickled checkpoint."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best: float | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        score = metrics.get(self.monitor)
        if score is None:
            return
        better = self.best is None or (score < self.best if self.monitor.endswith("loss")
                                       else score > self.best)
        if better:
            self.best = score
            self.metrics = metrics
            self.state = copy.deepcopy({k: v.detach().cpu()
                                        for k, v in pl_module.model.state_dict().items()})


def fit_stage(stage: str, cfg: TrainConfig, data: StageData, run_dir: Path,
              resume: bool) -> tuple[torch.nn.Module, dict]:
    """Train one stage; return the best model and a summary of how it was trained."""
    if not data.train:
        raise AllsegError(f"no training samples for the {stage}: check that the data sources "
                          "have " + ("masks or boxes" if stage == "segmenter" else "cell labels"))
    if stage == "classifier" and len({s.label for s in data.train}) < 2:
        kind = "blasts" if data.train[0].label else "normal cells"
        raise AllsegError(f"the classifier's {len(data.train)} training cells are all {kind}: "
                          "it needs blasts and normal cells (check the class folders or "
                          "labels, and the warnings about skipped files above)")
    st = getattr(cfg, stage)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = (build_model(st.arch, **st.kwargs) if st.init_from is None
             else _initial_model(stage, cfg, st.init_from))
    module = (SegmenterModule if stage == "segmenter" else ClassifierModule)(model, st)
    train_loader, val_loader = _loaders(stage, cfg, data)
    monitor = "val_score" if val_loader is not None else "train_loss"
    mode = "min" if monitor.endswith("loss") else "max"
    ckpt_dir = run_dir / "checkpoints" / stage
    keep = KeepBestWeights(monitor)
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode,
                                 save_last=True),
                 EarlyStopping(monitor=monitor, mode=mode, patience=st.patience), keep,
                 RichProgressBar()]
    precision = cfg.precision
    if precision == "auto":
        precision = "16-mixed" if torch.cuda.is_available() else "32-true"
    trainer = L.Trainer(max_epochs=st.epochs, accelerator=cfg.accelerator, devices=cfg.devices,
                        strategy=cfg.strategy, num_nodes=cfg.num_nodes,
                        plugins=[AtomicCheckpointIO()],
                        precision=precision, callbacks=callbacks,
                        logger=_loggers(run_dir, stage),
                        limit_train_batches=st.steps_per_epoch, log_every_n_steps=5,
                        num_sanity_val_steps=0, enable_model_summary=False)
    last = ckpt_dir / "last.ckpt"
    started = time.perf_counter()
    trainer.fit(module, train_loader, val_loader,
                ckpt_path=str(last) if resume and last.exists() else None)
    if keep.state is not None:
        model.load_state_dict(keep.state)
    model.eval()
    summary = {"arch": model.arch, "init_from": st.init_from, "epochs_run": trainer.current_epoch,
               "world_size": trainer.world_size, "global_zero": trainer.is_global_zero,
               "seconds": round(time.perf_counter() - started, 1),
               "n_train": len(data.train), "n_val": len(data.val),
               "best": {k: round(v, 4) for k, v in keep.metrics.items()}}
    return model, summary


def _load_matching_folder(cfg: TrainConfig, source: str | Path
                          ) -> tuple[Path, dict[str, torch.nn.Module], dict]:
    """A model folder (``--base-model`` or ``init_from``) whose geometry is the recipe's:
    ``(folder, models, meta)``."""
    folder = resolve_model_dir(source)
    models, meta = load_model_folder(folder)
    _check_same_geometry(cfg, meta, folder)
    return folder, models, meta


def _initial_model(stage: str, cfg: TrainConfig, source: str) -> torch.nn.Module:
    """The network of ``stage`` in the model folder ``source`` (its architecture and
    weights), to fine-tune."""
    folder, models, _ = _load_matching_folder(cfg, source)
    if stage not in models:
        raise InputError(folder, f"has no {stage} to start the {stage} from")
    return models[stage]


def _describe_sources(cfg: TrainConfig) -> list[dict]:
    return [s.model_dump(exclude_defaults=True) for s in cfg.data]


def _check_same_geometry(cfg: TrainConfig, base_meta: dict, base_dir: Path) -> None:
    """A stage kept from a base model must see images as the newly trained one does."""
    for key in ("canonical_um_per_px", "crop_size", "crop_um"):
        if key in base_meta and float(base_meta[key]) != float(getattr(cfg, key)):
            raise InputError(base_dir, f"base model has {key} = {base_meta[key]}, the recipe "
                             f"{getattr(cfg, key)}; set {key} = {base_meta[key]} in the recipe")


def _classifier_figures(cfg: TrainConfig, data: StageData, run_dir: Path, resume: bool,
                        curve: Sequence[float]) -> tuple[torch.nn.Module, dict]:
    """Fit the classifier (after the learning curve's smaller shares, when asked for) and
    add its validation AUC and per-type AUCs to the summary."""
    rows = []
    if curve:
        def fit_share(subset: list, folder: Path) -> torch.nn.Module:
            return fit_stage("classifier", cfg, StageData(subset, data.val), folder, False)[0]

        rows = learning_curve(fit_share, data.train, data.val, [f for f in curve if f < 1],
                              run_dir, cfg.seed)
    model, summary = fit_stage("classifier", cfg, data, run_dir, resume)
    report = classifier_report(model, data.val)
    if report is not None:
        summary["validation"] = report
    if curve:
        rows.append(curve_row(1.0, data.train, len({s.group for s in data.train}), data.val,
                              report))
        write_curve(run_dir, rows)
        summary["learning_curve"] = rows
    return model, summary


def train(cfg: TrainConfig, resume: bool = False, base_model: str | Path | None = None,
          learning_curve_shares: Sequence[float] = ()) -> Path:
    """Train the configured stages and write ``<out>/model`` (config.json + safetensors).

    ``learning_curve_shares`` (e.g. ``[0.1, 0.25, 0.5]``) first trains the classifier on
    those shares of its training patients/images (see :mod:`allseg.training.learning_curve`).
    """
    if learning_curve_shares and "classifier" not in cfg.stages():
        raise AllsegError("a learning curve is drawn for the classifier: train --stage "
                          "classifier or both")
    for stage in cfg.stages():  # a wrong folder fails now, not after reading the data
        if (source := getattr(cfg, stage).init_from) is not None:
            _initial_model(stage, cfg, source)
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = run_dir / "model"
    models: dict[str, torch.nn.Module] = {}
    meta: dict = {"allseg_version": __version__, "canonical_um_per_px": cfg.canonical_um_per_px,
                  "crop_size": cfg.crop_size, "crop_um": cfg.crop_um,
                  "classes": {"segmenter": list(SEG_CLASSES), "classifier": ["other", "blast"]},
                  "thresholds": dict(DEFAULT_THRESHOLDS), "training": {}}
    if base_model is not None:
        _, models, base_meta = _load_matching_folder(cfg, base_model)
        meta.update({k: v for k, v in base_meta.items() if k != "training"})
        meta["training"].update(base_meta.get("training", {}))
    done: set[str] = set()  # stages this run folder already finished
    if resume and (model_dir / "config.json").exists():
        done_models, done_meta = load_model_folder(model_dir)
        # What the finished stages set (thresholds, blast head) carries on; a stage trained
        # again below resets its own keys.
        meta.update({k: v for k, v in done_meta.items() if k != "training"})
        for stage in done_meta.get("training", {}):
            if stage in done_models and stage in cfg.stages():
                models[stage] = done_models[stage]
                meta["training"][stage] = done_meta["training"][stage]
                done.add(stage)
    todo = [s for s in cfg.stages() if s not in done]  # not the base model's records
    is_zero = rank_zero_only.rank == 0
    if todo:
        data = collect_samples(cfg.model_copy(update={"stage": "both"}) if len(todo) == 2
                               else cfg.model_copy(update={"stage": todo[0]}), run_dir)
        for stage in todo:
            if stage == "classifier":
                model, summary = _classifier_figures(cfg, data[stage], run_dir, resume,
                                                     learning_curve_shares)
            else:
                model, summary = fit_stage(stage, cfg, data[stage], run_dir, resume)
            models[stage] = model
            if stage == "classifier":  # a base model's head and threshold were for its CNN
                meta.pop("blast_head", None)
                meta["crop_background"] = cfg.classifier.crop_background
                meta["thresholds"]["blast_probability"] = DEFAULT_THRESHOLDS["blast_probability"]
                if chosen := real_normal_threshold(model, data[stage].val):
                    meta["thresholds"]["blast_probability"] = chosen["threshold"]
                    summary["threshold"] = chosen
            is_zero = summary.pop("global_zero")
            meta["training"][stage] = {**summary, "data": _describe_sources(cfg)}
            if stage == "segmenter":  # a base model's centre threshold was for its network
                meta["thresholds"]["centre"] = DEFAULT_THRESHOLDS["centre"]
            if is_zero:  # one writer under DDP; the others hold identical weights
                save_model_folder(model_dir, models, meta)
                if stage == "classifier" and cfg.classifier.blast_head and "segmenter" in models:
                    _add_blast_head(cfg, data[stage].val, model_dir, models, meta)
    if (is_zero and cfg.segmenter.centre_tuning is not None and "segmenter" in cfg.stages()
            and "centre_threshold" not in meta["training"]["segmenter"]):
        _tune_centre(cfg, run_dir, model_dir, models, meta)
    return model_dir


def _tune_centre(cfg: TrainConfig, run_dir: Path, model_dir: Path, models: dict,
                 meta: dict) -> None:
    """Choose the centre threshold of the saved folder on the recipe's tuning fields."""
    if "classifier" not in models:  # the predictor that measures it needs both stages
        warnings.warn("centre threshold not tuned: the model folder has no classifier "
                      "(train both stages, or pass --base-model)", stacklevel=2)
        return
    fields = source_folder(DataSource(synth=cfg.segmenter.centre_tuning), run_dir)
    chosen = centre_threshold.tune_centre_threshold(model_dir, fields)
    meta["thresholds"]["centre"] = chosen["threshold"]
    meta["training"]["segmenter"]["centre_threshold"] = chosen
    save_model_folder(model_dir, models, meta)


def _add_blast_head(cfg: TrainConfig, val: list, model_dir: Path, models: dict,
                    meta: dict) -> None:
    """Fit the blast head on the validation cells the saved folder measures; keep it (and
    its threshold) in the folder when there were enough cells."""
    head, summary = fit_blast_head(model_dir, val, cfg.crop_um, cfg.classifier.type_weights,
                                   cfg.seed)
    meta["training"]["classifier"]["blast_head"] = summary
    if head is not None:
        meta["blast_head"] = head.to_json()
        if "threshold" in summary:
            meta["thresholds"]["blast_probability"] = summary["threshold"]["threshold"]
    save_model_folder(model_dir, models, meta)
