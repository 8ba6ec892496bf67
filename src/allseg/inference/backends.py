"""Inference backends: the same runner contract on torch or onnxruntime.

A *runner* maps a numpy float32 batch ``(B, 3, H, W)`` RGB 0..255 to numpy float32
outputs with the stage's activation applied ("segment": softmax over channels 0..2,
sigmoid on channel 3; "classify": sigmoid). ``TorchRunner`` lives in
``allseg.inference.models``; ``OnnxRunner`` here runs an exported graph.

``make_runner`` picks the backend. For "onnx" the graph comes from, in order:

1. ``<model_dir>/<stage>.onnx`` written by ``allseg export`` (a model folder is untrusted
   input: fixed file name, size limit, no external data, input/output names checked,
   and a numeric check against the torch weights; any failure is a ModelError naming
   the file);
2. the per-user cache ``<cache root>/<key>/<stage>.onnx``, where the cache root is
   ``cache_dir`` or ``$XDG_CACHE_HOME/allseg/onnx`` (default ``~/.cache/allseg/onnx``)
   and ``key`` is a sha256 of the weights (the ``.safetensors`` file when ``model_dir``
   is given, else the state dict), the allseg and torch versions, the opset and the
   export size. A missing or unusable cache entry is (re)exported to a temporary file
   and renamed into place, so concurrent runs never see half a file. A read-only cache
   falls back to a throw-away export in a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import allseg
from allseg.errors import ModelError
from allseg.inference.models import TorchRunner
from allseg.models.blocks import AllsegModel
from allseg.models.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
ACTIVATIONS = ("segment", "classify")
MAX_ONNX_BYTES = 1 << 30
ONNX_TOLERANCE = 1e-3  # max |logit difference| torch vs onnxruntime (same as allseg.export)
SEGMENTER_EXAMPLE_HW = (256, 256)

Runner = Callable[[np.ndarray], np.ndarray]


def set_torch_threads(threads: int | None = None) -> None:
    """Leave torch's thread defaults alone unless ``threads`` is given explicitly.

    No measurement so far has shown a better setting than torch's own default (one
    intra-op thread per physical core), so there is nothing to tune here.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        torch.set_num_threads(threads)


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/allseg/onnx``, or ``~/.cache/allseg/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "allseg" / "onnx"


def apply_activation(logits: np.ndarray, activation: str) -> np.ndarray:
    """The numpy twin of TorchRunner's activations (float32 in, float32 out).

    Computed in place in float32: on 4 x 608 x 800 logits (a full field) this takes ~5 ms,
    where the former ``logaddexp`` sigmoid and concatenation took ~30 ms.
    """
    logits = np.asarray(logits, dtype=np.float32)
    out = np.empty_like(logits)
    if activation == "segment":
        cls, probs = logits[:, :3], out[:, :3]
        np.subtract(cls, cls.max(axis=1, keepdims=True), out=probs)
        np.exp(probs, out=probs)
        probs /= probs.sum(axis=1, keepdims=True)
        _sigmoid(logits[:, 3:], out[:, 3:])
        return out
    return _sigmoid(logits, out)


#: exp(88) is still finite in float32; a logit below -88 gives a probability under 1e-38.
_MAX_EXPONENT = np.float32(88.0)


def _sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) into ``out``, the exponent capped so nothing overflows."""
    np.negative(x, out=out)
    np.minimum(out, _MAX_EXPONENT, out=out)
    np.exp(out, out=out)
    out += np.float32(1.0)
    return np.reciprocal(out, out=out)


def read_onnx(path: str | Path) -> bytes:
    """Read and validate an ONNX file from an untrusted folder; returns its bytes.

    Refused (ModelError naming the file): missing, over ``MAX_ONNX_BYTES``, not a
    parseable ONNX model, tensors stored as external data (a path the file chooses),
    or not the ``image`` -> ``logits`` graph that ``export_onnx`` writes.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise ModelError(f"{path}: larger than {MAX_ONNX_BYTES} bytes; refusing to load")
    data = path.read_bytes()
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ModelError(f"{path}: not a readable ONNX model ({exc}); delete it or re-run "
                         "'allseg export'") from exc
    graph = proto.graph
    if not graph.node:
        raise ModelError(f"{path}: not a readable ONNX model (empty graph); delete it or "
                         "re-run 'allseg export'")
    external = [t.name for t in graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ModelError(f"{path}: refusing an ONNX model with external tensor data "
                         f"({', '.join(external[:3])}); allseg exports self-contained files")
    init_names = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in init_names]
    outputs = [o.name for o in graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ModelError(f"{path}: expected one input {INPUT_NAME!r} and one output "
                         f"{OUTPUT_NAME!r} (as written by 'allseg export'); got inputs "
                         f"{inputs}, outputs {outputs}")
    return data


class OnnxRunner:
    """Run an exported graph with onnxruntime (CPU) on numpy batches.

    Same call contract as TorchRunner. ``threads`` defaults to ``os.cpu_count()``
    intra-op threads; graph optimisation level ALL. ``backend`` names what runs, for the
    outputs' model record ("onnx", or "onnx-int8" for a quantised graph).
    """

    backend = "onnx"

    def __init__(self, onnx_path: str | Path, activation: str,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        self.path = Path(onnx_path)
        self.activation = activation
        self.threads = threads
        data = read_onnx(self.path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(data, sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"{self.path}: onnxruntime cannot load this model ({exc}); "
                             "delete it or re-run 'allseg export'") from exc
        shape = self.session.get_inputs()[0].shape
        self.input_shape = [d if isinstance(d, int) else None for d in shape]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw network outputs (no activation)."""
        x = np.ascontiguousarray(batch, np.float32)
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return apply_activation(self.logits(batch), self.activation)


#: CPU feature flags (Linux ``/proc/cpuinfo``) of int8 dot-product instructions, where
#: ONNX Runtime's int8 convolutions beat float32: x86 VNNI / AMX, Arm dot product.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


def cpu_has_int8_dot(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has int8 dot-product instructions (False where it cannot tell)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and INT8_DOT_FLAGS & set(value.split()):
            return True
    return False


def resolve_backend(backend: str) -> str:
    """"auto" -> "torch" when CUDA is available (or onnxruntime is missing); else
    "onnx-int8" on CPUs with int8 dot products (``cpu_has_int8_dot``), else "onnx"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if torch.cuda.is_available():
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx-int8" if cpu_has_int8_dot() else "onnx"


def make_runner(model: AllsegModel, activation: str, backend: str = "auto",
                cache_dir: Path | None = None, *, stage: str | None = None,
                model_dir: Path | None = None, example_hw: tuple[int, int] | None = None,
                threads: int | None = None, canonical_um_per_px: float = 0.3) -> Runner:
    """A runner for ``model`` on the chosen backend ("auto" | "torch" | "onnx" |
    "onnx-int8"; int8 applies to segmenters, classifiers stay float32 ONNX).

    ``cache_dir`` is the root of the ONNX cache (default ``default_cache_root()``).
    ``stage`` names the file (default from the task: "segmenter" / "classifier");
    ``model_dir`` lets a folder's own ``<stage>.onnx`` be used and keys the cache on its
    ``<stage>.safetensors``. ``example_hw`` is the export size; classifiers need it (their
    graph has a fixed crop size: pass ``(crop_size, crop_size)``). ``threads`` is the
    onnxruntime intra-op thread count (default ``os.cpu_count()``). The int8 segmenter is
    ``<model_dir>/<stage>.int8.onnx`` when shipped, else quantised into the cache,
    calibrated on synthetic fields at ``canonical_um_per_px``; either way it must pass
    ``allseg.models.quantize.check_int8`` against the float32 graph.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
    resolved = resolve_backend(backend)
    if resolved == "torch":
        return TorchRunner(model, activation)
    stage = stage or ("segmenter" if model.task == "segment" else "classifier")
    if "/" in stage or "\\" in stage or stage.startswith("."):
        raise ValueError(f"stage must be a plain name; got {stage!r}")
    if example_hw is None:
        if model.task != "segment":
            raise ValueError("an ONNX classifier has a fixed crop size: pass "
                             "example_hw=(crop_size, crop_size)")
        example_hw = SEGMENTER_EXAMPLE_HW
    example_hw = (int(example_hw[0]), int(example_hw[1]))
    weights = Path(model_dir) / f"{stage}.safetensors" if model_dir is not None else None
    cached = Path(cache_dir or default_cache_root()) / cache_key(
        model, example_hw, weights if weights and weights.is_file() else None)
    runner = _float32_onnx_runner(model, activation, cached / f"{stage}.onnx", model_dir,
                                  stage, example_hw, threads)
    if resolved != "onnx-int8" or model.task != "segment":
        return runner
    shipped = Path(model_dir) / f"{stage}.int8.onnx" if model_dir is not None else None
    try:
        if shipped is not None and shipped.is_file():
            return _int8_runner(runner, shipped, canonical_um_per_px)
        return _int8_runner(runner, cached / f"{stage}.int8.onnx", canonical_um_per_px,
                            cache=True)
    except ModelError as exc:
        if backend != "auto":  # asked for int8 by name: say why it cannot be had
            raise
        warnings.warn(f"using the float32 segmenter: {exc}", stacklevel=2)
        return runner


def _int8_runner(fp32: OnnxRunner, path: Path, canonical_um_per_px: float,
                 cache: bool = False) -> OnnxRunner:
    """The int8 twin of a float32 segmenter runner, quantised into ``path`` if missing
    (or, in the ``cache``, if unusable)."""
    from allseg.models.quantize import check_int8, quantize_segmenter

    def accepted() -> OnnxRunner:
        runner = OnnxRunner(path, fp32.activation, fp32.threads)
        check_int8(runner, fp32, canonical_um_per_px)
        runner.backend = "onnx-int8"
        return runner

    if cache and path.is_file():
        try:
            return accepted()
        except ModelError as exc:
            warnings.warn(f"re-quantising an unusable cached int8 model: {exc}", stacklevel=2)
            path.unlink(missing_ok=True)
    if not path.is_file():
        if not fp32.path.is_file():
            raise ModelError(f"cannot quantise: the ONNX cache ({path.parent}) is not "
                             "writable; use 'allseg export --int8' to a writable folder")
        try:
            quantize_segmenter(fp32.path, path, canonical_um_per_px)
        except OSError as exc:
            raise ModelError(f"cannot write the int8 segmenter at {path} ({exc}); use "
                             "'allseg export --int8' to a writable folder") from exc
        except Exception as exc:  # onnxruntime.quantization raises many types of its own
            raise ModelError(f"{fp32.path}: onnxruntime cannot quantise this graph to int8 "
                             f"({type(exc).__name__}: {exc}); use --backend onnx") from exc
    return accepted()


def _float32_onnx_runner(model: AllsegModel, activation: str, path: Path,
                         model_dir: Path | None, stage: str, example_hw: tuple[int, int],
                         threads: int | None) -> OnnxRunner:
    """The float32 graph: shipped in the model folder, else exported into ``path``."""
    if model_dir is not None:
        shipped = Path(model_dir) / f"{stage}.onnx"
        if shipped.is_file():
            runner = OnnxRunner(shipped, activation, threads)
            _verify(runner, model, example_hw)
            return runner
    if path.is_file():
        try:
            runner = OnnxRunner(path, activation, threads)
            _verify(runner, model, example_hw)
            return runner
        except ModelError as exc:
            warnings.warn(f"re-exporting an unusable cached ONNX model: {exc}", stacklevel=2)
    try:
        export_onnx(model, path, example_hw)
    except OSError as exc:  # read-only or full cache: export to a throw-away folder
        warnings.warn(f"cannot write the ONNX cache at {path} ({exc}); exporting to a "
                      "temporary folder for this run only", stacklevel=2)
        with tempfile.TemporaryDirectory(prefix="allseg-onnx-") as tmp:
            runner = OnnxRunner(export_onnx(model, Path(tmp) / f"{stage}.onnx", example_hw),
                                activation, threads)
    else:
        runner = OnnxRunner(path, activation, threads)
    _verify(runner, model, example_hw)
    return runner


def cache_key(model: AllsegModel, example_hw: tuple[int, int],
              weights_file: Path | None = None) -> str:
    """sha256 of the weights + versions + opset + export size (the cache folder name)."""
    h = hashlib.sha256()
    if weights_file is not None:
        with open(weights_file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        for name, tensor in sorted(model.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    weights_sha = h.hexdigest()
    tag = json.dumps({"weights_sha256": weights_sha, "allseg": allseg.__version__,
                      "torch": torch.__version__, "opset": OPSET, "arch": model.arch,
                      "config": model.config, "example_hw": list(example_hw)},
                     sort_keys=True, default=str)
    return hashlib.sha256(tag.encode()).hexdigest()


def _verify(runner: OnnxRunner, model: AllsegModel, example_hw: tuple[int, int]) -> None:
    """Check the graph against the torch weights on one small deterministic input."""
    fixed_h, fixed_w = runner.input_shape[2], runner.input_shape[3]
    if model.task == "segment":
        m = max(int(getattr(model, "size_multiple", 1)), 8)
        hw = (fixed_h or max(2 * m + 3, model.min_size), fixed_w or max(3 * m - 5, model.min_size))
    else:
        if (fixed_h, fixed_w) != (None, None) and (fixed_h, fixed_w) != example_hw:
            raise ModelError(f"{runner.path}: the graph takes {fixed_h}x{fixed_w} crops, the "
                             f"model folder uses {example_hw[0]}x{example_hw[1]}; re-run "
                             "'allseg export'")
        hw = (fixed_h or example_hw[0], fixed_w or example_hw[1])
    x = np.random.default_rng(0).uniform(0, 255, (1, model.in_channels, *hw)).astype(np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            expected = model(torch.from_numpy(x)).numpy()
    finally:
        model.train(was_training)
    try:
        got = runner.logits(x)
    except Exception as exc:
        raise ModelError(f"{runner.path}: onnxruntime failed on a {hw[0]}x{hw[1]} input "
                         f"({exc}); re-run 'allseg export'") from exc
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
    if not diff <= ONNX_TOLERANCE:
        raise ModelError(f"{runner.path}: does not match the {model.arch} weights (max |logit "
                         f"diff| {diff:.3g} > {ONNX_TOLERANCE}, output {got.shape} vs "
                         f"{expected.shape}); re-run 'allseg export' or delete the file")
