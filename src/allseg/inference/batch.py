"""Predict a list of files and folders into an output folder, one bad file at a time."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from rich.progress import track

from allseg.errors import AllsegError, InputError
from allseg.inference.predictor import Predictor
from allseg.io.images import is_image_file
from allseg.outputs.writers import RunWriter, outputs_complete, write_image_outputs


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand folders into their image files (sorted, not recursive); keep files as given."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and is_image_file(p))
            if not found:
                raise InputError(item, "folder contains no image files "
                                 "(.jpg .jpeg .png .tif .tiff .bmp)")
            files.extend(found)
        elif item.exists():
            files.append(item)
        else:
            raise InputError(item, "no such file or folder")
    return files


def unique_stems(files: list[Path]) -> list[str]:
    """Output stems: the file stem, prefixed by its folder when two inputs share a stem.

    >>> unique_stems([Path("a/x.jpg"), Path("b/x.jpg"), Path("b/y.png")])
    ['a_x', 'b_x', 'y']
    """
    counts: dict[str, int] = {}
    for f in files:
        counts[f.stem] = counts.get(f.stem, 0) + 1
    return [f"{f.parent.name}_{f.stem}" if counts[f.stem] > 1 else f.stem for f in files]


def predict_files(predictor: Predictor, inputs: Iterable[str | Path], out_dir: str | Path,
                  um_per_px: float | None = None, cell_diameter_px: float | None = None,
                  skip_existing: bool = False, progress: bool = True) -> RunWriter:
    """Predict every image and write the output contract; failures are recorded, not fatal."""
    files = collect_images(inputs)
    out_dir = Path(out_dir)
    writer = RunWriter(out_dir, model=predictor.model_info)
    jobs = list(zip(files, unique_stems(files), strict=True))
    for path, stem in track(jobs, description="predicting", disable=not progress,
                            console=None):
        if skip_existing and outputs_complete(out_dir, stem):
            continue
        try:
            result, image = predictor.predict_path(path, um_per_px, cell_diameter_px)
            write_image_outputs(result, image, out_dir, stem)
            writer.add(result)
        except (AllsegError, OSError, ValueError) as exc:
            message = str(exc) if isinstance(exc, InputError) else f"{path}: {exc}"
            print(f"error: {message}", file=sys.stderr)
            writer.add_failure(path, message)
    writer.close()
    return writer
