"""Named evaluation splits of a dataset's image listing.

BCCD's official test split is the VOC reader's business
(``open_dataset(root, "voc", split="test")``); these splits pick images by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: The fixed held-out set of the original ALL-IDB projects: 10 ALL and 10 healthy fields.
ALLIDB_TEST20 = ("Im006_1", "Im020_1", "Im024_1", "Im026_1", "Im028_1", "Im031_1", "Im053_1",
                 "Im057_1", "Im060_1", "Im063_1", "Im035_0", "Im041_0", "Im047_0", "Im069_0",
                 "Im074_0", "Im088_0", "Im095_0", "Im099_0", "Im101_0", "Im106_0")
SPLITS = ("all", "allidb-test20", "fold-K/N")
_FOLD = re.compile(r"fold-(\d+)(?:/(\d+))?$")


def select(names: Iterable[str], split: str | None, folds: int = 5) -> list[str]:
    """The names (file stems) of ``split``, in the order given.

    - ``None`` or ``"all"``: every name;
    - ``"allidb-test20"``: the names in :data:`ALLIDB_TEST20`;
    - ``"fold-K/N"`` (or ``"fold-K"`` with N = ``folds``): the names at positions i with
      ``i % N == K``. Pass the dataset's listing order (``[p.stem for p in ds.items]``,
      which the readers sort): that is the rule of the trainer's ``hold_out = [N, K]``,
      so ``fold-K/N`` scores exactly the images that training held out.

    >>> select(["Im001_1", "Im006_1", "Im035_0"], "allidb-test20")
    ['Im006_1', 'Im035_0']
    >>> select(list("abcdefg"), "fold-1/3")
    ['b', 'e']
    """
    names = list(names)
    if split is None or split == "all":
        return names
    if split == "allidb-test20":
        wanted = set(ALLIDB_TEST20)
        return [n for n in names if n in wanted]
    match = _FOLD.match(split)
    if match is None:
        raise ValueError(f"unknown split {split!r}; choose all, allidb-test20 or fold-K/N "
                         "(e.g. fold-0/5)")
    k, n = int(match.group(1)), int(match.group(2) or folds)
    if not 0 <= k < n:
        raise ValueError(f"split {split!r}: need 0 <= K < N")
    return [name for i, name in enumerate(names) if i % n == k]
