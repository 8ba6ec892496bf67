"""Stage-2 cell classifiers: a crop around one leukocyte -> one blast logit."""

from __future__ import annotations

import torch
from torch import nn

from allseg.models.blocks import ClassifierHead, ClassifierModel, ConvBNReLU
from allseg.models.effnet_unet import (
    EFFNET_MEAN,
    EFFNET_STD,
    ENCODER_CHANNELS,
    EfficientNetLite0Encoder,
)
from allseg.models.unet import UNET_MEAN, UNET_STD


class CNNClassifier(ClassifierModel):
    """Five ConvBNReLU stages (widths ``width * (1, 2, 4, 8, 8)``), four 2x max-pools,
    global average pool, dropout, linear.

    Small on purpose: the training cells are mostly synthetic, so a big network would
    mostly learn the generator.
    """

    arch = "cnn_classifier"

    def __init__(self, width: int = 16, dropout: float = 0.3):
        if width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"cnn_classifier needs width >= 1 and 0 <= dropout < 1; got "
                             f"width={width}, dropout={dropout}")
        super().__init__({"width": width, "dropout": dropout}, UNET_MEAN, UNET_STD)
        widths = [self.in_channels] + [width * m for m in (1, 2, 4, 8, 8)]
        layers: list[nn.Module] = []
        for i in range(5):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers.append(ConvBNReLU(widths[i], widths[i + 1]))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(widths[-1], dropout)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EffNetClassifier(ClassifierModel):
    """EfficientNet-Lite0 encoder, global average pool of its stride-32 features, linear."""

    arch = "effnet_classifier"

    def __init__(self, dropout: float = 0.2, pretrained: bool = False):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"effnet_classifier needs 0 <= dropout < 1; got {dropout}")
        super().__init__({"dropout": dropout}, EFFNET_MEAN, EFFNET_STD)
        self.encoder = EfficientNetLite0Encoder(pretrained=pretrained)
        self.head = ClassifierHead(ENCODER_CHANNELS[-1], dropout)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])
