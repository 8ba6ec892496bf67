"""The one predictor object behind ``allseg predict``, the demo and the service.

Per image: scale normalise -> tiled segmenter -> cell instances -> refine at the
original resolution -> per-cell features -> stage-2 crops -> P(blast) -> verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from allseg.errors import ModelError
from allseg.inference import leukocyte_ruler as ruler
from allseg.inference.appearance import as_networks_see_it
from allseg.inference.backends import make_runner
from allseg.inference.models import resolve_model_dir
from allseg.inference.monochrome import for_red_cells
from allseg.inference.scale import MAX_UM_PER_PX, MIN_UM_PER_PX, ResolvedScale, resolve_scale
from allseg.inference.tiling import flip_tta, predict_tiled
from allseg.io.images import read_image
from allseg.models import load_model_folder
from allseg.models.blast_head import BlastHead
from allseg.outputs.schema import CellResult, ImageResult
from allseg.postprocess.crops import balance_background, cell_crops
from allseg.postprocess.features import cell_features
from allseg.postprocess.instances import instances_from_maps
from allseg.postprocess.upsample import upsample_instances

#: By default flips are averaged (test-time augmentation) only where that is cheap: for
#: segmenter inputs up to this many pixels at the canonical scale (256 x 256, a field about
#: 77 µm square: single-cell crops and small fields). There the three extra passes cost at
#: most ~0.1 s on 2 cores (measured on a 640x480 BCCD photo: +0.05 s), and they raised
#: Zheng Dataset 1 fold 0 nucleus Dice from 0.948 to 0.954 (int8, scale estimated). On a
#: full 2592x1944 ALL-IDB1 field the int8 segmenter stage would go from 0.21 s to 0.53 s.
AUTO_TTA_MAX_PIXELS = 256 * 256


def _resize(arr: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """cv2.resize for (H, W) or (H, W, C) arrays; size is (width, height)."""
    if arr.shape[1] == size[0] and arr.shape[0] == size[1]:
        return arr
    return cv2.resize(arr, size, interpolation=interpolation)


@dataclass
class Segmentation:
    """The segmenter's output for an image predicted at ``um_per_px``, at canonical scale."""

    um_per_px: float
    class_prob: np.ndarray  # (3, h, w) background, cytoplasm, nucleus
    instances: np.ndarray  # (h, w) int32 cell ids
    tta: bool  # whether flips were averaged


class Predictor:
    """Load a model folder once; predict any number of images with it.

    ``tta``: average the segmenter over flips always (True), never (False), or only for
    small inputs (None, the default; see ``AUTO_TTA_MAX_PIXELS``).
    """

    def __init__(self, model: str | Path = "default", backend: str = "auto",
                 tta: bool | None = None,
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
        self.flipped_segmenter = flip_tta(self.segmenter)
        self.multiple = int(getattr(models["segmenter"], "size_multiple", 32))
        self.tile, self.overlap, self.batch_size, self.tta = tile, overlap, batch_size, tta
        self.thresholds = dict(self.meta["thresholds"])
        head = self.meta.get("blast_head")
        self.blast_head = None if head is None else BlastHead.from_json(head)
        self.model_info = {"name": self.meta.get("name", self.model_dir.name),
                           "path": str(self.model_dir),
                           "allseg_version": self.meta.get("allseg_version"),
                           "tta": "auto" if tta is None else tta,
                           "blast_threshold": float(self.thresholds["blast_probability"]),
                           "backend": self.segmenter.backend}

    def estimate_scale(self, image: np.ndarray) -> ResolvedScale:
        """The image's µm per pixel, as ``predict_image`` estimates it."""
        image, first, _ = self._prepare(image)
        return self._scale_and_segment(image, first)[0]

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
        image, first, monochrome = self._prepare(image, um_per_px, cell_diameter_px)
        lap("scale")
        resolved, seg = self._scale_and_segment(image, first)
        scale = resolved.um_per_px
        lap("segmenter")
        parts, instances, boxes = upsample_instances(seg.class_prob, seg.instances, image)
        cells = cell_features(image, parts, instances, scale, boxes)
        lap("postprocess")
        probs = self._classify(image, cells, scale)
        if self.blast_head is not None:  # the CNN weighed with the cell's morphometry
            probs = self.blast_head.probabilities(cells, probs)
        lap("classifier")
        threshold = float(self.thresholds["blast_probability"])
        results = [CellResult.from_features(c, p, threshold)
                   for c, p in zip(cells, probs, strict=True)]
        timings["total"] = round(time.perf_counter() - start, 4)
        h, w = image.shape[:2]
        confidence = None if resolved.confidence is None else round(resolved.confidence, 3)
        return ImageResult(image=name, width=w, height=h, um_per_px=round(scale, 5),
                           scale_source=resolved.source, scale_confidence=confidence,
                           monochrome=monochrome, cells=results,
                           model={**self.model_info, "tta": seg.tta},
                           timings=timings, parts=parts, instances=instances)

    @staticmethod
    def _prepare(image: np.ndarray, um_per_px: float | None = None,
                 cell_diameter_px: float | None = None
                 ) -> tuple[np.ndarray, ResolvedScale, bool]:
        """What every prediction starts from: the photo as the networks and the cell
        measurements see it (``appearance.as_networks_see_it``), the first scale (the
        user's, or the red cells' measured on the photo itself: ``estimate_scale`` knows
        an eyepiece's ring), and whether the photo was monochrome (the networks and the
        red-cell ruler know stained smears in colour; see ``monochrome.colourise`` for why
        each gets its own recolouring).

        Through a washed-out camera, clear lymphocytes went unseen at the photo's own
        contrast, even at the right scale, and those found read more blast-like (P(blast)
        0.04 -> 0.47): the spread copy is what is segmented, measured and classified.
        """
        first = resolve_scale(for_red_cells(image), um_per_px, cell_diameter_px)
        image, monochrome = as_networks_see_it(image, first.over_exposed)
        return image, first, monochrome

    def _scale_and_segment(self, image: np.ndarray, first: ResolvedScale
                           ) -> tuple[ResolvedScale, Segmentation]:
        """The scale to predict at, and the segmentation at that scale.

        ``first`` is the user's scale or the red cells' estimate. The leukocytes segmented
        at it check it: if the red cells were too few, or the leukocytes come out
        implausibly large (``ruler.overrules``), the leukocytes become the ruler: found
        by :meth:`_probe`, then measured and rescaled until they have a typical size
        (Cellpose's size model), as long as they grow with the scale
        (``ruler.grew_with_scale``), and weighed with whatever red cells there were.
        """
        seg = at_first = self._segment(image, first.um_per_px)
        if first.source == "user":
            return first, seg
        if first.source == "red-cells" and not ruler.overrules(self._leukocyte_size(seg, True)):
            return first, seg
        found = self._probe(image)
        if found is None:
            return first, seg
        seg, size = found
        for _ in range(3):
            target = float(np.clip(ruler.rescaled(seg.um_per_px, size), MIN_UM_PER_PX,
                                   MAX_UM_PER_PX))
            if abs(np.log(target / seg.um_per_px)) < np.log(1.08):
                break
            again = self._segment(image, target)
            size_again = self._leukocyte_size(again)
            if size_again is None or not ruler.grew_with_scale((seg.um_per_px, size),
                                                                (target, size_again)):
                break
            seg, size = again, size_again
        resolved, seg = self._combine(image, first, seg)
        if first.over_exposed and first.um_per_px < resolved.um_per_px:
            # White takes the pale parts of red cells and leukocytes alike, so both read
            # small, too coarse: the finer ruler is the less damaged, and its
            # segmentation the first one.
            return first, at_first
        return resolved, seg

    def _combine(self, image: np.ndarray, red_cells: ResolvedScale, seg: Segmentation
                 ) -> tuple[ResolvedScale, Segmentation]:
        """Weigh a few red cells' scale against the leukocytes' (geometric mean by
        confidence) when the two roughly agree; else the leukocytes decide."""
        leukocytes = ResolvedScale(seg.um_per_px, "leukocytes", ruler.LEUKOCYTE_CONFIDENCE)
        weight = red_cells.confidence or 0.0
        if red_cells.source == "default" and weight > 0 and abs(
                np.log(red_cells.um_per_px / seg.um_per_px)) < np.log(ruler.AGREEMENT):
            share = weight / (weight + ruler.LEUKOCYTE_CONFIDENCE)
            scale = float(np.exp(share * np.log(red_cells.um_per_px)
                                 + (1 - share) * np.log(seg.um_per_px)))
            return (ResolvedScale(scale, "leukocytes", min(0.8, leukocytes.confidence + weight)),
                    self._segment(image, scale))
        return leukocytes, seg

    def _leukocyte_size(self, seg: Segmentation, split: bool = False) -> float | None:
        """Median leukocyte size (µm) if the image really were at ``seg.um_per_px``; of
        the split instances or, by default, of the blobs (see ruler.median_size)."""
        return ruler.median_size(seg.class_prob, seg.instances if split else None,
                                 self.canonical, self._min_area_px())

    def _min_area_px(self) -> int:
        """Smallest cell kept, in canonical pixels."""
        return max(1, int(float(self.thresholds["min_cell_area_um2"]) / self.canonical ** 2))

    def _probe(self, image: np.ndarray) -> tuple[Segmentation, float] | None:
        """Segment at field widths from about one cell upwards, and stop at the first
        that shows leukocytes: the segmentation and their median size (µm), or None.

        Fine to coarse, because a cell seen far too large falls apart into pieces of
        ordinary size (a false answer), while one seen too small is simply not found.
        """
        for width_um in ruler.PROBE_FIELD_WIDTHS_UM:
            scale = width_um / max(image.shape[:2])
            if not MIN_UM_PER_PX <= scale <= MAX_UM_PER_PX:
                continue
            probe = self._segment(image, scale)
            size = self._leukocyte_size(probe)
            if size is not None:
                return probe, size
        return None

    def _segment(self, image: np.ndarray, scale: float) -> Segmentation:
        """Class probabilities and cells at the canonical scale, for an image at ``scale``.

        Cells are split at the canonical scale (fast watershed); the caller draws their
        borders at full resolution.
        """
        h, w = image.shape[:2]
        factor = scale / self.canonical
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        small = _resize(image, size, cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        x = small.transpose(2, 0, 1).astype(np.float32)
        tta = self.tta if self.tta is not None else size[0] * size[1] <= AUTO_TTA_MAX_PIXELS
        runner = self.flipped_segmenter if tta else self.segmenter
        maps = predict_tiled(runner, x, out_channels=4, tile=self.tile,
                             overlap=self.overlap, batch_size=self.batch_size,
                             multiple=self.multiple)
        _, instances = instances_from_maps(maps[:3], maps[3], self._min_area_px(),
                                           float(self.thresholds["centre"]))
        return Segmentation(scale, maps[:3], instances, tta)

    def _classify(self, image: np.ndarray, cells: list[dict], scale: float) -> np.ndarray:
        """P(blast) for every cell from a crop of fixed physical size around it."""
        if not cells:
            return np.zeros(0, np.float32)
        centroids = np.array([c["centroid"] for c in cells], np.float32)
        side = float(self.meta["crop_um"]) / scale
        crops = cell_crops(image, centroids, np.full(len(cells), side),
                           out_size=int(self.meta["crop_size"]), context=1.0)
        if self.meta.get("crop_background"):
            crops = balance_background(crops)
        batch = crops.transpose(0, 3, 1, 2).astype(np.float32)
        probs = [self.classifier(batch[i:i + 64]) for i in range(0, len(batch), 64)]
        return np.concatenate(probs)[:, 0]
