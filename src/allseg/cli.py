"""The ``allseg`` command line: a thin layer over the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from allseg import DISCLAIMER, __version__

app = typer.Typer(
    help=f"allseg {__version__}: find leukocytes in blood smear images, segment them and flag "
    f"lymphoblasts.\n\n{DISCLAIMER}",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
err = Console(stderr=True)
out = Console()


def _parse_scale(value: str | None) -> float | tuple[float, float] | None:
    """Parse ``0.1`` or a range ``0.05:0.2``."""
    if value is None:
        return None
    try:
        if ":" in value:
            lo, hi = (float(v) for v in value.split(":", 1))
            if not 0 < lo <= hi:
                raise ValueError
            return lo, hi
        scale = float(value)
        if scale <= 0:
            raise ValueError
        return scale
    except ValueError:
        raise typer.BadParameter(
            f"expected a positive number or a range LO:HI, got {value!r}") from None


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    layout: Annotated[str, typer.Option(help="allidb1 (full fields + .xyc), allidb2 "
                                        "(257x257 single-cell crops) or masks.")] = "allidb1",
    n: Annotated[int, typer.Option("--n", min=1, help="Number of images.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    um_per_px: Annotated[str | None, typer.Option(
        "--um-per-px", help="Pixel size in µm, or a range LO:HI sampled per image. Smaller "
        "values mean higher magnification (0.05 gives ~300 px leukocytes, 0.2 ~60 px).")] = None,
    magnification: Annotated[float | None, typer.Option(
        help="Alternative to --um-per-px: scale relative to the default (2 = cells twice as "
        "large in pixels).", min=0.1, max=20)] = None,
) -> None:
    """Generate a synthetic smear dataset with exact ground truth."""
    from allseg.synth import LAYOUTS, default_um_per_px, write_dataset

    if layout not in LAYOUTS:
        raise typer.BadParameter(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    scale = _parse_scale(um_per_px)
    if magnification is not None:
        if scale is not None:
            raise typer.BadParameter("give --um-per-px or --magnification, not both")
        lo, hi = default_um_per_px(layout)
        scale = (lo / magnification, hi / magnification)
    paths = write_dataset(layout, out_dir, n=n, seed=seed, um_per_px=scale, progress=True)
    out.print(f"wrote {len(paths)} {layout} images to {escape(str(out_dir))}")


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="TOML recipe (see configs/default.toml).")] = None,
    data: Annotated[list[str] | None, typer.Option(
        "--data", help="Add a dataset folder (any reader format; repeatable), after the "
        "recipe's [[data]]: without a recipe the first is data.0 for --set.")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Run folder (overrides out).")] = None,
    stage: Annotated[str | None, typer.Option(help="segmenter, classifier or both.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs for every trained stage.")] = None,
    folds: Annotated[int | None, typer.Option(help="k for k-fold split by image.")] = None,
    fold: Annotated[int | None, typer.Option(help="Which fold is validation.")] = None,
    devices: Annotated[str | None, typer.Option(
        help="Accelerator devices (auto, 1, 2...).")] = None,
    nodes: Annotated[int | None, typer.Option(help="Machines (with torchrun or SLURM).")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="Lightning strategy: auto, ddp (gloo on CPU, NCCL on GPU)...")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the run folder's last checkpoint.")] = False,
    base_model: Annotated[Path | None, typer.Option(
        help="Model folder whose other stage is kept when training one stage.")] = None,
    init_from: Annotated[str | None, typer.Option(
        help="Fine-tune: start each trained stage from this model folder's network "
        "(architecture and weights; 'default' is the bundled model) instead of a fresh one; "
        "see docs/training.md for learning rates and budgets.")] = None,
    override: Annotated[list[str] | None, typer.Option(
        "--set",
        help="Override any recipe key, e.g. --set segmenter.lr=0.001 (repeatable).")] = None,
    learning_curve: Annotated[str | None, typer.Option(
        help="Also train the classifier on these shares of its training patients/images, "
        "e.g. 0.1,0.25,0.5, and write RUN/learning_curve.csv and .png (validation AUC "
        "with a 95% CI against the number of labelled cells).")] = None,
) -> None:
    """Train the segmenter and/or the blast classifier; writes RUN/model.

    The classifier's validation AUC (95% bootstrap CI, patients resampled whole when a
    recipe names them) is printed and kept in RUN/model/config.json."""
    from allseg.training.config import load_config
    from allseg.training.run import train as run_training

    overrides = list(override or [])
    for key, value in (("out", out_dir), ("stage", stage), ("folds", folds), ("fold", fold),
                       ("devices", devices), ("num_nodes", nodes), ("strategy", strategy)):
        if value is not None:
            overrides.append(f"{key}={_toml_literal(value)}")
    if epochs is not None:
        overrides += [f"segmenter.epochs={epochs}", f"classifier.epochs={epochs}"]
    if init_from is not None:
        overrides += [f"{name}.init_from={_toml_literal(init_from)}"
                      for name in ("segmenter", "classifier")]
    cfg = _or_exit(load_config, config, overrides, list(data or []))
    if not cfg.data:
        raise typer.BadParameter("no training data: give --data FOLDER or a --config with [[data]]")
    shares = ()
    if learning_curve is not None:
        from allseg.training.learning_curve import parse_fractions

        try:
            shares = parse_fractions(learning_curve)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--learning-curve") from None
    model_dir = _or_exit(run_training, cfg, resume=resume, base_model=base_model,
                         learning_curve_shares=shares)
    if "classifier" in cfg.stages():
        _print_classifier_figures(model_dir)
    out.print(f"model written to [bold]{escape(str(model_dir))}[/bold]")


def _print_classifier_figures(model_dir: Path) -> None:
    """The classifier's validation AUC and the learning curve's file, when trained."""
    import json

    from allseg.training.validation import describe

    info = (json.loads((model_dir / "config.json").read_text())["meta"]["training"]
            .get("classifier", {}))
    if report := info.get("validation"):
        out.print(describe(report))
        for cell_type, figures in report.get("blast_vs_type", {}).items():
            out.print("  " + describe(figures, f"blast vs {cell_type}: AUC"))
    if info.get("learning_curve"):
        curve = model_dir.parent / "learning_curve.csv"
        out.print(f"learning curve: {escape(str(curve))} and .png")


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("allseg_out"),
    model: Annotated[str, typer.Option(help="'default' (bundled) or a model folder.")] = "default",
    um_per_px: Annotated[float | None, typer.Option(
        "--um-per-px", help="Pixel size in µm (skips automatic scale estimation).",
        min=1e-4)] = None,
    cell_diameter: Annotated[float | None, typer.Option(
        help="Typical leukocyte diameter in pixels (alternative to --um-per-px).", min=1)] = None,
    tta: Annotated[bool | None, typer.Option(
        "--tta/--no-tta", help="Average the segmenter over flips (steadier outlines): always, "
        "or never. By default only on small inputs (crops, small fields), where it costs "
        "at most ~0.1 s.")] = None,
    backend: Annotated[str, typer.Option(
        help="auto (PyTorch on CUDA; on a CPU ONNX Runtime, with the int8 segmenter where the "
        "CPU has int8 dot products), onnx (float32), onnx-int8 or torch; see "
        "docs/export.md.")] = "auto",
    skip_existing: Annotated[bool, typer.Option(
        help="Skip images whose outputs are already complete.")] = False,
    fmt: Annotated[list[str] | None, typer.Option(
        "--format", help="Extra instance outputs: coco (coco.json), imagej-roi (S_rois.zip); "
        "qupath (S.geojson) is always written. Repeatable.")] = None,
) -> None:
    """Segment leukocytes and flag blasts.

    Per image S: S.json (verdict, per-cell numbers), S_parts.png, S_instances.png,
    S_overlay.png, S.geojson; per run: cells.csv and summary.json. A bad file is reported
    and the rest go on (exit code 1).
    """
    from allseg.inference.batch import collect_images, predict_files
    from allseg.inference.predictor import Predictor

    files = _or_exit(collect_images, inputs)
    _check_backend(backend)
    from allseg.outputs.interop import FORMATS

    unknown = set(fmt or ()) - set(FORMATS)
    if unknown:
        raise typer.BadParameter(f"unknown format(s) {', '.join(sorted(unknown))}; choose from "
                                 f"{', '.join(FORMATS)}")
    predictor = _or_exit(Predictor, model, backend=backend, tta=tta)
    writer = _or_exit(predict_files, predictor, files, out_dir, um_per_px=um_per_px,
                      cell_diameter_px=cell_diameter, skip_existing=skip_existing,
                      formats=fmt or ())
    out.print(f"{len(writer.images)} image(s) done, {len(writer.failures)} failed; "
              f"outputs in [bold]{escape(str(out_dir))}[/bold]")
    if writer.failures:
        raise typer.Exit(1)


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and "
                                          "per_image.csv and report.html.")] = Path("allseg_eval"),
    fmt: Annotated[str, typer.Option("--format", help="auto, allidb1, allidb2, masks, voc, "
                                     "yolo.")] = "auto",
    split: Annotated[str | None, typer.Option(
        help="A reader split (BCCD: test), allidb-test20, or fold-K/N (the trainer's "
        "hold_out = [N, K]).")] = None,
    model: Annotated[str, typer.Option(help="'default' (bundled) or a model folder.")] = "default",
    baseline: Annotated[str | None, typer.Option(
        help="'classical': score the colour-threshold + watershed pipeline instead.")] = None,
    um_per_px: Annotated[float | None, typer.Option(
        "--um-per-px", help="Known pixel size (otherwise estimated per image).")] = None,
    backend: Annotated[str, typer.Option(help="auto, onnx, onnx-int8 or torch.")] = "auto",
    predictions: Annotated[Path | None, typer.Option(
        help="Score this folder of earlier 'allseg predict' outputs instead of predicting.")
    ] = None,
    all_normal: Annotated[bool, typer.Option(
        "--all-normal", help="Every leukocyte of this dataset is normal, e.g. healthy donors: "
        "scores the share of normal cells called blasts and the calibration.")] = False,
) -> None:
    """Score a model (or the classical baseline) against a dataset's labels."""
    import json

    from allseg.evaluation.run import evaluate as run_evaluation
    from allseg.evaluation.splits import select

    _check_backend(backend)
    if baseline not in (None, "classical"):
        raise typer.BadParameter(f"unknown baseline {baseline!r}; the only one is 'classical'")
    if split and (split == "allidb-test20" or split.startswith("fold-")):
        try:
            select([], split)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    metrics = _or_exit(run_evaluation, data, out_dir, model=model, fmt=fmt, split=split,
                       baseline=baseline, um_per_px=um_per_px, backend=backend,
                       predictions=predictions, all_normal=all_normal)
    out.print_json(json.dumps(metrics["metrics"]))
    if (cells := metrics["metrics"].get("cell_level")) and cells["cells"]:
        out.print(f"cell level: {cells['blast_calls']} of {cells['cells']} cells called blasts "
                  f"({cells['blast_call_rate']:.2%}), ECE {cells['calibration']['ece']:.3f}")
    out.print(f"written to [bold]{escape(str(out_dir))}[/bold]: metrics.json, per_image.csv, "
              "report.html")


@app.command()
def export(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the exported model.")],
    model: Annotated[str, typer.Option(help="'default' (bundled) or a model folder.")] = "default",
    check: Annotated[bool, typer.Option(
        help="Compare ONNX Runtime with PyTorch on synthetic inputs.")] = True,
    int8: Annotated[bool, typer.Option(
        help="Also write segmenter.int8.onnx (static int8, calibrated on synthetic fields) "
        "for --backend onnx-int8.")] = False,
) -> None:
    """Export both stages to ONNX (a complete model folder usable with --backend onnx)."""
    from allseg.export import export_model

    report = _or_exit(export_model, model, out_dir, check=check, int8=int8)
    for name, diff in report.get("max_abs_diff", {}).items():
        out.print(f"  {name}: max |onnx - torch| = {diff:.2e} (tolerance {report['tolerance']})")
    for name, value in report.get("int8", {}).items():
        out.print(f"  int8 segmenter {name.replace('_', ' ')}: {value:.4f}")
    out.print(f"exported to [bold]{escape(str(out_dir))}[/bold]")


def _check_backend(backend: str) -> None:
    from allseg.inference.backends import BACKENDS

    if backend not in BACKENDS:
        raise typer.BadParameter(f"unknown backend {backend!r}; choose one of "
                                 f"{', '.join(BACKENDS)}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (1234, as the original project).")] = 1234,
    model: Annotated[str, typer.Option(help="'default' (bundled) or a model folder.")] = "default",
    api_key: Annotated[str | None, typer.Option(
        help="Require this key (X-API-Key or Authorization: Bearer); default: env "
        "ALLSEG_API_KEY.")] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Server processes (1 keeps result downloads working).")] = 1,
    backend: Annotated[str, typer.Option(help="auto, onnx, onnx-int8 or torch.")] = "auto",
) -> None:
    """Serve the model over HTTP: web page at /, API at /v1, legacy POST /Inference."""
    from allseg.service.app import serve as run_server

    _check_backend(backend)
    _or_exit(run_server, host=host, port=port, model=model, api_key=api_key, workers=workers,
             backend=backend)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Demo folder.")] = Path("demo_out"),
) -> None:
    """Generate sample smears, run the bundled model on them and print what it found."""
    from allseg.demo import run_demo

    _or_exit(run_demo, out_dir, out)


def _toml_literal(value: object) -> str:
    return str(value) if isinstance(value, int) else f'"{value}"'


def _or_exit(fn, *args, **kwargs):  # noqa: ANN001, ANN202 - thin error boundary
    """Run ``fn``; print allseg's own errors as one clear line and exit 2."""
    from allseg.errors import AllsegError

    try:
        return fn(*args, **kwargs)
    except AllsegError as exc:  # escaped, as every path printed: "[k, i]" is text, not markup
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """Print the allseg version."""
    out.print(__version__)


def main() -> None:
    app()
