"""Single-cell images sorted into one folder per class: ``blast/``, ``lymphocyte/``, ...

The layout most labelled-cell collections come in (and what a user makes by dragging crops
into folders). A folder named like a blast (``blast``, ``lymphoblast``, ``ALL``...) holds the
positives; every other folder is a normal leukocyte type, kept as the record's
``cell_type`` so the classifier can weigh look-alikes (lymphocytes) up.
"""

from __future__ import annotations

from pathlib import Path

from allseg.data.labels_table import BLAST_NAMES, is_blast_name
from allseg.data.readers.allidb2 import add_weak_crop_parts
from allseg.data.readers.base import Dataset, Item, image_files
from allseg.data.record import BLAST, LEUKOCYTE, Record
from allseg.io.images import read_image


def _class_folders(root: Path) -> list[Path]:
    """Sub-folders holding images directly, sorted."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and image_files(p))


class ClassFolders(Dataset):
    """Reads ``ROOT/<class>/*.png|jpg|tif|bmp``; one cell per image, centred."""

    format = "classes"
    expects = (f"one sub-folder per class of single-cell images, one of them named like a "
               f"blast ({', '.join(sorted(BLAST_NAMES))}), e.g. blast/ and lymphocyte/")

    @classmethod
    def matches(cls, root: Path) -> bool:
        folders = _class_folders(root)
        return len(folders) >= 2 and any(is_blast_name(f.name) for f in folders)

    def _list(self) -> list[Item]:
        folders = _class_folders(self.root)
        if not any(is_blast_name(f.name) for f in folders):
            self.problem(self.root, "no class folder is named like a blast "
                         f"({', '.join(sorted(BLAST_NAMES))}): every image counts as normal")
        return [Item(path, info={"class": folder.name.lower()})
                for folder in folders for path in image_files(folder)]

    def _load(self, item: Item) -> Record:
        blast = is_blast_name(item.info["class"])
        record = Record(source=item.image, image=read_image(item.image), crop_label=int(blast),
                        cell_type=None if blast else item.info["class"], dataset=self.format)
        if self.weak_labels:
            add_weak_crop_parts(record, None)
            record.cell_labels = {1: BLAST if blast else LEUKOCYTE}
        return record
