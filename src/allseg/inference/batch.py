"""Predict a list of files and folders into an output folder, one bad file at a time."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from rich.progress import track

from allseg.errors import AllsegError, InputError
from allseg.inference.distributed import barrier, rank_and_world, shard
from allseg.inference.predictor import Predictor
from allseg.inference.scale import is_unsure
from allseg.io.atomic import remove_stale_temporaries, write_json_atomic
from allseg.io.images import is_image_file
from allseg.outputs.interop import write_extra_formats
from allseg.outputs.schema import Failure
from allseg.outputs.writers import (
    RunWriter,
    output_paths,
    outputs_complete,
    write_image_outputs,
)


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
    """Output stems: the file stem, prefixed by its folder when two inputs share a stem,
    then followed by its suffix, then numbered, while names still clash (``x.png`` and
    ``x.tif`` of one folder used to write one set of outputs, the second over the first).

    >>> unique_stems([Path("a/x.jpg"), Path("b/x.jpg"), Path("b/y.png")])
    ['a_x', 'b_x', 'y']
    >>> unique_stems([Path("in/x.png"), Path("in/x.tif"), Path("p/in/x.tif"), Path("y.tif")])
    ['in_x_png', 'in_x_tif_1', 'in_x_tif_2', 'y']
    """
    names = [f.stem for f in files]
    for widen in (lambda f, n: f"{f.parent.name}_{n}",
                  lambda f, n: f"{n}_{f.suffix.lstrip('.').lower()}"):
        counts = Counter(names)
        names = [widen(f, n) if counts[n] > 1 else n for f, n in zip(files, names, strict=True)]
    counts, seen = Counter(names), Counter()
    numbered = []
    for name in names:
        seen[name] += 1
        numbered.append(f"{name}_{seen[name]}" if counts[name] > 1 else name)
    return numbered


def predict_files(predictor: Predictor, inputs: Iterable[str | Path], out_dir: str | Path,
                  um_per_px: float | None = None, cell_diameter_px: float | None = None,
                  skip_existing: bool = False, progress: bool = True,
                  formats: Iterable[str] = ()) -> RunWriter:
    """Predict every image and write the output contract; failures are recorded, not fatal.

    Under ``torchrun`` each rank predicts its own shard of the sorted file list and rank 0
    writes ``cells.csv`` and ``summary.json`` for all of them once every rank is done. The
    run tables are built from the ``S.json`` files on disk, so images finished by an
    earlier (killed) run and skipped with ``skip_existing`` are counted too. ``formats``
    adds instance outputs for other tools (``coco``, ``imagej-roi``; ``qupath`` GeoJSON is
    always written).
    """
    files = collect_images(inputs)
    out_dir = Path(out_dir)
    jobs = list(zip(files, unique_stems(files), strict=True))
    rank, world = rank_and_world()
    failures: dict[str, Failure] = {}
    # Image i's files are written in the background while image i+1 is predicted; at most
    # one write is pending, so memory stays at two images.
    pending: tuple[Path, str, Future] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="allseg-output") as background:
        for path, stem in track(shard(jobs, rank, world), description=f"predicting (rank {rank})"
                                if world > 1 else "predicting", disable=not progress):
            for output in output_paths(out_dir, stem).values():  # this rank's own files
                remove_stale_temporaries(output)
            if skip_existing and outputs_complete(out_dir, stem):
                continue
            try:
                result, image = predictor.predict_path(path, um_per_px, cell_diameter_px)
            except (AllsegError, OSError, ValueError) as exc:
                failures[stem] = _failure(path, exc)
                continue
            if pending is not None:
                _finish(pending, failures)
            pending = (path, stem, background.submit(write_image_outputs, result, image,
                                                     out_dir, stem))
        if pending is not None:
            _finish(pending, failures)
    if world > 1:
        failures = _exchange_failures(out_dir, failures, rank, world)
    writer = RunWriter(out_dir, model=predictor.model_info)
    done: list[tuple[str, dict]] = []
    for _, stem in jobs:
        if stem in failures:
            writer.add(failures[stem])
        elif outputs_complete(out_dir, stem):
            json_path = output_paths(out_dir, stem)["json"]
            done.append((stem, json.loads(json_path.read_text(encoding="utf-8"))))
            writer.add_json(done[-1][1])
    if rank == 0:
        writer.close()
        write_extra_formats(out_dir, done, list(formats))
        warn_about_inputs([doc for _, doc in done])
    return writer


def warn_about_inputs(docs: list[dict]) -> None:
    """One line on stderr for the whole run per kind of doubtful input: images whose
    scale is a guess, and photos of a monochrome camera."""
    total = len(docs)
    unsure = [doc["image"] for doc in docs if is_unsure(doc.get("scale_confidence"))]
    if unsure:
        print(f"warning: the pixel size of {len(unsure)} of {total} image(s) was estimated "
              f"with low confidence (e.g. {Path(unsure[0]).name}; see scale_source and "
              "scale_confidence in S.json); pass --um-per-px if you know it", file=sys.stderr)
    grey = [doc["image"] for doc in docs if doc.get("monochrome")]
    if grey:
        print(f"warning: {len(grey)} of {total} image(s) have no colour (e.g. "
              f"{Path(grey[0]).name}; a monochrome camera?): they were given a stained "
              "smear's colours, but allseg finds fewer leukocytes in them than in colour "
              "photos (docs/model-card.md); use a colour camera if you can", file=sys.stderr)


def _failure(path: Path, exc: Exception) -> Failure:
    message = str(exc) if isinstance(exc, InputError) else f"{path}: {exc}"
    print(f"error: {message}", file=sys.stderr)
    return Failure(str(path), message)


def _finish(pending: tuple[Path, str, Future], failures: dict[str, Failure]) -> None:
    """Wait for an image's background write; a failed write makes the image a failure."""
    path, stem, future = pending
    try:
        future.result()
    except (AllsegError, OSError, ValueError) as exc:
        failures[stem] = _failure(path, exc)


def _exchange_failures(out_dir: Path, mine: dict[str, Failure], rank: int, world: int
                       ) -> dict[str, Failure]:
    """Every rank's failures, through small files in the output folder and a barrier."""
    write_json_atomic(out_dir / f".failures.rank{rank}.json",
                      {stem: [f.image, f.error] for stem, f in mine.items()})
    barrier()
    merged: dict[str, Failure] = {}
    for r in range(world):
        part = out_dir / f".failures.rank{r}.json"
        merged.update({stem: Failure(*v) for stem, v in json.loads(part.read_text()).items()})
    barrier()
    if rank == 0:
        for r in range(world):
            (out_dir / f".failures.rank{r}.json").unlink(missing_ok=True)
    return merged
