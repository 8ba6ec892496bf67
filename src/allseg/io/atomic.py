"""Atomic file writes: a reader never sees a half-written output file."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from allseg.io import png


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file lives in the destination folder so the rename is atomic;
    on any failure it is removed and the destination is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix,
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(path: str | Path) -> int:
    """Delete temporary files that a killed ``write_atomic`` of ``path`` left behind.

    Call it only for paths no other live process is writing. Returns how many it removed.
    """
    path = Path(path)
    stale = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def _read_umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def encode_image(array: np.ndarray, ext: str, jpeg_quality: int = 92) -> bytes:
    """Encode an RGB/grey (8- or 16-bit) array as PNG, JPEG or TIFF bytes."""
    if ext.lower() == ".png" and png.supports(array):
        return png.encode_png(array)  # on every core; see allseg.io.png
    img = array
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params: list[int] = []
    if ext.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError(f"could not encode image as {ext}")
    return buf.tobytes()


def write_image_atomic(path: str | Path, array: np.ndarray, jpeg_quality: int = 92) -> Path:
    """Write an image atomically; the format follows the file extension."""
    path = Path(path)
    return write_bytes_atomic(path, encode_image(array, path.suffix, jpeg_quality))
