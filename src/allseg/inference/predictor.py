"""The one predictor object behind ``allseg predict``, the demo and the service.

Per image: scale normalise -> tiled segmenter -> cell instances -> refine at the
original resolution -> per-cell features -> stage-2 crops -> P(blast) -> verdict.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from allseg.errors import ModelError
from allseg.inference.backends import make_runner
from allseg.inference.models import resolve_model_dir
from allseg.inference.scale import resolve_scale
from allseg.inference.tiling import flip_tta, predict_tiled
from allseg.io.images import read_image
from allseg.models import load_model_folder
from allseg.outputs.schema import CellResult, ImageResult
from allseg.postprocess.crops import cell_crops
from allseg.postprocess.features import cell_features
from allseg.postprocess.instances import instances_from_maps
from allseg.postprocess.upsample import upsample_instances


def _resize(arr: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """cv2.resize for (H, W) or (H, W, C) arrays; size is (width, height)."""
    if arr.shape[1] == size[0] and arr.shape[0] == size[1]:
        return arr
    return cv2.resize(arr, size, interpolation=interpolation)


class Predictor:
    """Load a model folder once; predict any number of images with it."""

    def __init__(self, model: str | Path = "default", backend: str = "auto", tta: bool = False,
                 tile: int = 1024, overlap: int = 128, batch_size: int = 2) -> None:
        self.model_dir = resolve_model_dir(model)
        models, self.meta = load_model_folder(self.model_dir)
        missing = {"segmenter", "classifier"} - set(models)
        if missing:
            raise ModelError(f"{self.model_dir}: model folder lacks the {', '.join(missing)} "
                             "stage; train it or pass --base-model when training")
        crop = int(self.meta["crop_size"])
        self.canonical = float(self.meta["canonical_um_per_px"])
        self.segmenter = make_runner(models["segmenter"], "segment", backend, stage="segmenter",
                                     model_dir=self.model_dir,
                                     canonical_um_per_px=self.canonical)
        self.classifier = make_runner(models["classifier"], "classify", backend,
                                      stage="classifier", model_dir=self.model_dir,
                                      example_hw=(crop, crop))
        self.segment_batch = flip_tta(self.segmenter) if tta else self.segmenter
        self.multiple = int(getattr(models["segmenter"], "size_multiple", 32))
        self.tile, self.overlap, self.batch_size, self.tta = tile, overlap, batch_size, tta
        self.thresholds = dict(self.meta["thresholds"])
        self.model_info = {"name": self.meta.get("name", self.model_dir.name),
                           "path": str(self.model_dir),
                           "allseg_version": self.meta.get("allseg_version"), "tta": tta,
                           "backend": self.segmenter.backend}

    def predict_path(self, path: str | Path, um_per_px: float | None = None,
                     cell_diameter_px: float | None = None) -> tuple[ImageResult, np.ndarray]:
        """Read and predict one file; returns the result and the decoded image."""
        started = time.perf_counter()
        image = read_image(path)
        decode = time.perf_counter() - started
        result = self.predict_image(image, str(path), um_per_px, cell_diameter_px)
        result.timings = {"decode": round(decode, 4), **result.timings}
        result.timings["total"] = round(result.timings["total"] + decode, 4)
        return result, image

    def predict_image(self, image: np.ndarray, name: str = "image",
                      um_per_px: float | None = None,
                      cell_diameter_px: float | None = None) -> ImageResult:
        """Predict an RGB ``uint8`` array; coordinates in the result are its pixels."""
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = round(now - clock, 4)
            clock = now

        start = clock
        scale, source = resolve_scale(image, um_per_px, cell_diameter_px)
        lap("scale")
        class_prob, centre = self._segment(image, scale)
        lap("segmenter")
        parts, instances = self._instances(class_prob, centre, image.shape[:2], scale)
        cells = cell_features(image, parts, instances, scale)
        lap("postprocess")
        probs = self._classify(image, cells, scale)
        lap("classifier")
        threshold = float(self.thresholds["blast_probability"])
        results = [CellResult.from_features(c, p, threshold)
                   for c, p in zip(cells, probs, strict=True)]
        timings["total"] = round(time.perf_counter() - start, 4)
        h, w = image.shape[:2]
        return ImageResult(image=name, width=w, height=h, um_per_px=round(scale, 5),
                           scale_source="user" if source == "user" else "estimated",
                           cells=results, model=self.model_info, timings=timings, parts=parts,
                           instances=instances)

    def _segment(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and centre map at the canonical scale."""
        h, w = image.shape[:2]
        factor = scale / self.canonical
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        small = _resize(image, size, cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        x = small.transpose(2, 0, 1).astype(np.float32)
        maps = predict_tiled(self.segment_batch, x, out_channels=4, tile=self.tile,
                             overlap=self.overlap, batch_size=self.batch_size,
                             multiple=self.multiple)
        return maps[:3], maps[3]

    def _instances(self, class_prob: np.ndarray, centre: np.ndarray, shape: tuple[int, int],
                   scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Split cells at the canonical scale (fast watershed), then draw their borders
        at full resolution."""
        min_area = float(self.thresholds["min_cell_area_um2"]) / self.canonical ** 2
        _, small_instances = instances_from_maps(class_prob, centre, max(1, int(min_area)),
                                                 float(self.thresholds["centre"]))
        return upsample_instances(class_prob, small_instances, shape)

    def _classify(self, image: np.ndarray, cells: list[dict], scale: float) -> np.ndarray:
        """P(blast) for every cell from a crop of fixed physical size around it."""
        if not cells:
            return np.zeros(0, np.float32)
        centroids = np.array([c["centroid"] for c in cells], np.float32)
        side = float(self.meta["crop_um"]) / scale
        crops = cell_crops(image, centroids, np.full(len(cells), side),
                           out_size=int(self.meta["crop_size"]), context=1.0)
        batch = crops.transpose(0, 3, 1, 2).astype(np.float32)
        probs = [self.classifier(batch[i:i + 64]) for i in range(0, len(batch), 64)]
        return np.concatenate(probs)[:, 0]
