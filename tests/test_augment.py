"""Augmentations: masks move with the image; only the segmenter sees greyscale patches."""

from __future__ import annotations

import numpy as np

from allseg.synth import generate_field
from allseg.training.augment import classification_augment, segmentation_augment


def _is_grey(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1])
                and np.array_equal(image[..., 1], image[..., 2]))


def test_segmenter_sees_some_greyscale_patches_and_masks_follow() -> None:
    field = generate_field(np.random.default_rng(4), 160, 160, um_per_px=0.3)
    classes = (field.instances > 0).astype(np.uint8)
    augment = segmentation_augment(96, seed=0)
    grey = 0
    for _ in range(80):
        out = augment(image=field.image, masks=[classes, classes.astype(np.float32)])
        assert out["image"].shape == (96, 96, 3) and out["masks"][0].shape == (96, 96)
        assert set(np.unique(out["masks"][0])) <= {0, 1}
        grey += _is_grey(out["image"])
    assert 3 <= grey <= 30  # about 15% of 80


def test_classifier_crops_keep_their_colour() -> None:
    crop = generate_field(np.random.default_rng(5), 96, 96, um_per_px=0.3).image
    augment = classification_augment(seed=0)
    assert not any(_is_grey(augment(image=crop)["image"]) for _ in range(80))
