"""Dataset readers: one per on-disk layout, all yielding :class:`~allseg.data.record.Record`."""

from __future__ import annotations

from pathlib import Path

from allseg.data.readers.allidb1 import AllIdb1
from allseg.data.readers.allidb2 import AllIdb2
from allseg.data.readers.base import Dataset
from allseg.data.readers.classfolders import ClassFolders
from allseg.data.readers.maskfolder import MaskFolder
from allseg.data.readers.voc import Voc
from allseg.data.readers.yolo import Yolo
from allseg.errors import InputError

READERS: dict[str, type[Dataset]] = {
    cls.format: cls for cls in (AllIdb1, AllIdb2, MaskFolder, Voc, Yolo, ClassFolders)
}
FORMATS = tuple(READERS)
#: Most specific layouts first: a VOC or YOLO root must not be taken for a mask folder.
DETECTION_ORDER = ("allidb1", "voc", "yolo", "masks", "allidb2", "classes")


def detect_format(root: str | Path) -> str:
    """Name the layout of ``root``, or raise an InputError listing what each format expects."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    for name in DETECTION_ORDER:
        if READERS[name].matches(root):
            return name
    tried = "; ".join(f"{name}: {READERS[name].expects}" for name in FORMATS)
    raise InputError(root, f"no known dataset layout here; tried: {tried}")


def open_dataset(root: str | Path, format: str = "auto", split: str | None = None,
                 strict: bool = False, weak_labels: bool = True) -> Dataset:
    """Open ``root`` with the reader for ``format`` (``"auto"`` detects it)."""
    name = detect_format(root) if format == "auto" else format
    if name not in READERS:
        raise InputError(root, f"unknown format {format!r}; choose from auto, {', '.join(FORMATS)}")
    return READERS[name](root, split=split, strict=strict, weak_labels=weak_labels)


__all__ = ["FORMATS", "Dataset", "detect_format", "open_dataset"]
