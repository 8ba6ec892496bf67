"""Networks of the two stages, one contract, one registry, one model-folder format.

- ``build_model(arch, **config)`` / ``ARCHITECTURES``: the networks by name.
- ``AllsegModel``: takes (B, 3, H, W) RGB 0..255, normalises itself; segmenters return
  (B, 4, H, W) = 3 class logits (``SEG_CLASSES``) + 1 centre logit for any H, W;
  classifiers return (B, 1) blast logits.
- ``save_model_folder`` / ``load_model_folder``: config.json + safetensors.
- ``export_onnx`` / ``check_onnx``: ONNX for preprocessing-free CPU inference.
"""

from allseg.models.blocks import (
    SEG_CLASSES,
    SEG_OUT_CHANNELS,
    AllsegModel,
    ClassifierModel,
    SegmenterModel,
)
from allseg.models.folder import load_model_folder, save_model_folder
from allseg.models.onnx_export import check_onnx, export_onnx
from allseg.models.registry import ARCHITECTURES, build_model

__all__ = [
    "ARCHITECTURES",
    "SEG_CLASSES",
    "SEG_OUT_CHANNELS",
    "AllsegModel",
    "ClassifierModel",
    "SegmenterModel",
    "build_model",
    "check_onnx",
    "export_onnx",
    "load_model_folder",
    "save_model_folder",
]
