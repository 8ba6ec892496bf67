"""Torch datasets over in-memory samples (patches for stage 1, crops for stage 2)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from allseg.training.augment import (
    classification_augment,
    reseed,
    segmentation_augment,
    stain_red_cells_like_nuclei,
)
from allseg.training.samples import CLASS_BACKGROUND, IGNORE, CellSample, SegSample


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


def _item_rng() -> np.random.Generator:
    """A generator for one item, drawn from torch's, which Lightning seeds: reproducible,
    new every epoch, and different in every DataLoader worker."""
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))


#: Share of a sample's labelled background pixels that count as its darkest.
DARK_SHARE = 0.02
#: Side (canonical pixels, ~12 µm: wider than a red cell) of the window whose brightest
#: pixel stands for the slide around a pixel.
SLIDE_WINDOW = 41
#: At most this many darkest pixels are kept per sample (window centres are drawn from them).
MAX_DARK_PIXELS = 4096


def dark_background_pixels(sample: SegSample, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of the sample's darkest background pixels (its darkest 2%).

    Where red cells overlap in a crowded smear they are darker than any single red cell
    and nearly as dark as a nucleus: the segmenter took such clumps for small leukocytes.
    Windows centred on these pixels show it that they are background.

    >>> classes = np.zeros((10, 10), np.uint8); classes[:5] = 2  # a nucleus on top
    >>> image = np.full((10, 10, 3), 230, np.uint8); image[:5] = 60; image[7, 7] = 90
    >>> s = SegSample("x", image, classes, np.zeros((10, 10), np.float32))
    >>> dark_background_pixels(s, np.random.default_rng(0)).tolist()  # not the nucleus
    [77]
    """
    grey = sample.image.astype(np.float32).mean(axis=2)
    # Relative to the brightest pixel nearby (the slide): uneven lighting does not decide.
    slide = cv2.dilate(grey, np.ones((SLIDE_WINDOW, SLIDE_WINDOW), np.uint8))
    darkness = (grey / np.maximum(slide, 1.0)).ravel()
    background = np.flatnonzero(sample.classes.ravel() == CLASS_BACKGROUND)
    if len(background) == 0:
        return background
    n = max(1, round(len(background) * DARK_SHARE))
    darkest = background[np.argpartition(darkness[background], n - 1)[:n]]
    if len(darkest) > MAX_DARK_PIXELS:
        darkest = rng.choice(darkest, MAX_DARK_PIXELS, replace=False)
    return darkest


class SegPatchDataset(Dataset):
    """Random augmented patches; most are centred near a leukocyte so cells are not rare,
    a ``dark_background`` share on the darkest background (red-cell clumps)."""

    def __init__(self, samples: list[SegSample], patch_size: int, length: int, seed: int,
                 purple_red_cells: float = 0.0, dark_background: float = 0.0) -> None:
        self.samples = samples
        self.patch_size = patch_size
        self.length = length
        self.augment = segmentation_augment(patch_size, seed)
        self.purple_red_cells = purple_red_cells
        self.dark_background = dark_background
        self.dark_pixels: list[np.ndarray] = []
        if dark_background > 0:
            rng, by_sample = np.random.default_rng(seed), {}
            for s in samples:  # a repeated sample is one object: computed once
                if id(s) not in by_sample:
                    by_sample[id(s)] = dark_background_pixels(s, rng)
                self.dark_pixels.append(by_sample[id(s)])

    def __len__(self) -> int:
        return self.length

    def _window(self, pick: int, rng: np.random.Generator) -> tuple[slice, slice]:
        """A window of twice the patch size (room for rotation) in sample ``pick``: around
        a dark background pixel (``dark_background`` of the time), else around a cell if
        the sample has one (80%), else anywhere."""
        sample = self.samples[pick]
        h, w = sample.classes.shape
        half = self.patch_size
        fg = np.flatnonzero((sample.classes > 0) & (sample.classes != IGNORE))
        dark = self.dark_pixels[pick] if self.dark_pixels else ()  # option off
        if len(dark) and rng.random() < self.dark_background:
            cy, cx = divmod(int(dark[rng.integers(len(dark))]), w)
        elif len(fg) and rng.random() < 0.8:
            cy, cx = divmod(int(fg[rng.integers(len(fg))]), w)
        else:
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, x0 = max(0, min(cy - half, h - 2 * half)), max(0, min(cx - half, w - 2 * half))
        return slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = _item_rng()
        pick = int(rng.integers(len(self.samples)))  # ``index`` is ignored: patches are random
        sample = self.samples[pick]
        ys, xs = self._window(pick, rng)
        image = sample.image[ys, xs]
        if rng.random() < self.purple_red_cells:
            image = stain_red_cells_like_nuclei(image, sample.classes[ys, xs], rng)
        reseed(self.augment, rng)
        out = self.augment(image=image,
                           masks=[sample.classes[ys, xs], sample.centre[ys, xs]])
        classes, centre = out["masks"]
        return {"image": _to_chw(out["image"]),
                "classes": torch.from_numpy(np.ascontiguousarray(classes)).long(),
                "centre": torch.from_numpy(np.ascontiguousarray(centre)).float()}


class SegImageDataset(Dataset):
    """Whole canonical images, unaugmented, for validation."""

    def __init__(self, samples: list[SegSample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        return {"image": _to_chw(s.image), "classes": torch.from_numpy(s.classes).long(),
                "centre": torch.from_numpy(s.centre).float()}


class CellCropDataset(Dataset):
    """Cell crops with blast labels and loss weights; augmented for training only.

    ``type_weights`` weighs normal cells by their type (lymphocytes, the blast's look-alike,
    up); a cell whose type is not listed or not known weighs 1.
    """

    def __init__(self, samples: list[CellSample], augment: bool, seed: int = 0,
                 type_weights: dict[str, float] | None = None) -> None:
        self.samples = samples
        self.augment = classification_augment(seed) if augment else None
        self.type_weights = type_weights or {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        if self.augment is not None:
            reseed(self.augment, _item_rng())
        crop = self.augment(image=s.crop)["image"] if self.augment else s.crop
        return {"image": _to_chw(crop), "label": torch.tensor(float(s.label)),
                "weight": torch.tensor(float(s.loss_weight(self.type_weights)))}
