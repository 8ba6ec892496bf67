"""Score predictions written earlier by ``allseg predict`` (``evaluate --predictions DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from allseg.errors import InputError
from allseg.io.images import read_mask
from allseg.outputs.schema import CellResult, ImageResult
from allseg.outputs.writers import output_paths


class SavedPredictions:
    """Same ``predict_image`` contract as the predictor, answered from ``S.json`` +
    ``S_parts.png`` + ``S_instances.png`` in a predictions folder, matched by file stem."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(self.folder, "predictions folder not found")
        summary = self.folder / "summary.json"
        self.model_info = (json.loads(summary.read_text(encoding="utf-8")).get("model", {})
                           if summary.is_file() else {})
        self.model_info = {**self.model_info, "predictions": str(self.folder)}
        # The threshold the cells' classes were decided with (0.5 for outputs written
        # before S.json recorded it), so scores are cut where the model cut them.
        self.thresholds = {"blast_probability":
                           float(self.model_info.get("blast_threshold", 0.5))}

    def predict_image(self, image: np.ndarray, name: str = "image",
                      um_per_px: float | None = None,
                      cell_diameter_px: float | None = None) -> ImageResult:
        paths = output_paths(self.folder, Path(name).stem)
        if not paths["json"].is_file():
            raise InputError(paths["json"], "no prediction for this image in the folder")
        data = json.loads(paths["json"].read_text(encoding="utf-8"))
        cells = [CellResult(id=c["id"], centroid=c["centroid"], bbox=c["bbox"],
                            area_px=c["area_px"], cls=c["class"],
                            blast_probability=c["blast_probability"], features=c["features"],
                            contour=c["contour"]) for c in data["cells"]]
        return ImageResult(image=name, width=data["width"], height=data["height"],
                           um_per_px=data["um_per_px"],
                           scale_source=data.get("scale_source", "estimated"), cells=cells,
                           model=data.get("model", {}), timings=data.get("timings", {}),
                           parts=read_mask(paths["parts"]),
                           instances=read_mask(paths["instances"]).astype(np.int32))
