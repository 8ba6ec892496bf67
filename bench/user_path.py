"""The user's path to a blast classifier, run on the most realistic labelled cells we have.

There are no openly licensed photos of labelled blasts, so two stand-ins, each trained with
``allseg train --stage classifier --base-model default --learning-curve ...`` as a user
would (the same API):

- ``synthetic-patients``: ALL-IDB2-like crops of 8 synthetic "patients" (one generator
  seed each) sorted into ``blast/`` and ``other/`` class folders, the patient in each file
  name (``P3_...``) and ``group_pattern`` splitting by it: the split by patient, the AUC
  with its interval resampling patients, the learning curve.
- ``zheng-lymphocytes``: Zheng Dataset 1's 300 real cells with its class file, lymphocytes
  given the role of the positive class (``class_names`` maps code 2 to "blast") against
  neutrophils, monocytes, eosinophils and basophils: a real look-alike task on real photos,
  to read how many labelled real cells such a distinction needs. Split by image (Zheng names
  no patients).

Writes bench/user_path/results.json (the run folders under bench/user_path/runs/ are
ignored by git).

    .venv/bin/python bench/user_path.py
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from allseg.io.atomic import write_json_atomic
from allseg.synth import write_dataset
from allseg.training.config import load_config
from allseg.training.run import train

BENCH = Path(__file__).resolve().parent / "user_path"
ZHENG = Path(__file__).resolve().parents[2] / "shared" / "data" / "zheng_wbc" / "Dataset 1"
PATIENTS, CROPS_PER_PATIENT = 8, 60
SHARES = [0.125, 0.25, 0.5]
BUDGET = ["stage=classifier", "classifier.epochs=15", "classifier.steps_per_epoch=20",
          "classifier.patience=5", "val_fraction=0.25"]


def synthetic_patients(root: Path) -> Path:
    """Class folders of synthetic crops, one generator seed per patient."""
    done = root / ".complete"
    if done.exists():
        return root
    for patient in range(PATIENTS):
        tmp = root.parent / f"tmp_P{patient}"
        for crop in write_dataset("allidb2", tmp, n=CROPS_PER_PATIENT, seed=9000 + patient,
                                  um_per_px=0.09):
            folder = root / ("blast" if crop.stem.endswith("_1") else "other")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(crop, folder / f"P{patient}_{crop.name}")
        shutil.rmtree(tmp)
    done.touch()
    return root


def run(name: str, source: str, *overrides: str) -> dict:
    out = BENCH / "runs" / name
    recipe = BENCH / "runs" / f"{name}.toml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(f'out = "{out}"\n[[data]]\n{source}\n', encoding="utf-8")
    started = time.perf_counter()
    model_dir = train(load_config(recipe, [*BUDGET, *overrides]), base_model="default",
                      learning_curve_shares=SHARES)
    info = json.loads((model_dir / "config.json").read_text())["meta"]["training"]["classifier"]
    result = {"seconds": round(time.perf_counter() - started), "n_train": info["n_train"],
              "n_val": info["n_val"], "validation": info.get("validation"),
              "learning_curve": info.get("learning_curve"),
              "blast_head": {k: v for k, v in info.get("blast_head", {}).items()
                             if k != "weights"}}
    print(name, json.dumps(result, indent=1), flush=True)
    return result


def main() -> None:
    results = {"shares": SHARES, "budget": BUDGET}
    cells = synthetic_patients(BENCH / "runs" / "data" / "synthetic_patients")
    results["synthetic-patients"] = run(
        "synthetic-patients", f'path = "{cells}"\nmasks = false\num_per_px = 0.09\n'
        'group_pattern = "^(P\\\\d+)_"')
    if ZHENG.is_dir():
        results["zheng-lymphocytes"] = run(
            "zheng-lymphocytes",
            f'path = "{ZHENG}"\nformat = "masks"\nmasks = false\num_per_px = 0.17\n'
            'labels_csv = "../Class Labels of Dataset 1.csv"\n'
            'class_names = { 1 = "neutrophil", 2 = "blast", 3 = "monocyte", 4 = "eosinophil", '
            '5 = "basophil" }')
    write_json_atomic(BENCH / "results.json", results)


if __name__ == "__main__":
    main()
