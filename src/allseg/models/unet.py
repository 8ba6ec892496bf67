"""``unet_small``: a plain, light U-Net trained from scratch (the CPU baseline)."""

from __future__ import annotations

import torch
from torch import nn

from allseg.models.blocks import DecoderBlock, DoubleConv, SegmenterModel

# Raw 0..255 in, roughly -1..1 to the first conv. No pretraining, so any centring works.
UNET_MEAN = (127.5, 127.5, 127.5)
UNET_STD = (127.5, 127.5, 127.5)


class UNetSmall(SegmenterModel):
    """U-Net with ``depth`` max-pool downsamplings; level i has ``base_channels * 2**i`` maps.

    Defaults (16, 4) give about 1.9 M parameters: enough capacity for three colour-defined
    classes and a centre map, and fast on a laptop CPU.
    """

    arch = "unet_small"

    def __init__(self, base_channels: int = 16, depth: int = 4):
        if base_channels < 1 or not 1 <= depth <= 6:
            raise ValueError(f"unet_small needs base_channels >= 1 and 1 <= depth <= 6; got "
                             f"base_channels={base_channels}, depth={depth}")
        super().__init__({"base_channels": base_channels, "depth": depth}, UNET_MEAN, UNET_STD)
        self.depth = depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [DoubleConv(self.in_channels, widths[0])]
            + [DoubleConv(widths[i], widths[i + 1]) for i in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        # decoder[i] takes level i+1 up to level i.
        self.decoder = nn.ModuleList(
            [DecoderBlock(widths[i + 1], widths[i], widths[i]) for i in range(depth)]
        )
        self.head = nn.Conv2d(widths[0], self.out_channels, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        return 2**self.depth

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.encoder[0](x)]
        for stage in self.encoder[1:]:
            skips.append(stage(self.pool(skips[-1])))
        x = skips.pop()
        for block in reversed(self.decoder):
            x = block(x, skips.pop())
        return self.head(x)
