"""Per-image labels from a CSV beside a dataset: the cell's class and its patient or slide.

Labelled single-cell crops often come with a spreadsheet rather than labels in the file
names: ``file,class,patient``. Zheng Dataset 1's class file (``image ID,class label`` with
codes 1-5) is one. Columns are found by their header (case-insensitive); the file column
may hold stems, names with extensions or numbers (``1`` matches ``001.bmp``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from allseg.data.record import BLAST, LEUKOCYTE, Record
from allseg.errors import InputError

FILE_COLUMNS = ("file", "filename", "image", "image id", "image_id", "name")
CLASS_COLUMNS = ("class", "class label", "label", "cell type", "type")
GROUP_COLUMNS = ("patient", "slide", "group", "subject", "donor")
#: Class names (folder names, CSV classes) that mean "blast"; any other is a normal type.
BLAST_NAMES = frozenset({"blast", "blasts", "lymphoblast", "lymphoblasts", "all", "all_blast"})


@dataclass(frozen=True)
class ImageLabels:
    """What a table says of one image: its cell type and its patient or slide."""

    cell_type: str | None = None
    group: str | None = None

    @property
    def is_blast(self) -> bool:
        return is_blast_name(self.cell_type)


def is_blast_name(name: str | None) -> bool:
    """Whether a class name means a blast.

    >>> is_blast_name("Lymphoblast"), is_blast_name("lymphocyte"), is_blast_name(None)
    (True, False, False)
    """
    return name is not None and name.strip().lower() in BLAST_NAMES


def stem_key(name: str) -> str:
    """How a file is looked up: its stem, lower case, numbers without leading zeros.

    >>> stem_key("001.bmp"), stem_key("1"), stem_key("Im012_1.tif"), stem_key("P3_a")
    ('1', '1', 'im012_1', 'p3_a')
    """
    stem = Path(name.strip()).stem if Path(name.strip()).suffix[1:].isalpha() else name.strip()
    return str(int(stem)) if stem.isdigit() else stem.lower()


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def read_labels_table(path: str | Path, class_names: dict[str, str] | None = None
                      ) -> dict[str, ImageLabels]:
    """Map :func:`stem_key` of each listed file to its labels.

    ``class_names`` turns codes into names (``{"2": "lymphocyte"}``); a code it does not
    list is an error naming the line, so a typo never turns into a silent new class.
    """
    path = Path(path)
    try:
        rows = list(csv.reader(path.open(encoding="utf-8-sig", newline="")))
    except OSError as exc:
        raise InputError(path, f"cannot read the labels table ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, "the labels table is not UTF-8 text") from exc
    if not rows:
        raise InputError(path, "the labels table is empty")
    header = rows[0]
    file_col = _column(header, FILE_COLUMNS)
    class_col, group_col = _column(header, CLASS_COLUMNS), _column(header, GROUP_COLUMNS)
    if file_col is None or (class_col is None and group_col is None):
        raise InputError(path, f"header {header} needs a file column ({', '.join(FILE_COLUMNS)})"
                         f" and a class ({', '.join(CLASS_COLUMNS)}) or patient column "
                         f"({', '.join(GROUP_COLUMNS)})")
    table: dict[str, ImageLabels] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise InputError(path, f"{len(row)} fields, the header has {len(header)}", line)
        cell_type = row[class_col].strip() if class_col is not None else None
        if cell_type is not None and class_names is not None:
            if cell_type not in class_names:
                raise InputError(path, f"class {cell_type!r} is not in class_names "
                                 f"({', '.join(sorted(class_names))})", line)
            cell_type = class_names[cell_type]
        group = row[group_col].strip() if group_col is not None else None
        table[stem_key(row[file_col])] = ImageLabels(cell_type.lower() if cell_type else None,
                                                     group or None)
    return table


def apply_labels(record: Record, labels: ImageLabels) -> None:
    """Give a single-cell record the table's class (blast or a normal type) and group."""
    if labels.cell_type is not None:
        blast = labels.is_blast
        record.cell_type = None if blast else labels.cell_type
        if record.crop_label is not None:
            record.crop_label = int(blast)
        if record.cell_labels:
            record.cell_labels = dict.fromkeys(record.cell_labels, BLAST if blast else LEUKOCYTE)
    if labels.group is not None:
        record.group = labels.group
