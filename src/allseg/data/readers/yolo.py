"""YOLO box labels: ``images/`` + ``labels/`` with ``cls cx cy w h`` normalised lines."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from allseg.data.readers.base import Dataset, Item, box_record, image_files
from allseg.data.record import Record
from allseg.io.images import read_image

LEUKOCYTE_NAME = re.compile(r"wbc|leuko|leuco|white", re.IGNORECASE)
RED_CELL_NAME = re.compile(r"rbc|erythro|red", re.IGNORECASE)


def read_class_names(root: Path) -> list[str] | None:
    """Class names from ``classes.txt`` or the ``names:`` entry of ``data.yaml``."""
    classes = root / "classes.txt"
    if classes.is_file():
        return [s.strip() for s in classes.read_text(errors="replace").splitlines() if s.strip()]
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return _yaml_names((root / name).read_text(errors="replace"))
    return None


def _yaml_names(text: str) -> list[str] | None:
    """The ``names`` of a YOLO data.yaml: an inline list, a block list or an index map."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"names\s*:\s*(.*)$", line)
        if not match:
            continue
        inline = match.group(1).strip()
        if inline.startswith("["):
            return [s.strip().strip("'\"") for s in inline.strip("[]").split(",") if s.strip()]
        names = []
        for entry in lines[i + 1:]:
            item = re.match(r"\s+(?:-\s*|\d+\s*:\s*)(.+)$", entry)
            if item is None:
                break
            names.append(item.group(1).strip().strip("'\""))
        return names
    return None


class Yolo(Dataset):
    """Reads ``images/*.jpg`` + ``labels/*.txt`` (or ``images/{split}`` + ``labels/{split}``)."""

    format = "yolo"
    expects = "images/*.jpg + labels/*.txt with 'cls cx cy w h' (optional classes.txt/data.yaml)"
    split_is_subfolder = False

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "images").is_dir() and (root / "labels").is_dir()

    def _list(self) -> list[Item]:
        sub = "" if self.split is None else self.split
        images = image_files(self.folder(str(Path("images") / sub)))
        labels = sorted(p for p in self.folder(str(Path("labels") / sub)).iterdir()
                        if p.suffix.lower() == ".txt")
        self.leukocyte_classes, self.red_cell_classes = self._classes()
        items = self.pair(images, labels, "label")
        for item in items:
            item.info["boxes"], item.info["red_cells"] = self._read_labels(item.labels["label"])
        return items

    def _classes(self) -> tuple[set[int] | None, set[int]]:
        """Indices of leukocyte classes (None: all boxes, when classes are not named) and of
        red-cell classes."""
        names = read_class_names(self.root)
        if not names:
            return None, set()
        found = {i for i, name in enumerate(names) if LEUKOCYTE_NAME.search(name)}
        if not found:
            self.warn(f"{self.root}: no class named like a leukocyte in {names}; no boxes used")
        red = {i for i, name in enumerate(names) if RED_CELL_NAME.search(name)} - found
        return found, red

    def _read_labels(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ``cx cy w h`` of leukocyte and of red-cell lines; bad lines are
        reported and skipped."""
        boxes, red_cells = [], []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 5:
                self.problem(path, f"expected 5 fields 'cls cx cy w h', got {len(fields)}; "
                             "line skipped", line=number)
                continue
            try:
                cls, values = int(fields[0]), [float(v) for v in fields[1:]]
            except ValueError:
                self.problem(path, f"not numbers: {line.strip()!r}; line skipped", line=number)
                continue
            if not all(0.0 <= v <= 1.0 for v in values):
                self.problem(path, f"values outside [0, 1]: {line.strip()!r}; line skipped",
                             line=number)
                continue
            if self.leukocyte_classes is None or cls in self.leukocyte_classes:
                boxes.append(values)
            elif cls in self.red_cell_classes:
                red_cells.append(values)
        return np.array(boxes, float).reshape(-1, 4), np.array(red_cells, float).reshape(-1, 4)

    def _load(self, item: Item) -> Record:
        image = read_image(item.image)
        h, w = image.shape[:2]
        return box_record(self, item.image, image, _corners(item.info["boxes"], w, h),
                          _corners(item.info["red_cells"], w, h))


def _corners(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """Normalised ``cx cy w h`` rows to ``x0, y0, x1, y1`` pixels."""
    cx, cy, bw, bh = boxes.T
    return np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h,
                     (cx + bw / 2) * w, (cy + bh / 2) * h], axis=1).reshape(-1, 4)
