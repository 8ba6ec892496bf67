"""``allseg demo``: synthetic ALL-IDB1-like fields + bundled BCCD photos through the model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from allseg import DISCLAIMER
from allseg.inference.batch import predict_files
from allseg.inference.predictor import Predictor
from allseg.io.images import is_image_file

DEMO_SEED = 20261126
DEMO_FIELDS = 3


def bundled_samples() -> list[Path]:
    """The MIT-licensed BCCD photos shipped in ``allseg/samples`` (see its README)."""
    folder = Path(str(resources.files("allseg") / "samples"))
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def run_demo(out_dir: str | Path, console: Console | None = None) -> Path:
    """Generate the demo inputs (once), predict them, print a table; return the output folder."""
    from allseg.synth import write_dataset

    console = console or Console()
    out_dir = Path(out_dir)
    data_dir = out_dir / "synthetic_allidb1"
    if not (data_dir / ".complete").exists():
        console.print(f"generating {DEMO_FIELDS} synthetic ALL-IDB1-like fields (seed {DEMO_SEED})")
        write_dataset("allidb1", data_dir, n=DEMO_FIELDS, seed=DEMO_SEED)
        (data_dir / ".complete").touch()
    inputs = [data_dir / "im", *bundled_samples()]
    predictor = Predictor("default")
    pred_dir = out_dir / "predictions"
    writer = predict_files(predictor, inputs, pred_dir)
    table = Table(title="allseg demo (bundled default model)")
    for col in ("image", "leukocytes", "blasts", "verdict", "seconds"):
        table.add_column(col, justify="left" if col in ("image", "verdict") else "right")
    for row in writer.images:
        table.add_row(Path(row["image"]).name, str(row["leukocyte_count"]),
                      str(row["blast_count"]), row["verdict"], f"{row['seconds']:.2f}")
    console.print(table)
    for failure in writer.failures:
        console.print(f"[red]failed[/red] {escape(f'{failure.image}: {failure.error}')}")
    shown = escape(str(pred_dir))  # a folder named like "demo[a]" is text, not markup
    console.print(f"overlays: {shown}/*_overlay.png  (per-cell numbers in {shown}/cells.csv)")
    console.print(f"[yellow]{DISCLAIMER}[/yellow]")
    return pred_dir
