"""A PNG encoder for large RGB images that uses every core.

Writing the full-size overlay was the slowest step of predicting an ALL-IDB1 field:
libpng (via OpenCV) encodes on one core, 0.11 s for 2592x1944 even with its fastest
settings. Here the rows are UP-filtered with numpy and deflated in bands side by side
(zlib releases the GIL). Huffman-only coding has no back-references, so the bands are
independent: each non-final band ends with a full flush and the pieces concatenate into
one valid zlib stream. Any PNG reader decodes the result; tests check it against PIL.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
UP_FILTER = 2
#: zlib header for deflate with a 32 KiB window at the fastest level (RFC 1950).
ZLIB_HEADER = b"\x78\x01"
WORKERS = max(1, min(4, os.cpu_count() or 1))
_POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="allseg-png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _deflate(band: memoryview, last: bool) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)
    return packer.compress(band) + packer.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)


def encode_rgb_png(image: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 RGB image (lossless).

    >>> import io; from PIL import Image
    >>> rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    >>> np.array_equal(np.asarray(Image.open(io.BytesIO(encode_rgb_png(rgb)))), rgb)
    True
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or not image.size:
        raise ValueError(f"expected non-empty (H, W, 3) uint8 RGB, got {image.shape} "
                         f"{image.dtype}")
    h, w, _ = image.shape
    rows = np.ascontiguousarray(image).reshape(h, w * 3)
    filtered = np.empty((h, 1 + w * 3), np.uint8)
    filtered[:, 0] = UP_FILTER
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # wraps modulo 256, as PNG wants
    raw = memoryview(filtered).cast("B")
    bands = np.linspace(0, h, min(h, WORKERS) + 1).astype(int) * (1 + w * 3)
    pieces = [_POOL.submit(_deflate, raw[a:b], b == bands[-1])
              for a, b in zip(bands[:-1], bands[1:], strict=True) if b > a]
    stream = b"".join([ZLIB_HEADER, *(p.result() for p in pieces),
                       struct.pack(">I", zlib.adler32(raw))])
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return b"".join([SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", stream),
                     _chunk(b"IEND", b"")])
