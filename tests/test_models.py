"""One test base that every registered architecture must pass (segmentation_models_pytorch style).

Small configs and ``pretrained=False`` keep the file fast; one test loads the real
offline ImageNet weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from allseg.models import (
    ARCHITECTURES,
    SEG_CLASSES,
    SEG_OUT_CHANNELS,
    AllsegModel,
    build_model,
    check_onnx,
    export_onnx,
    load_model_folder,
    save_model_folder,
)
from allseg.models.effnet_unet import imagenet_weights_path

SMALL_CONFIGS = {
    "unet_small": {"base_channels": 4, "depth": 3},
    "effnet_unet": {"decoder_channels": (16, 16, 8, 8, 8)},
    "cnn_classifier": {"width": 4},
    "effnet_classifier": {},
}

# ONNX Runtime reorders float32 sums (other conv kernels), so logits differ by rounding
# only; observed ~1e-7. 1e-4 abs is far below anything that changes a mask or a call.
ONNX_ATOL = 1e-4


def make(arch: str) -> AllsegModel:
    torch.manual_seed(0)
    return build_model(arch, **SMALL_CONFIGS[arch])


def example_input(model: AllsegModel, batch: int = 1, hw: tuple[int, int] | None = None):
    """Odd sizes on purpose: segmenters must pad and crop, classifiers pool globally."""
    hw = hw or ((97, 131) if model.task == "segment" else (65, 65))
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, *hw, generator=g) * 255


def expected_shape(model: AllsegModel, x: torch.Tensor) -> tuple[int, ...]:
    if model.task == "segment":
        return (x.shape[0], SEG_OUT_CHANNELS, *x.shape[2:])
    return (x.shape[0], 1)


def test_every_architecture_is_covered():
    assert set(SMALL_CONFIGS) == set(ARCHITECTURES)
    assert SEG_CLASSES == ("background", "cytoplasm", "nucleus") and SEG_OUT_CHANNELS == 4


def test_unknown_arch_lists_known_names():
    with pytest.raises(ValueError, match="unet_small"):
        build_model("resnet9000")


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
class TestArchitecture:
    def test_contract_attributes(self, arch):
        model = make(arch)
        assert model.arch == arch and model.in_channels == 3
        assert model.task in ("segment", "classify")
        assert model.out_channels == (SEG_OUT_CHANNELS if model.task == "segment" else 1)
        assert model.size_multiple >= 1
        assert build_model(arch, **model.config).config == model.config  # rebuildable

    def test_forward_shape_on_odd_sizes(self, arch):
        model = make(arch).eval()
        sizes = [None, (5, 7)] if model.task == "segment" else [None, (32, 47)]
        for hw in sizes:
            x = example_input(model, hw=hw)
            with torch.no_grad():
                y = model(x)
            assert y.shape == expected_shape(model, x) and y.dtype == torch.float32

    def test_backward_gives_finite_grads_everywhere(self, arch):
        model = make(arch).train()
        model(example_input(model, batch=2)).square().mean().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{name} gets no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has non-finite gradient"

    @pytest.mark.parametrize("shape", [(3, 64, 64), (1, 4, 64, 64), (1, 64, 64, 3)])
    def test_wrong_input_shape_is_a_clear_error(self, arch, shape):
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            make(arch)(torch.zeros(shape))

    def test_eval_is_deterministic(self, arch):
        model = make(arch).eval()
        x = example_input(model)
        with torch.no_grad():
            assert torch.equal(model(x), model(x))

    def test_model_folder_round_trip(self, arch, tmp_path: Path):
        model = make(arch)
        model.train()(example_input(model, batch=2))  # move BN running stats off their init
        model.eval()
        stage = "segmenter" if model.task == "segment" else "classifier"
        save_model_folder(tmp_path, {stage: model}, meta={"note": "test"})
        loaded, meta = load_model_folder(tmp_path)
        assert meta == {"note": "test"} and not loaded[stage].training
        x = example_input(model)
        with torch.no_grad():
            assert torch.equal(model(x), loaded[stage](x))

    def test_onnx_matches_torch_on_another_size(self, arch, tmp_path: Path):
        model = make(arch).eval()
        if model.task == "segment":
            export_hw, x = (64, 64), example_input(model, batch=2)
        else:
            export_hw, x = (65, 65), example_input(model, batch=3)
        path = export_onnx(model, tmp_path / f"{arch}.onnx", example_hw=export_hw)
        assert check_onnx(model, path, x) <= ONNX_ATOL


def test_effnet_unet_loads_offline_imagenet_weights():
    imagenet = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    pretrained = build_model("effnet_unet", pretrained=True)
    random = build_model("effnet_unet", pretrained=False)
    for name in ("_conv_stem.weight", "_blocks.15._project_conv.weight", "_bn0.running_var"):
        loaded = pretrained.encoder.state_dict()[name]
        assert torch.equal(loaded, imagenet[name])
        assert not torch.equal(loaded, random.encoder.state_dict()[name])
    assert "pretrained" not in pretrained.config  # a loaded folder must not re-read ImageNet
