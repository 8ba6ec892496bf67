"""Augmentations: geometry, scale, stain colour and acquisition nuisance.

Stain and scale variation are not optional: users run allseg on stains and
magnifications it has never seen.
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np

from allseg.training.samples import CLASS_BACKGROUND, CLASS_NUCLEUS


def _colour_and_noise() -> list[A.BasicTransform]:
    """Stain (HED and colour shifts) and acquisition: soft focus, low resolution (down-up
    sampling, as in 224x224 fields or phone photos), sensor noise and JPEG."""
    return [
        A.OneOf([
            A.HEStain(method="random_preset", intensity_scale_range=(0.7, 1.3),
                      intensity_shift_range=(-0.15, 0.15), p=1.0),
            A.HueSaturationValue(hue_shift_limit=18, sat_shift_limit=30, val_shift_limit=20,
                                 p=1.0),
            A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.3, hue=0.06, p=1.0),
        ], p=0.85),
        A.RandomBrightnessContrast(p=0.3),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5), p=1.0), A.Defocus(radius=(1, 3), p=1.0)],
                p=0.2),
        A.Downscale(scale_range=(0.35, 0.9), p=0.2),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.25),
        A.ImageCompression(quality_range=(30, 95), p=0.3),
    ]


#: A leukocyte nucleus's colour in Wright-Giemsa, for patches that show no nucleus.
TYPICAL_NUCLEUS_RGB = (96, 64, 144)
#: Background pixels this much darker (8-bit L*) than the patch's slide are wholly cells.
CELL_DARKNESS = 12.0


def stain_red_cells_like_nuclei(image: np.ndarray, classes: np.ndarray,
                                rng: np.random.Generator) -> np.ndarray:
    """Give the red cells and platelets of a patch the nuclei's hue.

    Some labs' stains colour red cells as purple as leukocyte nuclei (the phone photos of
    TXL-PBC's Raabin): a segmenter that learned "purple means nucleus" from other labs
    then takes them for leukocytes (0.7% of Raabin's red cells when it never saw Raabin).
    Background pixels darker than the slide (red cells and platelets)
    get their chroma (a*, b*) moved toward the nuclei's, the patch's own or a typical
    one, by a random strength, and may darken; their lightness pattern (central pallor,
    edges) stays, so only shape and texture tell them from nuclei.
    """
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    background = classes == CLASS_BACKGROUND
    if np.count_nonzero(background) < 16:
        return image
    lightness = lab[..., 0]
    slide = np.percentile(lightness[background], 90)
    # 0 on the slide, 1 from CELL_DARKNESS below it: soft, so no cut-out edges appear.
    weight = np.clip((slide - lightness) / CELL_DARKNESS, 0, 1) * background
    if not weight.any():
        return image
    nucleus = classes == CLASS_NUCLEUS
    if np.count_nonzero(nucleus) >= 50:
        target = lab[nucleus, 1:].mean(axis=0)
    else:
        typical = np.uint8([[TYPICAL_NUCLEUS_RGB]])
        target = cv2.cvtColor(typical, cv2.COLOR_RGB2LAB)[0, 0, 1:].astype(np.float32)
    weight *= rng.uniform(0.4, 1.0)
    lab[..., 1:] += weight[..., None] * (target - lab[..., 1:])
    lab[..., 0] *= 1 - weight * rng.uniform(0, 0.25)
    recoloured = cv2.cvtColor(lab.clip(0, 255).round().astype(np.uint8), cv2.COLOR_LAB2RGB)
    return np.where((weight > 0)[..., None], recoloured, image)  # the rest keeps its bytes


def reseed(transform: A.BaseCompose | A.BasicTransform, rng: np.random.Generator) -> None:
    """Give every transform of a pipeline a random stream of its own, drawn from ``rng``.

    albumentations 2.0.8 seeds each transform of a ``Compose(seed=...)`` with that same
    seed, so transforms that draw alike decide alike: HorizontalFlip and VerticalFlip
    always flipped together (no mirror image was ever made), and the other transforms'
    decisions were tied to one another. Datasets call this per item with the item's own
    generator, so DataLoader workers do not replay one sequence either.
    """
    transform.set_random_state(np.random.default_rng(int(rng.integers(2**63))),
                               random.Random(int(rng.integers(2**63))))
    if isinstance(transform, A.BaseCompose):  # Compose, OneOf: their children too
        for child in transform.transforms:
            reseed(child, rng)


def _seeded(transforms: list[A.BasicTransform], seed: int) -> A.Compose:
    """A pipeline whose transforms draw independently, reproducibly from ``seed``."""
    pipeline = A.Compose(transforms, seed=seed)
    reseed(pipeline, np.random.default_rng(seed))
    return pipeline


def segmentation_augment(patch_size: int, seed: int) -> A.Compose:
    """Augment an image with its class and centre masks (masks move with the image).

    The wide zoom (0.6-1.6) stands for magnification the scale estimate got wrong, so a
    cell is still found whole when the estimate is off, and re-measured (see
    :mod:`allseg.inference.scale`)."""
    return _seeded([
        A.Affine(scale=(0.6, 1.6), rotate=(-180, 180), border_mode=cv2.BORDER_REFLECT_101,
                 p=0.7),
        A.PadIfNeeded(patch_size, patch_size, border_mode=cv2.BORDER_REFLECT_101),
        A.RandomCrop(patch_size, patch_size),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        *_colour_and_noise(),
    ], seed)


def classification_augment(seed: int) -> A.Compose:
    """Augment a cell crop; mild scale only, since cell size is a blast cue."""
    return _seeded([
        A.Affine(scale=(0.9, 1.1), rotate=(-180, 180), translate_percent=(-0.05, 0.05),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.8),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        *_colour_and_noise(),
    ], seed)
