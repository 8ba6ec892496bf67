"""Pascal VOC box annotations (BCCD): ``WBC`` objects are leukocytes, ``RBC`` red cells."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from allseg.data.readers.base import Dataset, Item, box_record, image_files
from allseg.data.record import Record
from allseg.errors import InputError
from allseg.io.images import read_image

LEUKOCYTE_NAMES = {"wbc"}
RED_CELL_NAMES = {"rbc"}


def read_voc_boxes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x0, y0, x1, y1`` boxes of the leukocyte and of the red-cell objects in one file."""
    try:
        text = path.read_text(errors="replace")
        if "<!DOCTYPE" in text or "<!ENTITY" in text:
            raise InputError(path, "XML with DTD or entities is refused (entity expansion risk)")
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(path, f"malformed XML ({exc})") from exc
    except OSError as exc:
        raise InputError(path, f"unreadable annotation ({exc})") from exc
    leukocytes, red_cells = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        kept = (leukocytes if name in LEUKOCYTE_NAMES
                else red_cells if name in RED_CELL_NAMES else None)
        if kept is None:
            continue
        try:
            box = obj.find("bndbox")
            kept.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (AttributeError, TypeError, ValueError) as exc:
            raise InputError(path, f"a {name.upper()} object has no numeric bndbox ({exc})"
                             ) from exc
    return np.array(leukocytes, float).reshape(-1, 4), np.array(red_cells, float).reshape(-1, 4)


class Voc(Dataset):
    """Reads ``JPEGImages/`` + ``Annotations/`` with optional ``ImageSets/Main/{split}.txt``."""

    format = "voc"
    expects = "JPEGImages/*.jpg + Annotations/*.xml (optional ImageSets/Main/{split}.txt)"
    split_is_subfolder = False

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir()

    def _list(self) -> list[Item]:
        wanted = self.split_names(self.root / "ImageSets" / "Main" / f"{self.split}.txt")
        images = image_files(self.folder("JPEGImages"))
        xmls = sorted(p for p in self.folder("Annotations").iterdir() if p.suffix.lower() == ".xml")
        if wanted is not None:
            images = [p for p in images if p.stem in wanted]
            xmls = [p for p in xmls if p.stem in wanted]
            found = {p.stem for p in images}
            for name in sorted(wanted - found):
                self.problem(self.root / "JPEGImages" / name, f"listed in split {self.split!r} "
                             "but no image; skipped")
        return self.pair(images, xmls, "annotation")

    def _load(self, item: Item) -> Record:
        boxes, red_cells = read_voc_boxes(item.labels["annotation"])
        return box_record(self, item.image, read_image(item.image), boxes, red_cells)
