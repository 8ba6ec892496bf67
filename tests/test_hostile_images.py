"""Hostile and unusual image files through read_image / read_mask.

Already covered elsewhere and not repeated here: grey/RGBA/16-bit PNG and palette BMP
through a mask folder (test_readers), truncated JPEG skipped by a dataset (test_readers).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allseg.errors import ImageReadError
from allseg.io.images import read_image, read_mask


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims ``width x height`` grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def bmp_claiming(width: int, height: int) -> bytes:
    """A BMP header claiming a huge 24-bit image, with no pixel data behind it."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


@pytest.mark.parametrize("name, data", [
    ("bomb.png", png_claiming(100_000, 100_000)),
    ("bomb.bmp", bmp_claiming(100_000, 100_000)),
    ("bomb.tif", png_claiming(100_000, 100_000)),  # misnamed: the TIFF fallback must not run
])
def test_decompression_bomb_is_refused_cheaply(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError, match=name):
            reader(path)


def test_pixel_limit_applies_below_pillows_own(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_claiming(2000, 2000))
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(path, max_pixels=1_000_000)
    with pytest.raises(ImageReadError, match="pixel limit"):
        read_mask(path, max_pixels=1_000_000)


def test_tifffile_fallback_checks_the_pixel_limit_before_decoding(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "wide.tif"
    # 16-bit RGB goes through tifffile (Pillow cannot decode it)
    tifffile.imwrite(path, np.zeros((300, 400, 3), np.uint16), photometric="rgb")
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(path, max_pixels=100_000)
    assert read_image(path).shape == (300, 400, 3)


@pytest.mark.parametrize("shape", [(1, 3000), (3000, 1), (1, 1)])
def test_absurd_but_valid_dimensions(tmp_path: Path, shape: tuple[int, int]) -> None:
    path = tmp_path / "line.png"
    Image.fromarray(np.full(shape, 77, np.uint8)).save(path)
    image = read_image(path)
    assert image.shape == (*shape, 3) and image.dtype == np.uint8 and (image == 77).all()
    assert read_mask(path).shape == shape


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (250, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (40, 20, 3)
    assert image[:20, :, 0].mean() > 200 and image[20:, :, 0].mean() < 50  # red now on top


@pytest.mark.parametrize("options", [{"quality": 90}, {"quality": 75, "progressive": True},
                                     {"quality": 95, "subsampling": 0}],
                         ids=["baseline", "progressive", "4:4:4"])
def test_upright_jpeg_reads_as_pillow_decodes_it(tmp_path: Path, options: dict) -> None:
    """The fast OpenCV path for upright JPEGs gives Pillow's pixels, writable."""
    rng = np.random.default_rng(3)
    smooth = np.kron(rng.integers(0, 255, (9, 13, 3), np.uint8), np.ones((7, 7, 1), np.uint8))
    path = tmp_path / "field.jpg"
    Image.fromarray(smooth[:61, :89]).save(path, **options)
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGB"))
    image = read_image(path)
    assert image.flags.writeable and np.array_equal(image, expected)


def test_16_bit_grey_png_scales_by_type_range(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).save(path)
    image = read_image(path)
    assert image.shape == (1, 3, 3)
    assert image[0, :, 0].tolist() == [0, 128, 255]
    assert read_mask(path).max() == 65535  # masks keep their values


def test_16_bit_rgb_tiff_via_tifffile(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    arr = np.zeros((5, 6, 3), np.uint16)
    arr[..., 1] = 65535
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, arr, photometric="rgb")
    image = read_image(path)
    assert image.shape == (5, 6, 3) and image.dtype == np.uint8
    assert (image[..., 1] == 255).all() and (image[..., 0] == 0).all()


@pytest.mark.parametrize("bits", [10, 12, 14])
@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_a_camera_recording_fewer_bits_than_16_keeps_its_brightness(
        tmp_path: Path, bits: int, suffix: str) -> None:
    """A 12-bit camera's 16-bit file holds 0..4095; it must read as bright as its 8-bit
    JPEG would, not at 1/16 (black on the overlay), from a folder and uploaded to the
    service alike. PNGs too: Pillow drops their low byte."""
    from allseg.service.app import decode_image_bytes

    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(bits)
    eight = rng.integers(0, 256, (6, 7, 3), np.uint8)
    deep = (eight.astype(np.uint16) << (bits - 8)) + rng.integers(0, 2 ** (bits - 8),
                                                                    eight.shape, np.uint16)
    path = tmp_path / f"camera{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, deep, photometric="rgb")
    else:
        cv2 = pytest.importorskip("cv2")
        cv2.imwrite(str(path), deep[..., ::-1])
    assert np.array_equal(read_image(path), eight)
    assert np.array_equal(decode_image_bytes(path.read_bytes(), 10_000), eight)


def test_a_16_bit_png_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    bgra = np.zeros((2, 2, 4), np.uint16)
    bgra[..., 2] = 65535  # red
    bgra[0, :, 3] = 65535  # top row opaque, bottom row transparent
    path = tmp_path / "deep_alpha.png"
    cv2.imwrite(str(path), bgra)
    image = read_image(path)
    assert image[0].tolist() == [[255, 0, 0]] * 2 and image[1].tolist() == [[255, 255, 255]] * 2


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    image = read_image(path)
    assert image[0, 0].tolist() == [200, 0, 0]
    assert image[3, 3].tolist() == [255, 255, 255]  # transparent black -> white slide


def test_rgba_transparent_pixels_become_white(tmp_path: Path) -> None:
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[0, 0] = (10, 20, 30, 255)
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    image = read_image(path)
    assert image[0, 0].tolist() == [10, 20, 30] and image[1, 1].tolist() == [255, 255, 255]


def test_truncated_jpeg_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ImageReadError, match="cut.jpg") as info:
        read_image(path)
    assert "truncated" in str(info.value)
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_mask(path)


def test_multipage_tiff_gives_first_page_and_warns(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((8, 9, 3), v, np.uint8)) for v in (10, 200)]
    path = tmp_path / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with pytest.warns(UserWarning, match="2 pages"):
        image = read_image(path)
    assert image.shape == (8, 9, 3) and (image == 10).all()


def test_zero_byte_file(tmp_path: Path) -> None:
    for name in ("empty.jpg", "empty.png", "empty.tif"):
        path = tmp_path / name
        path.write_bytes(b"")
        for reader in (read_image, read_mask):
            with pytest.raises(ImageReadError, match=name):
                reader(path)


def test_directory_named_like_an_image(tmp_path: Path) -> None:
    path = tmp_path / "folder.png"
    path.mkdir()
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError, match="no such file"):
            reader(path)


def test_text_file_with_image_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("II*\x00 but not really a TIFF", encoding="latin-1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reader in (read_image, read_mask):
            with pytest.raises(ImageReadError, match="notes.tif"):
                reader(path)
