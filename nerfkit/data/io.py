"""Shared parser helpers: image files (reading any common image as float ``[H, W, C]``, atomic
PNG writing, area downscaling, parallel loading), JSON files, pose and option checks.

Every reader error that is the *file's* fault (missing, truncated, corrupt, unsupported layout)
becomes a :class:`~nerfkit.errors.DataError` naming the file.
"""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import imageio.v3 as iio
import numpy as np

from nerfkit.errors import ConfigError, DataError
from nerfkit.fileio import write_bytes_atomic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PILLOW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (extensions :data:`IMAGE_EXTENSIONS`, any case).

    Hidden files are skipped. Sorted by file name (plain lexicographic order, as LLFF expects).
    Raises :class:`DataError` if ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "image folder not found" if not folder.exists()
                        else "is not a folder")
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: p.name)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as float32 ``[H, W, C]`` in ``[0, 1]``, ``C`` = 3 (RGB) or 4 (RGBA).

    8-bit images are divided by 255, 16-bit ones by 65535 (16-bit colour PNGs keep their full
    precision). Grayscale is replicated to RGB, grayscale+alpha becomes RGBA, palette images are
    expanded (to RGBA when the palette has transparency), CMYK JPEGs are converted to RGB.
    Multi-frame files give their first frame. An EXIF orientation tag (phone photos) is applied,
    so the image comes back upright, as photo viewers show it.

    Raises:
      DataError: naming ``path``, if the file is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "image file not found")
    if not path.is_file():
        raise DataError(path, "expected an image file, found a folder")
    try:
        raw = _read_raw(path)
    except DataError:
        raise
    except Exception as e:  # decoders raise OSError, ValueError, SyntaxError, zlib.error, ...
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(path, f"cannot decode image (truncated, corrupt or unsupported format): "
                              f"{detail}") from e
    return _to_float_rgb(raw, path)


def _read_raw(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        head = f.read(32)
    if len(head) == 0:
        raise DataError(path, "image file is empty (0 bytes)")
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 29 and head[12:16] == b"IHDR":
        bit_depth, colour_type, interlace = head[24], head[25], head[28]
        if bit_depth == 16 and colour_type in (2, 4, 6):
            return _read_png16_colour(path, colour_type, interlace)
        if colour_type == 3:  # palette: expand with alpha so a tRNS chunk is not lost
            img = iio.imread(path, plugin="pillow", index=0, mode="RGBA")
            return img[..., :3] if np.all(img[..., 3] == 255) else img
    # Pillow formats go straight to Pillow: a corrupt file then fails there, instead of imageio
    # trying (and warning from) every legacy plugin in turn. ``rotate``: an EXIF orientation is
    # applied, so photos load upright as photo viewers show them. JPEGs are converted to RGB:
    # CMYK (and YCbCr) JPEGs would otherwise come back as 4 channels read as RGBA.
    suffix = path.suffix.lower()
    if suffix in _PILLOW_EXTENSIONS:
        mode = "RGB" if suffix in (".jpg", ".jpeg") and _pillow_mode(path) not in ("L", "RGB") \
            else None
        # first frame of animated files
        return iio.imread(path, plugin="pillow", index=0, rotate=True, mode=mode)
    img = iio.imread(path)
    if img.ndim == 4 or (img.ndim == 3 and img.shape[-1] not in (1, 2, 3, 4)):
        img = img[0]  # a multi-frame file (GIF, multi-page TIFF): first frame
    return img


def _pillow_mode(path: Path) -> str:
    from PIL import Image
    with Image.open(path) as im:
        return im.mode


#: EXIF orientations (tag 274) that swap width and height (transposes and 90-degree turns).
_EXIF_SWAPS_AXES = (5, 6, 7, 8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image as :func:`read_image` returns it (EXIF orientation applied), read
    from the file header where Pillow can (else by decoding the image).

    Raises:
      DataError: naming ``path``, if it is missing or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found" if not path.exists()
                        else "expected an image file, found a folder")
    if path.suffix.lower() in _PILLOW_EXTENSIONS:
        try:
            from PIL import Image
            with Image.open(path) as im:
                w, h = im.size
                orientation = im.getexif().get(274, 1)
            return (w, h) if orientation in _EXIF_SWAPS_AXES else (h, w)
        except Exception:  # fall through: read_image reports the problem
            pass
    return read_image(path).shape[:2]


def _read_png16_colour(path: Path, colour_type: int, interlace: int) -> np.ndarray:
    """16-bit RGB / RGBA / gray+alpha PNGs at full precision, as uint16 ``[H, W, C]``.

    Pillow (imageio's PNG backend) keeps only the high byte of these. Its ``zip`` decoder
    un-filters bytes with the right stride for raw modes of the same bits per pixel, so decoding
    the stream once with a raw mode that picks the high bytes and once with one that picks the low
    bytes (or, for gray+alpha, as 8-bit RGBA) recovers every 16-bit sample exactly.
    """
    from PIL import Image

    def decode(rawmode: str) -> np.ndarray:
        with Image.open(path) as im:
            tile = im.tile
            if len(tile) != 1 or tile[0][0] != "zip" or not isinstance(tile[0][3], str):
                raise NotImplementedError
            im.tile = [tile[0]._replace(args=rawmode)]
            im.load()
            return np.asarray(im).astype(np.uint16)

    try:
        if interlace:
            raise NotImplementedError
        if colour_type == 4:
            r = decode("RGBA")
            return np.stack([(r[..., 0] << 8) | r[..., 1], (r[..., 2] << 8) | r[..., 3]], -1)
        mode = "RGB" if colour_type == 2 else "RGBA"
        return (decode(mode + ";16B") << 8) | decode(mode + ";16L")
    except (NotImplementedError, AttributeError, TypeError, ValueError, KeyError):
        warnings.warn(f"{path}: 16-bit colour PNG read at 8-bit precision", stacklevel=3)
        img = iio.imread(path)
        if colour_type == 4 and img.ndim == 3 and img.shape[-1] == 4:
            img = img[..., [0, 3]]
        return img


def _to_float_rgb(img: np.ndarray, path: Path) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.bool_:
        out = img.astype(np.float32)
    elif img.dtype == np.uint8:
        out = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        out = img.astype(np.float32) / 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        out = img.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise DataError(path, "image contains NaN or Inf values")
        out = np.clip(out, 0.0, 1.0)
    elif np.issubdtype(img.dtype, np.integer) and img.size and img.min() >= 0 \
            and img.max() <= 65535:  # e.g. Pillow's 32-bit "I" mode holding 16-bit samples
        out = img.astype(np.float32) / 65535.0
    else:
        raise DataError(path, f"unsupported pixel type {img.dtype}")
    if out.ndim == 2:
        out = out[..., None]
    if out.ndim != 3 or out.shape[0] == 0 or out.shape[1] == 0:
        raise DataError(path, f"unsupported image shape {img.shape}")
    c = out.shape[-1]
    if c == 1:
        out = np.repeat(out, 3, axis=-1)
    elif c == 2:
        out = np.concatenate([np.repeat(out[..., :1], 3, axis=-1), out[..., 1:]], axis=-1)
    elif c not in (3, 4):
        raise DataError(path, f"unsupported number of channels {c} (expected 1 to 4)")
    return np.ascontiguousarray(out, dtype=np.float32)


def write_image_atomic(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes ``image`` as an 8-bit PNG; readers never see a partial file.

    Args:
      path: destination (``.png`` is expected; parent folders are created).
      image: ``[H, W, C]`` (``C`` in 1, 3, 4) or ``[H, W]`` floats in ``[0, 1]`` (clipped), or
        uint8.
    Returns:
      ``path`` as a :class:`Path`.
    """
    path = Path(path)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"write_image_atomic expects [H, W, C] with C in (1, 3, 4), "
                         f"got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, np.float32)
        arr = np.round(np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).astype(np.uint8)
    return write_bytes_atomic(path, iio.imwrite("<bytes>", arr, extension=".png"))


def downscale_area(image: np.ndarray, factor: int) -> np.ndarray:
    """Integer area (box-filter) downscaling of ``[H, W, C]`` float images.

    Output size is ``(H // factor, W // factor)``: when ``H`` or ``W`` is not divisible the last
    ``H % factor`` rows / ``W % factor`` columns are cropped first (bottom/right edge; the pixel
    grid of what remains is unchanged, so intrinsics only scale by ``1 / factor``).

    For RGBA (``C == 4``) the colour is averaged *premultiplied* by alpha and then un-premultiplied
    where the averaged alpha is > 0 (colour is 0 where it is 0), so transparent pixels' arbitrary
    colours do not bleed into edges. Other channel counts are averaged independently.
    """
    factor = int(factor)
    if factor == 1:
        return np.asarray(image, np.float32)
    img = np.asarray(image, np.float32)
    h, w = img.shape[0] // factor, img.shape[1] // factor
    if h == 0 or w == 0:
        raise ValueError(f"image of size {img.shape[1]}x{img.shape[0]} is smaller than the "
                         f"downscale factor {factor}")
    img = img[: h * factor, : w * factor]
    c = img.shape[-1]
    # Channel-planar copy: the box sums then run over contiguous memory (~5x faster than
    # reducing the interleaved [H, W, C] layout directly).
    planes = np.empty((c,) + img.shape[:2], np.float32)
    src = np.moveaxis(img, -1, 0)
    if c == 4:
        np.multiply(src[:3], src[3], out=planes[:3])  # premultiply colour by alpha
        planes[3] = src[3]
    else:
        planes[...] = src
    sums = planes.reshape(c, h, factor, w * factor).sum(axis=2)
    means = sums.reshape(c, h, w, factor).sum(axis=-1) * np.float32(1.0 / (factor * factor))
    if c == 4:
        a = means[3]
        means[:3] = np.where(a > 0, means[:3] / np.maximum(a, np.float32(1e-12)), 0.0)
        np.clip(means[:3], 0.0, 1.0, out=means[:3])
    return np.ascontiguousarray(np.moveaxis(means, 0, -1), dtype=np.float32)


def resample_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[h, w, C]`` float image resampled to ``[height, width, C]`` over the same extent (pixel
    centres at ``(i + 0.5) * h / height``): Pillow's antialiased bicubic filter, channel by
    channel in 32-bit float (no 8-bit rounding). RGBA is resampled premultiplied by alpha, as
    :func:`downscale_area` averages it."""
    from PIL import Image
    img = np.asarray(image, np.float32)
    if img.shape[:2] == (height, width):
        return img
    rgba = img.shape[-1] == 4
    if rgba:
        img = np.concatenate([img[..., :3] * img[..., 3:], img[..., 3:]], -1)
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c]), mode="F")
                               .resize((width, height), Image.Resampling.BICUBIC), np.float32)
                    for c in range(img.shape[-1])], -1)
    out = np.clip(out, 0.0, 1.0)
    if rgba:
        a = out[..., 3:]
        out[..., :3] = np.where(a > 0, out[..., :3] / np.maximum(a, 1e-12), 0.0)
        out = np.clip(out, 0.0, 1.0)
    return out


def read_image_downscaled(path: str | os.PathLike, factor: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`read_image` then :func:`downscale_area` by ``factor``; returns the image and the
    full-resolution ``(H, W)``. An image smaller than the factor is a :class:`DataError`."""
    img = read_image(path)
    full = img.shape[:2]
    if factor > 1:
        if full[0] < factor or full[1] < factor:
            raise DataError(path, f"image of size {full[1]}x{full[0]} is smaller than the "
                                  f"downscale factor {factor}")
        img = downscale_area(img, factor)
    return img, full


#: Tolerances for a rigid camera-to-world matrix: ``max |R^T R - I|`` and
#: ``|last row - [0, 0, 0, 1]|``.
ROTATION_TOLERANCE = 1e-3
LAST_ROW_TOLERANCE = 1e-5


def check_rigid_pose(matrix: Any, path: str | os.PathLike, where: str) -> np.ndarray:
    """Validates a camera-to-world matrix and returns it as float64 ``[3, 4]``.

    ``matrix`` is ``[4, 4]`` (last row must be ``[0, 0, 0, 1]``) or ``[3, 4]``. The rotation must be
    orthonormal with determinant +1 within :data:`ROTATION_TOLERANCE`, and every entry finite.

    Raises:
      DataError: naming ``path``; ``where`` says which pose (e.g. ``"frame 3 (./train/r_3)"``).
    """
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(path, f"{where}: transform_matrix is not a numeric matrix") from None
    if m.shape not in ((4, 4), (3, 4)):
        raise DataError(path, f"{where}: transform_matrix must be 4x4, got shape "
                              f"{'x'.join(map(str, m.shape)) or 'scalar'}")
    if not np.all(np.isfinite(m)):
        raise DataError(path, f"{where}: pose contains NaN or Inf values")
    if m.shape == (4, 4) and np.max(np.abs(m[3] - [0.0, 0.0, 0.0, 1.0])) > LAST_ROW_TOLERANCE:
        raise DataError(path, f"{where}: pose is not a rigid transform (last row is "
                              f"{np.round(m[3], 6).tolist()}, expected [0, 0, 0, 1])")
    rot = m[:3, :3]
    err = float(np.max(np.abs(rot.T @ rot - np.eye(3))))
    if err > ROTATION_TOLERANCE:
        raise DataError(path, f"{where}: pose is not a rigid transform (rotation not orthonormal: "
                              f"max |R^T R - I| = {err:.3g}, tolerance {ROTATION_TOLERANCE})")
    if np.linalg.det(rot) < 0:
        raise DataError(path, f"{where}: pose is not a rigid transform (rotation is a reflection, "
                              f"det = {np.linalg.det(rot):.3g})")
    return m[:3, :4]


def load_images_parallel(paths: Sequence[Path], load: Callable[[Path], Any],
                         max_workers: int = 8) -> list[Any]:
    """``[load(p) for p in paths]`` on a thread pool (decoding releases the GIL); the first failing
    path (in order) raises its error."""
    if len(paths) <= 1:
        return [load(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(paths))) as pool:
        futures = [pool.submit(load, p) for p in paths]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def check_downscale(downscale: Any) -> int:
    """``downscale`` as an int; :class:`ConfigError` unless it is an integer >= 1."""
    if isinstance(downscale, bool) or not isinstance(downscale, (int, np.integer)) or downscale < 1:
        raise ConfigError(f"downscale must be an integer >= 1, got {downscale!r}")
    return int(downscale)


def read_json(path: Path) -> dict:
    """Reads a JSON file whose top level is an object; every problem is a one-line
    :class:`DataError` naming ``path`` (unreadable, not UTF-8, malformed, not an object)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, f"malformed JSON: not UTF-8 text ({e.reason} at byte {e.start})") \
            from None
    except OSError as e:
        raise DataError(path, f"cannot read file: {e.strerror or e}") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") \
            from None
    if not isinstance(meta, dict):
        raise DataError(path, f"malformed JSON file: top level must be a JSON object, got "
                              f"{type(meta).__name__}")
    return meta


def stack_images(images: Sequence[np.ndarray]) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Stacks same-size ``[H, W, 3|4]`` images into ``rgb [N, H, W, 3]`` and, when any has an
    alpha channel, ``alpha [N, H, W, 1]`` (1 for the opaque ones); else ``(rgb, None)``."""
    rgb = np.stack([img[..., :3] for img in images])
    if not any(img.shape[-1] == 4 for img in images):
        return rgb, None
    alpha = np.stack([img[..., 3:4] if img.shape[-1] == 4
                      else np.ones(img.shape[:2] + (1,), np.float32) for img in images])
    return rgb, alpha
