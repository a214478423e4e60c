"""nerfkit.data.io: every pixel layout read as float RGB(A), atomic writes, area downscaling."""

from __future__ import annotations

import struct
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from skimage.transform import downscale_local_mean

from nerfkit.data.io import downscale_area, list_images, read_image, write_image_atomic
from nerfkit.errors import DataError


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _write_png(path, arr, colour_type, bit_depth):
    """A minimal PNG encoder (Pillow cannot write 16-bit colour): cycles through all five row
    filters so the reader's un-filtering is exercised."""
    arr = np.asarray(arr)
    arr = arr[..., None] if arr.ndim == 2 else arr
    h, w, c = arr.shape
    bpp = c * bit_depth // 8
    rows = [np.frombuffer(arr[i].astype(">u2" if bit_depth == 16 else "u1").tobytes(), np.uint8)
            .astype(int) for i in range(h)]
    out, prev = b"", np.zeros_like(rows[0])
    for i, row in enumerate(rows):
        kind = i % 5
        filt = []
        for x in range(len(row)):
            a = row[x - bpp] if x >= bpp else 0
            b, cc = prev[x], (prev[x - bpp] if x >= bpp else 0)
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, cc))[kind]
            filt.append((row[x] - pred) % 256)
        out += bytes([kind]) + bytes(filt)
        prev = row

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b""))


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("colour_type,channels", [(2, 3), (6, 4), (4, 2), (0, 1)])
def test_16_bit_png_full_precision(tmp_path, colour_type, channels):
    a = RNG.integers(0, 65536, (9, 7, channels)).astype(np.uint16)
    _write_png(tmp_path / "x.png", a, colour_type, 16)
    img = read_image(tmp_path / "x.png")
    expected = a.astype(np.float64) / 65535
    if channels <= 2:   # gray (+ alpha) -> RGB (A)
        expected = np.concatenate([np.repeat(expected[..., :1], 3, -1), expected[..., 1:]], -1)
    assert img.dtype == np.float32 and img.shape == (9, 7, 3 if channels in (1, 3) else 4)
    np.testing.assert_allclose(img, expected, atol=1e-7)


@pytest.mark.parametrize("colour_type,channels", [(2, 3), (6, 4), (4, 2), (0, 1)])
def test_8_bit_png_with_all_filters(tmp_path, colour_type, channels):
    a = RNG.integers(0, 256, (9, 7, channels)).astype(np.uint8)
    _write_png(tmp_path / "x.png", a, colour_type, 8)
    img = read_image(tmp_path / "x.png")
    np.testing.assert_allclose(img[..., 0], a[..., 0] / 255, atol=1e-7)
    np.testing.assert_allclose(img[..., -1], a[..., -1] / 255, atol=1e-7)
    assert img.shape[-1] == (4 if channels in (2, 4) else 3)


def test_gray_palette_jpeg_bool(tmp_path):
    g = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (6, 5, 3) and np.all(img[..., 0] == img[..., 2])
    np.testing.assert_allclose(img[..., 1], g / 255)

    rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(4)
    pal.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_image(tmp_path / "p.png"),
                               np.asarray(pal.convert("RGB")) / 255, atol=1e-7)
    pal.save(tmp_path / "pt.png", transparency=0)           # palette with a transparent entry
    pt = read_image(tmp_path / "pt.png")
    assert pt.shape == (6, 5, 4)
    np.testing.assert_array_equal(pt[..., 3] == 0, np.asarray(pal) == 0)

    iio.imwrite(tmp_path / "j.jpg", rgb)
    assert read_image(tmp_path / "j.jpg").shape == (6, 5, 3)
    Image.fromarray(g > 128).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png")[..., 0], (g > 128) * 1.0)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="image file not found") as info:
        read_image(tmp_path / "nope.png")
    assert info.value.path.endswith("nope.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match="found a folder"):
        read_image(tmp_path / "dir.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="bad.jpg: cannot decode image"):
        read_image(tmp_path / "bad.jpg")


def test_write_image_atomic_roundtrip(tmp_path):
    img = RNG.random((5, 6, 4)).astype(np.float32)
    out = write_image_atomic(tmp_path / "sub" / "x.png", img)
    assert out == tmp_path / "sub" / "x.png"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]      # no temp file left
    back = iio.imread(out)
    assert back.dtype == np.uint8 and back.shape == (5, 6, 4)
    np.testing.assert_array_equal(back, np.round(img * 255).astype(np.uint8))
    write_image_atomic(out, np.full((2, 2, 3), 2.0))                        # clipped, replaced
    assert np.all(iio.imread(out) == 255) and iio.imread(out).shape == (2, 2, 3)
    with pytest.raises(ValueError):
        write_image_atomic(out, np.zeros((2, 2, 5)))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.JPG", "c.txt", ".hidden.png", "a10.png", "a2.png"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "a10.png", "a2.png", "b.png"]
    with pytest.raises(DataError, match="image folder not found"):
        list_images(tmp_path / "missing")


def test_downscale_area_matches_skimage():
    rgb = RNG.random((12, 18, 3)).astype(np.float32)
    np.testing.assert_allclose(downscale_area(rgb, 3), downscale_local_mean(rgb, (3, 3, 1)),
                               atol=1e-6)
    rgba = RNG.random((8, 8, 4)).astype(np.float32)
    rgba[:4, :4, 3] = 0.0
    out = downscale_area(rgba, 4)
    a = downscale_local_mean(rgba[..., 3:], (4, 4, 1))
    prem = downscale_local_mean(rgba[..., :3] * rgba[..., 3:], (4, 4, 1))
    np.testing.assert_allclose(out[..., 3:], a, atol=1e-6)
    np.testing.assert_allclose(out[1:, :, :3], prem[1:] / a[1:], atol=1e-5)
    assert np.all(out[0, 0, :3] == 0.0)            # fully transparent block: colour 0
    assert downscale_area(rgb, 1) is not None and downscale_area(rgb, 5).shape == (2, 3, 3)
