"""The one model contract (base classes) and the small layers every architecture shares.

Every allseg network takes raw RGB ``(B, 3, H, W)`` float32 in 0..255 and normalises
inside itself, so a saved model or an ONNX file needs no preprocessing recipe beside it.
Segmenters additionally pad to their ``size_multiple`` and crop back, so callers may feed
any tile size.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

SEG_CLASSES = ("background", "cytoplasm", "nucleus")
"""Class logits of a segmenter, in channel order."""

SEG_OUT_CHANNELS = len(SEG_CLASSES) + 1
"""Segmenter output: the class logits plus one "centre" logit (sigmoid -> distance map)."""


class AllsegModel(nn.Module, metaclass=ABCMeta):
    """Base class: input checks, built-in normalisation and self-description.

    Subclasses set ``arch`` and ``task``, call ``super().__init__(config, mean, std)`` with
    the constructor kwargs that fix their tensor shapes, and implement ``forward_normalized``.
    ``config`` is what ``build_model(arch, **config)`` needs to rebuild the same network.
    """

    arch: ClassVar[str]
    task: ClassVar[str]
    in_channels: ClassVar[int] = 3
    out_channels: ClassVar[int]
    min_size: ClassVar[int] = 1

    def __init__(self, config: dict[str, Any], mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.config = dict(config)
        # Buffers, so they travel with the weights and into ONNX as constants.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def size_multiple(self) -> int:
        """Input H and W are handled internally as multiples of this (1 = any size)."""
        return 1

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError that names the expected shape when ``x`` cannot be used."""
        expected = f"(B, {self.in_channels}, H, W) float RGB in 0..255"
        if x.dim() != 4:
            raise ValueError(f"{self.arch} expects a 4-D tensor {expected}; got shape "
                             f"{tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self.arch} expects {self.in_channels} channels {expected}; got "
                             f"shape {tuple(x.shape)} (channels-last input? use "
                             "x.permute(0, 3, 1, 2))")
        if min(x.shape[2], x.shape[3]) < self.min_size:
            raise ValueError(f"{self.arch} needs H, W >= {self.min_size}; got shape "
                             f"{tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.arch} expects a float tensor {expected}; got {x.dtype}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_normalized((x - self.mean) / self.std)

    @abstractmethod
    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an already normalised input."""


class SegmenterModel(AllsegModel):
    """A segmenter: ``(B, 3, H, W) -> (B, SEG_OUT_CHANNELS, H, W)`` for any H, W.

    Subclasses implement ``forward_padded`` for inputs whose H, W are multiples of
    ``size_multiple``; this class pads (reflect) and crops so the output matches the input.
    """

    task = "segment"
    out_channels = SEG_OUT_CHANNELS

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)
        return self.forward_padded(padded)[..., :h, :w]

    @abstractmethod
    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an input whose H, W are multiples of ``size_multiple``."""


class ClassifierModel(AllsegModel):
    """A cell classifier: ``(B, 3, S, S) -> (B, 1)`` blast logit; global pooling allows any S."""

    task = "classify"
    out_channels = 1
    min_size = 32


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad H, W at the bottom/right up to a multiple, by reflection.

    Reflection keeps image statistics at the border (zeros would look like a dark frame).
    It cannot pad by more than the size itself, so tiny inputs fall back to replicate.
    The pad is always applied (possibly by 0) so a traced ONNX graph stays shape-generic.
    """
    h, w = x.shape[-2:]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, [0, pad_w, 0, pad_h], mode=mode)


class ConvBNReLU(nn.Sequential):
    """3x3 (by default) convolution, BatchNorm, ReLU: the plain CNN unit."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two ConvBNReLU: the U-Net stage."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(ConvBNReLU(in_ch, out_ch), ConvBNReLU(out_ch, out_ch))


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip feature (if any), DoubleConv.

    Bilinear upsampling (not transposed conv) avoids checkerboard artefacts and has no
    weights; ``scale_factor=2`` is exact because inputs are padded to the size multiple.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.conv = DoubleConv(in_ch + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class ClassifierHead(nn.Sequential):
    """Global average pool, dropout, linear -> one blast logit."""

    def __init__(self, in_ch: int, dropout: float):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_ch, 1),
        )
