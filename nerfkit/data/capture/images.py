"""Photos in: copied (or converted) upright into ``DIR/images``, downscaled into ``images_N``.

Files that COLMAP and nerfkit both read as-is (JPEG in L/RGB, PNG) with no EXIF rotation are
copied byte for byte. Others are decoded with Pillow and rewritten upright
(``ImageOps.exif_transpose``, as photo viewers show them): JPEGs as JPEG (quality 95; CMYK and
other modes converted to RGB), everything else (TIFF, WebP, BMP, GIF, ...) as PNG under the same
stem. Every file is fully decoded once, so a truncated or corrupt photo is a :class:`DataError`
naming it before structure from motion starts.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nerfkit.data.io import IMAGE_EXTENSIONS, downscale_area, read_image, write_image_atomic
from nerfkit.errors import DataError
from nerfkit.fileio import atomic_path, write_bytes_atomic

_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    """One photo in ``DIR/images``: its ``name``, the ``source`` it came from, its upright
    ``size`` ``(width, height)`` in pixels, and whether it was ``converted`` (re-encoded)."""
    name: str
    source: Path
    size: tuple[int, int]
    converted: bool


def list_input_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by extension, any case), sorted by name.

    Raises:
      DataError: ``folder`` missing, not a folder, or holding no image files.
    """
    if not folder.exists():
        raise DataError(folder, "input folder not found")
    if not folder.is_dir():
        raise DataError(folder, "expected a folder of photos (for a video use "
                                "`nerfkit process-data video`)")
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name)
    if not files:
        raise DataError(folder, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return files


def prepare_image(src: Path, dst_dir: Path, taken: set[str]) -> PreparedImage:
    """Copies or converts one photo into ``dst_dir`` (atomically); see the module docstring.

    Args:
      src: the input photo.
      dst_dir: ``DIR/images``.
      taken: output names already used (a converted ``a.tif`` becomes ``a.png``; if that is taken
        it becomes ``a_tif.png``); updated in place.
    Raises:
      DataError: naming ``src``, if it cannot be decoded.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(src) as im:
            fmt = im.format
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            im.load()  # full decode: catches truncated files now
            upright = ImageOps.exif_transpose(im) if orientation not in (None, 1) else im
            size = upright.size
            copy_as_is = orientation in (None, 1) and (
                (fmt == "JPEG" and im.mode in ("L", "RGB")) or fmt == "PNG")
            if copy_as_is:
                name, data = src.name, None
            else:
                if fmt == "JPEG":
                    out = upright if upright.mode in ("L", "RGB") else upright.convert("RGB")
                    name, save_fmt, kw = src.name, "JPEG", dict(quality=95, subsampling=0)
                else:
                    out = upright
                    if out.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I"):
                        out = out.convert("RGBA" if "A" in out.getbands()
                                          or "transparency" in out.info else "RGB")
                    name, save_fmt, kw = src.stem + ".png", "PNG", {}
                    if name in taken:
                        name = f"{src.stem}_{src.suffix.lstrip('.').lower()}.png"
                buf = io.BytesIO()
                out.save(buf, format=save_fmt, **kw)
                data = buf.getvalue()
    except DataError:
        raise
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(src, f"cannot decode image (truncated, corrupt or unsupported): "
                             f"{detail}") from e
    if name in taken:
        raise DataError(src, f"two input photos would both be written as images/{name}; "
                             "rename one")
    taken.add(name)
    dst = dst_dir / name
    with atomic_path(dst) as tmp:
        if data is None:
            shutil.copyfile(src, tmp)
        else:
            tmp.write_bytes(data)
    return PreparedImage(name=name, source=src, size=(int(size[0]), int(size[1])),
                         converted=data is not None)


def prepare_images(sources: list[Path], dst_dir: Path,
                   progress: Optional[Callable[[int], None]] = None) -> list[PreparedImage]:
    """:func:`prepare_image` for every source, in order; ``progress(k)`` after each one."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    out = []
    for k, src in enumerate(sources):
        out.append(prepare_image(src, dst_dir, taken))
        if progress is not None:
            progress(k + 1)
    return out


def write_downscaled(src: Path, out_dirs: dict[int, Path]) -> None:
    """Writes ``src`` area-downscaled by each factor into ``out_dirs[factor]/src.name``.

    Uses :func:`nerfkit.data.io.downscale_area`: output ``(H // f, W // f)``, the last rows and
    columns cropped when not divisible, so intrinsics scale by exactly ``1 / f``. JPEGs are written
    as JPEG (quality 95), everything else as 8-bit PNG, atomically.
    """
    img = read_image(src)
    for f, d in out_dirs.items():
        small = downscale_area(img, f)
        dst = d / src.name
        if src.suffix.lower() in (".jpg", ".jpeg"):
            _write_jpeg_atomic(dst, small)
        else:
            write_image_atomic(dst, small)


def _write_jpeg_atomic(path: Path, image: np.ndarray) -> None:
    from PIL import Image


    arr = np.round(np.clip(image[..., :3], 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, subsampling=0)
    write_bytes_atomic(path, buf.getvalue())
