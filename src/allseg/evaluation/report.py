"""``report.html``: one self-contained page (inline PNGs, no external CSS/JS/fonts)
summing up an evaluation: headline figures, curves, confusion matrices, histograms,
reliability diagrams and a gallery of the worst images (ground truth beside prediction)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from allseg import DISCLAIMER
from allseg.data.record import NUCLEUS
from allseg.evaluation.metrics import calibration, pr_curve, roc_auc, roc_curve
from allseg.io.atomic import encode_image, write_text_atomic

#: Ground-truth contour colour (RGB): cyan, distinct from the prediction colours.
TRUTH_RGB = (0, 220, 255)
GALLERY_WIDTH = 480
DPI = 90
LEVELS = {"image": "Image level (ALL verdict)", "crop": "Crop level (single cells)",
          "cell": "Cell level (every scored leukocyte)"}
CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}h1{margin-bottom:.2em}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#555;font-size:.92em}.meta td{padding:1px 14px 1px 0}
.disclaimer{border:2px solid #c0392b;background:#fdecea;color:#7b1d12;padding:.7em 1em;
border-radius:6px;font-weight:600;margin:1em 0}
table.h{border-collapse:collapse;font-size:.93em}
table.h th,table.h td{border:1px solid #ccc;padding:3px 10px;text-align:left}
table.h b{font-variant-numeric:tabular-nums}table.h th{background:#f3f3f3}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.plots img,figure img{max-width:100%;border:1px solid #eee}.note{color:#777;font-style:italic}
figure{margin:0 0 1em}figcaption{font-size:.9em;color:#444;margin-bottom:4px}
.pair{display:flex;gap:8px;flex-wrap:wrap;align-items:flex-end}"""


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _headline(m: dict[str, Any]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """(section, [(figure, value), ...]) for the pooled figures present."""
    out: list[tuple[str, list[tuple[str, Any]]]] = []
    for part, p in m.get("pixel", {}).items():
        out.append((f"Pixel: {part}", [("Dice", p.get("dice")), ("IoU", p.get("iou")),
                                       ("mean Dice / image", p.get("mean_dice_per_image"))]))
    for key, label in (("iou50", "0.5"), ("iou75", "0.75")):
        if i := m.get("instances", {}).get(key):
            out.append((f"Instances @ IoU {label}", [
                ("F1", i.get("f1")), ("AP", i.get("ap")), ("PQ", i.get("panoptic_quality"))]))
    for key, label in (("blast_points", "Blast points"), ("leukocyte_boxes", "Leukocyte boxes")):
        if c := m.get(key):
            out.append((label, [("precision", c.get("precision")), ("recall", c.get("recall")),
                                ("F1", c.get("f1"))]))
    for level, label in LEVELS.items():
        if c := m.get(f"{level}_level"):
            figs = [(k.replace("roc_auc", "ROC AUC"), c.get(k)) for k in (
                "sensitivity", "specificity", "accuracy", "roc_auc", "threshold", "n")]
            figs.append(("ECE", c.get("calibration", {}).get("ece")))
            if "blast_call_rate" in c:
                figs.append(("blast-call rate", c["blast_call_rate"]))
            out.append((label, figs))
    return out


def _headline_table(m: dict[str, Any]) -> str:
    rows = [f"<tr><th>{html.escape(section)}</th>" + "".join(
        f'<td>{html.escape(name)} <b>{html.escape(_fmt(value))}</b></td>' for name, value in figs)
        + "</tr>" for section, figs in _headline(m)]
    if not rows:
        return '<p class="note">No pooled figures in the metrics.</p>'
    return '<table class="h">' + "".join(rows) + "</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed (reports and training plots)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _figure(ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, ncols, figsize=(3.0 * ncols, 2.8), squeeze=False)
    return fig, list(ax[0])


def _curves(scores: np.ndarray, labels: np.ndarray, auc: Any) -> bytes:
    fig, (roc, pr) = _figure(2)
    fpr, tpr, _ = roc_curve(scores, labels)
    roc.plot(fpr, tpr, drawstyle="steps-post", color="C0")
    roc.plot([0, 1], [0, 1], ":", color="grey")
    roc.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC (AUC {_fmt(auc)})")
    precision, recall, _ = pr_curve(scores, labels)
    pr.plot(recall, precision, drawstyle="steps-post", color="C1")
    pr.axhline(labels.mean(), ls=":", color="grey")
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for a in (roc, pr):
        a.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    return figure_png(fig)


def _confusion(calls: np.ndarray, labels: np.ndarray) -> bytes:
    matrix = np.array([[np.sum(~calls & ~labels), np.sum(calls & ~labels)],
                       [np.sum(~calls & labels), np.sum(calls & labels)]])
    fig, (a,) = _figure()
    a.imshow(matrix, cmap="Blues", vmin=0)
    for (i, j), v in np.ndenumerate(matrix):
        a.text(j, i, str(v), ha="center", va="center", fontsize=14,
               color="white" if v > matrix.max() / 2 else "black")
    a.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["called neg.", "called pos."],
          yticklabels=["true neg.", "true pos."], title="Confusion matrix")
    return figure_png(fig)


def _score_histogram(scores: np.ndarray, labels: np.ndarray, threshold: float,
                     log: bool = False) -> bytes:
    """``log``: a logarithmic count axis, so that a few high scores among thousands of low
    ones (blast calls among normal cells) stay visible."""
    fig, (a,) = _figure()
    bins = np.linspace(0, 1, 21)
    a.hist(scores[~labels], bins, alpha=0.6, color="C2", label=f"negative ({(~labels).sum()})")
    a.hist(scores[labels], bins, alpha=0.6, color="C3", label=f"positive ({labels.sum()})")
    a.axvline(threshold, ls="--", color="black", lw=1, label=f"threshold {threshold:.2f}")
    a.set(xlabel="blast probability", ylabel="count", title="Scores by true class")
    if log:
        a.set_yscale("log")
    a.legend(fontsize=8)
    return figure_png(fig)


def _reliability(scores: np.ndarray, labels: np.ndarray) -> bytes:
    """Observed blast fraction against mean predicted probability per bin (on the diagonal
    when probabilities mean what they say), with the bin counts underneath."""
    import matplotlib.pyplot as plt

    cal = calibration(scores, labels)
    fig, (a, below) = plt.subplots(2, 1, figsize=(3.0, 3.6), sharex=True,
                                   gridspec_kw={"height_ratios": (3, 1)})
    filled = [b for b in cal["bins"] if b["count"]]
    a.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
    a.plot([b["mean_predicted"] for b in filled], [b["observed"] for b in filled], "o-",
           color="C0", label="observed")
    a.set(ylabel="observed blast fraction", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
          title=f"Reliability (ECE {_fmt(cal['ece'])})")
    a.legend(fontsize=8)
    counts = [b["count"] for b in cal["bins"]]
    below.bar([b["lo"] for b in cal["bins"]], counts, width=1 / len(counts), align="edge",
              color="C7", edgecolor="white")
    for b in filled:
        below.annotate(str(b["count"]), ((b["lo"] + b["hi"]) / 2, b["count"]), ha="center",
                       va="bottom", fontsize=6)
    below.set(xlabel="predicted blast probability", ylabel="count",
              yscale="log" if filled else "linear")
    return figure_png(fig)


def _level_data(level: str, rows: list[dict],
                threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, true labels and calls: one per image or crop, or, at the cell level, the
    per-image cell lists pooled and called at ``threshold``."""
    if level == "cell":
        scored = [r for r in rows if r.get("cell_scores") is not None]
        scores = np.array([v for r in scored for v in r["cell_scores"]], float)
        labels = np.array([v for r in scored for v in r["cell_labels"]], bool)
        return scores, labels, scores >= threshold
    scored = [r for r in rows if r.get(f"{level}_label") is not None
              and r.get(f"{level}_score") is not None]
    scores = np.array([r[f"{level}_score"] for r in scored], float)
    calls = np.array([r.get(f"{level}_called", r[f"{level}_score"] >= threshold)
                      for r in scored], bool)
    return scores, np.array([r[f"{level}_label"] for r in scored], bool), calls


def _normal_note(calls: np.ndarray, threshold: float) -> str:
    """The plain statement an all-normal set is for: how many normal cells were called blasts."""
    return (f"<p><b>{int(calls.sum())} of {calls.size} normal cells "
            f"({calls.mean():.2%}) were called blasts</b> (P(blast) &ge; {threshold:.2f}). "
            "Every cell here is labelled normal, so each call is a false one.</p>")


def _level_section(level: str, rows: list[dict], threshold: float) -> str:
    label = LEVELS[level]
    scores, labels, calls = _level_data(level, rows, threshold)
    if not scores.size:
        return f'<p class="note">{html.escape(label)}: no labels, section omitted.</p>'
    note = _normal_note(calls, threshold) if level == "cell" and not labels.any() else ""
    parts = ['<p class="note">One class only: ROC and precision-recall omitted.</p>'
             if labels.all() or not labels.any() else
             _img(_curves(scores, labels, roc_auc(scores, labels)), f"{level} ROC and PR")]
    parts.append(_img(_confusion(calls, labels), f"{level} confusion matrix"))
    parts.append(_img(_score_histogram(scores, labels, threshold, log=level == "cell"),
                      f"{level} score histogram"))
    parts.append(_img(_reliability(scores, labels), f"{level} reliability diagram"))
    return (f'<h2>{html.escape(label)}</h2>{note}'
            f'<div class="plots">{"".join(parts)}</div>')


def _dice_section(rows: list[dict]) -> str:
    data = {p: [r[f"{p}_dice"] for r in rows if r.get(f"{p}_dice") is not None]
            for p in ("nucleus", "cell")}
    if not any(data.values()):
        return '<p class="note">Per-image Dice: no drawn masks, section omitted.</p>'
    fig, (a,) = _figure()
    for k, (part, values) in enumerate(data.items()):
        if values:
            a.hist(values, np.linspace(0, 1, 21), alpha=0.6, color=f"C{k}",
                   label=f"{part} ({len(values)})")
    a.set(xlabel="Dice", ylabel="images", title="Per-image Dice")
    a.legend(fontsize=8)
    return "<h2>Per-image Dice</h2>" + _img(figure_png(fig), "per-image Dice distribution")


def _thumb(rgb: np.ndarray) -> bytes:
    if rgb.shape[1] > GALLERY_WIDTH:
        h = max(1, round(rgb.shape[0] * GALLERY_WIDTH / rgb.shape[1]))
        rgb = cv2.resize(rgb, (GALLERY_WIDTH, h), interpolation=cv2.INTER_AREA)
    return encode_image(np.ascontiguousarray(rgb), ".png")


def _gallery(items: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> str:
    if not items:
        return '<p class="note">Worst-images gallery: no images given, section omitted.</p>'
    figures = [f"<figure><figcaption>{html.escape(caption)} (left: ground truth, right: "
               f"prediction)</figcaption><div class=\"pair\">{_img(_thumb(truth), 'truth')}"
               f"{_img(_thumb(pred), 'prediction')}</div></figure>"
               for caption, truth, pred in items]
    return "<h2>Worst images</h2>" + "".join(figures)


def _meta(metrics: dict[str, Any]) -> str:
    d, model = metrics.get("dataset", {}), metrics.get("model", {})
    versions = ", ".join(f"{k} {v}" for k, v in metrics.get("versions", {}).items())
    items = [("Dataset", f"{d.get('path', '?')} ({d.get('format', '?')})"),
             ("Split", d.get("split", "all")), ("Images", f"{d.get('images', '?')} scored, "
                                                          f"{len(d.get('failures', []))} failed"),
             ("Model", ", ".join(f"{k}={v}" for k, v in model.items()
                                 if not isinstance(v, dict | list)) or "?"),
             ("Versions", versions or "?"),
             ("Date", metrics.get("date") or datetime.now(UTC).isoformat(timespec="seconds"))]
    return '<table class="meta">' + "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in items
    ) + "</table>"


def write_report(out_dir: Path, metrics: dict[str, Any], per_image: list[dict[str, Any]],
                 gallery: Sequence[tuple[str, np.ndarray, np.ndarray]] = ()) -> Path:
    """Write ``out_dir/report.html`` from ``metrics.json``'s dict and the per-image rows;
    ``gallery`` items are ``(caption, truth overlay RGB, prediction overlay RGB)``."""
    import matplotlib

    matplotlib.use("Agg")
    m = metrics.get("metrics", {})
    body = ["<h1>allseg evaluation report</h1>", _meta(metrics),
            f'<div class="disclaimer">{html.escape(metrics.get("disclaimer") or DISCLAIMER)}'
            "</div>", "<h2>Headline figures</h2>", _headline_table(m)]
    for level in LEVELS:
        threshold = float(m.get(f"{level}_level", {}).get("threshold", 0.5))
        body.append(_level_section(level, per_image, threshold))
    body += [_dice_section(per_image), _gallery(gallery)]
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            "<title>allseg evaluation report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    return write_text_atomic(Path(out_dir) / "report.html", page)


def worst_images(per_image: list[dict[str, Any]], key: str = "cell_dice", n: int = 4) -> list[str]:
    """The ``image`` of the ``n`` rows with the lowest ``key`` (rows without it skipped)."""
    scored = [r for r in per_image if r.get(key) is not None]
    return [str(r["image"]) for r in sorted(scored, key=lambda r: float(r[key]))[:n]]


def truth_overlay(image: np.ndarray, parts: np.ndarray | None,
                  instances: np.ndarray | None) -> np.ndarray:
    """RGB ``uint8``: the image with true nuclei tinted and true cell contours in cyan
    (instances, else the connected components of ``parts > 0``)."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    if instances is None:
        instances = ndimage.label(parts > 0)[0] if parts is not None else np.zeros(
            canvas.shape[:2], np.int32)
    if parts is not None:
        nucleus = parts == NUCLEUS
        canvas[nucleus] = (0.75 * canvas[nucleus] + 0.25 * np.array(TRUTH_RGB)).astype(np.uint8)
    line = max(1, round(2 * max(canvas.shape[:2]) / 1000))
    for k in np.unique(instances[instances > 0]).tolist():
        contours, _ = cv2.findContours((instances == k).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, TRUTH_RGB, line, cv2.LINE_AA)
    return canvas
