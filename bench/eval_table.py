"""Print the headline figures of bench/evaluate.sh as a Markdown table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from source_figures import figures

ROWS = [
    ("nucleus Dice", ("pixel", "nucleus", "dice")),
    ("whole-cell Dice", ("pixel", "cell", "dice")),
    ("instance F1 @0.5", ("instances", "iou50", "f1")),
    ("blast F1", ("blast_points", "f1")),
    ("leukocyte detection F1 (boxes)", ("leukocyte_boxes", "f1")),
    ("red-cell boxes hit by a leukocyte", ("red_cell_boxes", "hit_rate")),
    ("image verdict accuracy", ("image_level", "accuracy")),
]


def dig(tree: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree if isinstance(tree, int | float) else None


def main(root: Path) -> None:
    print("| set | figure | model | classical |")
    print("| --- | --- | --- | --- |")
    for folder in sorted(p for p in root.iterdir() if (p / "model" / "metrics.json").exists()):
        results = {k: json.loads((folder / k / "metrics.json").read_text())["metrics"]
                   for k in ("model", "classical") if (folder / k / "metrics.json").exists()}
        for label, path in ROWS:
            values = [dig(results.get(k, {}), path) for k in ("model", "classical")]
            if values[0] is None:
                continue
            cells = ["-" if v is None else f"{v:.3f}" for v in values]
            print(f"| {folder.name} | {label} | {cells[0]} | {cells[1]} |")
        if folder.name.startswith("txl"):  # TXL-PBC mixes three labs: one row each
            for source, figs in figures(folder / "model", split_by_prefix=True).items():
                print(f"| {folder.name} {source} | detection F1 / red-cell boxes hit | "
                      f"{figs['detection_f1']:.3f} / {figs['red_cells_hit_rate']:.4f} | |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/eval"))
