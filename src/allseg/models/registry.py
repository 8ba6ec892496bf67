"""Architecture names -> classes. The model folder, trainer and CLI refer to models by name."""

from __future__ import annotations

from typing import Any

from allseg.models.blocks import AllsegModel
from allseg.models.classifier import CNNClassifier, EffNetClassifier
from allseg.models.effnet_unet import EffNetUNet
from allseg.models.unet import UNetSmall

ARCHITECTURES: dict[str, type[AllsegModel]] = {
    cls.arch: cls for cls in (UNetSmall, EffNetUNet, CNNClassifier, EffNetClassifier)
}


def build_model(arch: str, **kwargs: Any) -> AllsegModel:
    """Build ``arch`` from constructor kwargs, e.g. ``base_channels=8`` or ``pretrained=True``."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown model architecture {arch!r}; known: "
                         f"{', '.join(sorted(ARCHITECTURES))}") from None
    return cls(**kwargs)
