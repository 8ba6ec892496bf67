"""``allseg evaluate``: predict a labelled dataset, score it and write the results."""

from __future__ import annotations

import csv
import io
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allseg import DISCLAIMER, __version__
from allseg.data.readers import open_dataset
from allseg.evaluation.report import truth_overlay, worst_images, write_report
from allseg.evaluation.score import EvalResult, evaluate_dataset
from allseg.evaluation.splits import select
from allseg.io.atomic import write_json_atomic, write_text_atomic


def load_predictor(model: str, baseline: str | None, backend: str = "auto",  # noqa: ANN201
                   predictions: str | Path | None = None):
    """The network predictor, the classical baseline (``baseline == "classical"``), or a
    folder of earlier ``allseg predict`` outputs (``predictions``)."""
    if predictions is not None:
        from allseg.evaluation.saved import SavedPredictions

        return SavedPredictions(predictions)
    if baseline == "classical":
        from allseg.inference.classical import ClassicalPredictor

        return ClassicalPredictor()
    if baseline is not None:
        raise ValueError(f"unknown baseline {baseline!r}; the only one is 'classical'")
    from allseg.inference.predictor import Predictor

    return Predictor(model, backend=backend)


def per_image_csv(result: EvalResult) -> str:
    """Every per-image figure, one row per image, columns in first-seen order; the per-cell
    lists (``cell_scores``, ``cell_labels``) are no spreadsheet cells and are left out."""
    columns: list[str] = []
    for row in result.per_image:
        columns += [k for k, v in row.items() if k not in columns and not isinstance(v, list)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result.per_image)
    return buffer.getvalue()


#: Per-image figures that rank the worst images for the report's gallery, in order of use.
GALLERY_KEYS = ("cell_dice", "blast_f1", "box_f1", "image_score")


def gallery(predictor, dataset, per_image: list[dict], um_per_px: float | None,  # noqa: ANN001
            n: int = 4) -> list[tuple[str, Any, Any]]:
    """Truth and prediction overlays of the ``n`` worst images (predicted once more)."""
    from allseg.outputs.overlay import draw_overlay

    key = next((k for k in GALLERY_KEYS if any(r.get(k) is not None for r in per_image)), None)
    if key is None:
        return []
    index = {p.stem: i for i, p in enumerate(dataset.items)}
    items = []
    for name in worst_images(per_image, key, n):
        record = dataset[index[name]]
        predicted = predictor.predict_image(record.image, name, um_per_px=um_per_px)
        row = next(r for r in per_image if str(r["image"]) == name)
        items.append((f"{name}: {key} {row[key]:.3f}",
                      truth_overlay(record.image, record.parts, record.instances),
                      draw_overlay(record.image, predicted)))
    return items


def evaluate(data: str | Path, out: str | Path, model: str = "default", fmt: str = "auto",
             split: str | None = None, baseline: str | None = None, folds: int = 5,
             um_per_px: float | None = None, backend: str = "auto",
             predictions: str | Path | None = None, all_normal: bool = False) -> dict[str, Any]:
    """Evaluate on ``data``; write ``metrics.json``, ``per_image.csv`` and ``report.html``.

    ``split``: a reader split (BCCD ``test``), ``allidb-test20`` or ``fold-K/N``;
    ``all_normal``: every leukocyte of ``data`` is normal (healthy donors), so every
    predicted cell is scored as a normal cell (the ``cell_level`` figures).
    """
    reader_split = split if split and not (split == "allidb-test20"
                                           or split.startswith("fold-")) else None
    dataset = open_dataset(data, format=fmt, split=reader_split)
    names = None
    if split and reader_split is None:
        names = set(select([p.stem for p in dataset.items], split, folds=folds))
    predictor = load_predictor(model, baseline, backend, predictions)
    result = evaluate_dataset(predictor, dataset, names_filter=names, um_per_px=um_per_px,
                              all_normal=all_normal)
    metrics = {
        "dataset": {"path": str(data), "format": dataset.format, "split": split or "all",
                    "all_normal": all_normal, "images": len(result.per_image),
                    "failures": result.failures},
        "model": getattr(predictor, "model_info", {}),
        "metrics": result.summary(),
        "versions": {"allseg": __version__, "python": platform.python_version()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "disclaimer": DISCLAIMER,
    }
    out = Path(out)
    write_text_atomic(out / "per_image.csv", per_image_csv(result))
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out, metrics, result.per_image,
                 gallery(predictor, dataset, result.per_image, um_per_px))
    return metrics
