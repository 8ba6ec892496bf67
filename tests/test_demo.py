"""``allseg demo`` runs the bundled model on generated fields and bundled photos."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from allseg.demo import DEMO_FIELDS, bundled_samples, run_demo


def test_demo_predicts_every_input_and_prints_a_table(tmp_path: Path) -> None:
    buffer = io.StringIO()
    out_dir = tmp_path / "demo[a]"  # brackets: the printed folder must not be read as markup
    pred_dir = run_demo(out_dir, Console(file=buffer, width=400))
    printed = buffer.getvalue()
    summary = json.loads((pred_dir / "summary.json").read_text())
    assert summary["failures"] == []
    assert len(summary["images"]) == DEMO_FIELDS + len(bundled_samples())
    assert len(list(pred_dir.glob("*_overlay.png"))) == len(summary["images"])
    for column in ("leukocytes", "blasts", "verdict", "seconds"):
        assert column in printed
    assert "Research use only" in printed
    assert f"overlays: {pred_dir}/*_overlay.png" in printed
    # The bundled BCCD photos each hold one leukocyte.
    for sample in bundled_samples():
        found = json.loads((pred_dir / f"{sample.stem}.json").read_text())
        assert found["leukocyte_count"] >= 1
