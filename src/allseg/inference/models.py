"""Where model folders live and how a batch runs through a network."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from allseg.errors import ModelError

DEFAULT_MODEL = "default"


def resolve_model_dir(model: str | Path) -> Path:
    """``"default"`` means the model bundled in the package; anything else is a folder."""
    if str(model) == DEFAULT_MODEL:
        folder = Path(str(resources.files("allseg") / "weights" / "default"))
        if not (folder / "config.json").is_file():
            raise ModelError("the bundled default model is missing from this installation "
                             f"({folder}); reinstall allseg or pass --model PATH")
        return folder
    folder = Path(model)
    if not folder.is_dir():
        raise ModelError(f"{folder}: model folder not found (expected config.json + "
                         "*.safetensors, as written by 'allseg train')")
    return folder


class TorchRunner:
    """Run a network on numpy batches: eval mode, no autograd, channels-last; on CUDA
    when a GPU is present, with float16 autocast there."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, activation: str) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.activation = activation

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        cuda = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=cuda):
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            out = self.model(x.contiguous(memory_format=torch.channels_last)).float()
            if self.activation == "segment":
                out = torch.cat([out[:, :3].softmax(1), out[:, 3:].sigmoid()], 1)
            else:
                out = out.sigmoid()
            return out.cpu().numpy()
