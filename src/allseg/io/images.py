"""Read any supported image file into an RGB ``uint8`` array, or fail clearly.

Every way an image can go wrong (missing, truncated, a decompression bomb, an odd
pixel mode) ends in an :class:`~allseg.errors.ImageReadError` naming the file.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from allseg.errors import ImageReadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: Refuse images with more pixels than this (a 10000x10000 scan is 1e8).
MAX_PIXELS = 250_000_000
#: What Pillow's decoders raise on malformed files (beyond OSError), e.g. TypeError
#: "Missing dimensions" from a TIFF without a width tag, or struct.error.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError, EOFError,
                 ZeroDivisionError, struct.error)
#: EXIF orientation tag: 1 (or no tag) means the pixels are stored upright.
EXIF_ORIENTATION = 0x0112
#: JPEG's end-of-image marker: a file that does not end with it was cut short.
JPEG_END = b"\xff\xd9"
#: Bit depths microscope cameras record; a 16-bit file holds one of them in its low bits.
CAMERA_BITS = (8, 10, 12, 14, 16)
#: Where a PNG's bit depth and colour type sit: after the signature, IHDR's length, type,
#: width and height.
PNG_IHDR_DEPTH = 24
TIFF_BITS_PER_SAMPLE = 258


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def camera_bits(arr: np.ndarray) -> int:
    """The bit depth a 16-bit image was recorded at: the fewest of :data:`CAMERA_BITS`
    that hold its brightest pixel.

    A 12-bit camera saved as 16-bit TIFF fills 0..4095 of 0..65535; scaled by the type's
    range, its photo came out at 1/16 brightness, black on the overlay and with its nuclei
    lost (a BCCD photo read that way: one leukocyte found, its nucleus not).

    >>> camera_bits(np.array([0, 4095], np.uint16)), camera_bits(np.array([4096], np.uint16))
    (12, 14)
    >>> camera_bits(np.array([65535], np.uint16))
    16
    """
    brightest = int(arr.max(initial=0))
    return next(bits for bits in CAMERA_BITS if brightest < 2**bits)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale 16-bit data to 0..255 by the camera's bit depth, float data by its range."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> (camera_bits(arr) - 8)).astype(np.uint8)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    arr = arr.astype(np.float64)
    hi = 1.0 if arr.max(initial=0) <= 1.0 else (65535.0 if arr.max() > 255 else 255.0)
    return np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _to_uint8(np.asarray(img))
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent areas of a smear crop are empty slide.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return the image at ``path`` as an ``(H, W, 3)`` RGB ``uint8`` array.

    EXIF orientation is applied; grey, palette, RGBA and 16-bit images are converted;
    multi-page TIFFs give their first page with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageReadError(
                    path, f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                    "(a possible decompression bomb); raise max_pixels if the image is genuine")
            if w < 1 or h < 1:
                raise ImageReadError(path, f"empty image ({w}x{h})")
            if getattr(img, "n_frames", 1) > 1:
                warnings.warn(f"{path}: {img.n_frames} pages; using the first", stacklevel=2)
            if is_deep_colour(img, _file_head(path)):
                return (_read_deep_png(path) if img.format == "PNG"
                        else _read_with_tifffile(path, max_pixels))
            if (img.format == "JPEG" and img.mode == "RGB"
                    and img.getexif().get(EXIF_ORIENTATION, 1) == 1):
                pixels = _decode_upright_jpeg(path)
                if pixels is not None and pixels.shape[:2] == (h, w):
                    return pixels
            img.load()
            img = ImageOps.exif_transpose(img)
            return pil_to_rgb(img)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _read_with_tifffile(path, max_pixels)
        _raise_unreadable(path, "not an image file Pillow can identify")
    except DECODE_ERRORS as exc:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _read_with_tifffile(path, max_pixels)
        raise ImageReadError(path, f"unreadable or truncated image ({exc})") from exc


def _decode_upright_jpeg(path: Path) -> np.ndarray | None:
    """RGB pixels of a complete JPEG via OpenCV, or None to leave the file to Pillow.

    Both decode with libjpeg-turbo's defaults, so the pixels are the same (checked on
    1,224 BCCD, TXL-PBC and synthetic JPEGs; a test compares baseline, progressive and
    4:4:4 files),
    but OpenCV decodes straight into its array, ~3x faster than Pillow's decode plus the
    two copies that make it a writable array (~0.06 s for a 2592x1944 field). A file
    that does not end with the end-of-image marker goes to Pillow, which names it as
    truncated.
    """
    data = np.fromfile(path, np.uint8)
    if data[-2:].tobytes() != JPEG_END:
        return None
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)


def _file_head(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(PNG_IHDR_DEPTH + 2)


def is_deep_colour(img: Image.Image, head: bytes) -> bool:
    """True for a 16-bit colour PNG or TIFF (``head``: the file's first bytes), which
    Pillow reads as 8-bit by dropping the low byte: a 12-bit camera's photo came out at
    1/16 brightness. :func:`read_image` reads those with OpenCV or tifffile instead."""
    if img.format == "PNG":
        return head[PNG_IHDR_DEPTH:PNG_IHDR_DEPTH + 2] in (b"\x10\x02", b"\x10\x06")
    if img.format == "TIFF" and img.mode in ("RGB", "RGBA"):
        bits = img.tag_v2.get(TIFF_BITS_PER_SAMPLE, 8)
        return (max(bits) if isinstance(bits, tuple) else int(bits)) > 8
    return False


def _read_deep_png(path: Path) -> np.ndarray:
    """A 16-bit colour PNG via OpenCV, which keeps its 16 bits: colour at the camera's bit
    depth (:func:`_to_uint8`), transparency composited on white by :func:`pil_to_rgb`."""
    pixels = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16:
        raise ImageReadError(path, "unreadable or truncated 16-bit PNG")
    if pixels.shape[2] == 3:
        return _to_uint8(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))
    rgba = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
    alpha = (rgba[..., 3:] >> 8).astype(np.uint8)
    return pil_to_rgb(Image.fromarray(np.dstack([_to_uint8(rgba[..., :3]), alpha]), "RGBA"))


def _raise_unreadable(path: Path, problem: str) -> np.ndarray:
    raise ImageReadError(path, problem)


def _tiff_first_page(path: Path, max_pixels: int) -> np.ndarray:
    """The first page of a TIFF via tifffile, refusing too many pixels before decoding."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            w, h = int(page.imagewidth), int(page.imagelength)
            if w * h > max_pixels:
                raise ImageReadError(path, f"{w}x{h} = {w * h:,} pixels exceeds the limit of "
                                     f"{max_pixels:,} (a possible decompression bomb)")
            return np.asarray(page.asarray())
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise ImageReadError(path, f"unreadable TIFF ({exc})") from exc


def _read_with_tifffile(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Fallback for TIFF variants Pillow cannot decode (e.g. 16-bit RGB)."""
    arr = _tiff_first_page(path, max_pixels)
    arr = _to_uint8(np.asarray(arr))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageReadError(path, f"unsupported TIFF layout with shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3])


def read_mask(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return a single-channel label image (8- or 16-bit values kept as they are)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    try:
        with Image.open(path) as img:
            if img.size[0] * img.size[1] > max_pixels:
                raise ImageReadError(path, "mask exceeds the pixel limit")
            img.load()
            if img.mode in ("RGB", "RGBA", "P", "LA"):
                arr = np.asarray(img.convert("L"))
            else:
                arr = np.asarray(img)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"mask refused as a decompression bomb: {exc}") from exc
    except (*DECODE_ERRORS, UnidentifiedImageError) as exc:
        if path.suffix.lower() in (".tif", ".tiff"):
            arr = _tiff_first_page(path, max_pixels)
            if arr.ndim == 3:
                arr = arr[..., 0]
        else:
            raise ImageReadError(path, f"unreadable mask ({exc})") from exc
    return np.ascontiguousarray(arr)
