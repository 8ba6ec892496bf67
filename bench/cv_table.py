"""Per-fold and mean (± sd) Dice of bench/zheng_cv.sh, as a Markdown table."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

FIGURES = (("nucleus Dice", "nucleus"), ("whole-cell Dice", "cell"))


def main(root: Path) -> None:
    folds = sorted(p for p in root.glob("fold*") if (p / "eval" / "metrics.json").exists())
    if not folds:
        raise SystemExit(f"no finished folds under {root}")
    print("| fold | images | model nucleus | model cell | classical nucleus | classical cell |")
    print("| --- | --- | --- | --- | --- | --- |")
    values: dict[str, list[float]] = {}
    for fold in folds:
        row = [fold.name, None]
        for kind in ("eval", "classical"):
            metrics = json.loads((fold / kind / "metrics.json").read_text())["metrics"]
            row[1] = metrics["images"]
            for _, part in FIGURES:
                dice = metrics["pixel"][part]["dice"]
                values.setdefault(f"{kind}/{part}", []).append(dice)
                row.append(f"{dice:.3f}")
        print("| " + " | ".join(str(v) for v in row) + " |")
    means = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}"
             for v in values.values()]
    print(f"| mean ± sd ({len(folds)} folds) | | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/zheng_cv"))
