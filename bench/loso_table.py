"""Print the leave-one-source-out table of bench/loso.sh as Markdown."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from source_figures import figures

#: left-out source -> (evaluation folder, source key in it, figures shown)
TESTS = {
    "bccd": ("eval-bccd", "all", ("detection_f1", "red_cells_hit_rate")),
    "zheng": ("eval-zheng", "all", ("nucleus_dice", "cell_dice", "cell_dice_min")),
    "raabin": ("eval-txl", "raabin", ("detection_f1", "red_cells_hit_rate")),
    "pbc": ("eval-txl", "pbc", ("detection_f1", "red_cells_hit_rate")),
    "bcd": ("eval-txl", "bcd", ("detection_f1", "red_cells_hit_rate")),
}


def main(root: Path) -> None:
    table = {}
    print("| test source | figure | trained without it | trained with every source |")
    print("| --- | --- | --- | --- |")
    for source, (folder, key, shown) in TESTS.items():
        cells = {}
        for run in (source, "all"):
            path = root / run / folder
            if (path / "per_image.csv").exists():
                cells[run] = figures(path, split_by_prefix=folder == "eval-txl").get(key, {})
        for fig in shown:
            values = [cells.get(run, {}).get(fig) for run in (source, "all")]
            text = ["-" if v is None else f"{v:.3f}" for v in values]
            print(f"| {source} | {fig} | {text[0]} | {text[1]} |")
            table.setdefault(source, {})[fig] = values
    (root / "table.json").write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/loso"))
