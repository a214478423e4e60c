"""Dataset parsers: each format becomes the same :class:`~nerfkit.data.scene.Scene`.

:func:`load_scene` detects the format of a folder:

* Blender / NeRF-Synthetic / D-NeRF: ``transforms_{split}.json`` (any ``transforms_*.json``),
  parsed by :func:`nerfkit.data.blender.load_blender`;
* nerfstudio / instant-ngp: one ``transforms.json``, parsed by
  :func:`nerfkit.data.nerfstudio.load_nerfstudio` (a real, unbounded capture);
* LLFF: ``poses_bounds.npy``, parsed by :func:`nerfkit.data.llff.load_llff`;
* COLMAP: a sparse model (``sparse/0/``, ``sparse/`` or the folder itself holding
  ``cameras.bin``/``images.bin`` or the ``.txt`` files) beside ``images/``, parsed by
  :func:`nerfkit.data.colmap.load_colmap` (a real, unbounded capture);
* 2D signals (:mod:`nerfkit.data.signal`): an image file or a video file; a folder holding image
  files directly is a video's frames only when asked for (``as_video=True``, as the ``video``
  family does): without poses, a folder of photos is a capture to run ``nerfkit process-data``
  on first;
* ``path=None``: nerfkit's generated default scene (:mod:`nerfkit.data.synthetic`), a Blender-layout
  dataset in a cache folder.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Optional

from nerfkit.data.scene import Scene
from nerfkit.errors import ConfigError, DataError

__all__ = ["Scene", "load_scene", "detect_format"]

#: LLFF's image factor when ``load_scene`` gets no ``downscale`` (NeRF's LLFF setting).
LLFF_DEFAULT_FACTOR = 8


def detect_format(path: str | os.PathLike, split: str = "train", as_video: bool = False) -> str:
    """``"blender"``, ``"nerfstudio"``, ``"llff"``, ``"colmap"``, ``"image"`` or ``"video"``.

    ``as_video``: a folder that holds image files directly (and no dataset's marker files) is a
    video's frames; without it such a folder (or ``images/`` without a sparse model) is a
    :class:`DataError` saying to run ``nerfkit process-data images`` first.

    Raises:
      DataError: missing path or no recognised format.
    """
    from nerfkit.data import signal
    from nerfkit.data.colmap import find_model_folder
    root = Path(path)
    if not root.exists():
        raise DataError(root, "dataset path not found")
    if root.is_file() and signal.is_image_file(root):
        return "image"
    if root.is_file() and signal.is_video_file(root):
        return "video"
    if not root.is_dir():
        raise DataError(root, "dataset path must be a folder (or a transforms.json / "
                              "transforms_*.json / poses_bounds.npy file inside one)")
    if (root / f"transforms_{split}.json").is_file() or any(root.glob("transforms_*.json")):
        return "blender"
    if (root / "transforms.json").is_file():
        return "nerfstudio"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    if find_model_folder(root) is not None:
        return "colmap"
    if as_video and signal.is_frame_folder(root):
        return "video"
    photos = root / "images" if signal.is_frame_folder(root / "images") else \
        (root if signal.is_frame_folder(root) else None)
    if photos is not None:
        raise DataError(root, f"photos without camera poses: run `nerfkit process-data images "
                              f"{photos} --output OUT` first and train on OUT (a folder of video "
                              f"frames: train the video family)")
    raise DataError(root, "unrecognised dataset format: expected transforms_{split}.json "
                          "(Blender / NeRF-Synthetic / D-NeRF layout), transforms.json "
                          "(nerfstudio / instant-ngp), poses_bounds.npy with images_N/ (LLFF "
                          "layout) or a COLMAP model (sparse/0/) with images/ in this folder, "
                          "or an image or video file")


def load_scene(path: Optional[str | os.PathLike], split: str = "train",
               downscale: Optional[int] = None, *, as_video: bool = False,
               **opts: Any) -> Scene:
    """Loads one split of a dataset, detecting its format.

    Args:
      path: dataset folder (a ``transforms.json``, ``transforms_*.json`` or
        ``poses_bounds.npy`` file selects its folder), an image or video file, a folder of video
        frames (with ``as_video``), or ``None`` for the generated default scene
        (:func:`nerfkit.data.synthetic.default_scene_path`, generated on first use).
      split: ``"train"``, ``"test"``, ... (LLFF, nerfstudio, COLMAP: ``"train"``, ``"test"``,
        ``"val"``, ``"all"``).
      downscale: integer image downscale. ``None`` means 1, except LLFF:
        :data:`LLFF_DEFAULT_FACTOR` (8, the ``images_8/`` folder). LLFF, nerfstudio and COLMAP
        read ``images_{downscale}/`` when present.
      as_video: a folder of image files is a video's frames (the ``video`` family passes it).
      **opts: passed to the parser: ``white_background`` (Blender); ``holdout``, ``ndc``,
        ``recenter``, ``bd_factor`` (LLFF); ``holdout``, ``orientation``, ``center``
        (nerfstudio, COLMAP; ``images_dir``, ``model_dir`` for COLMAP); ``max_frames``
        (video).
    Raises:
      DataError: missing or unrecognised dataset, or anything the parser finds wrong.
      ConfigError: an option the detected format does not take.
    """
    if path is None:
        from nerfkit.data.synthetic import default_scene_path
        root = default_scene_path()
    else:
        root = Path(path)
        if root.is_file() and (root.name in ("poses_bounds.npy", "transforms.json")
                               or (root.name.startswith("transforms_") and root.suffix == ".json")):
            root = root.parent
    fmt = detect_format(root, split, as_video=as_video)
    if fmt == "blender":
        from nerfkit.data.blender import load_blender as loader
        kwargs = dict(downscale=1 if downscale is None else downscale)
    elif fmt in ("image", "video"):
        from nerfkit.data import signal
        loader = signal.load_image_signal if fmt == "image" else signal.load_video
        kwargs = dict(downscale=1 if downscale is None else downscale)
    elif fmt in ("nerfstudio", "colmap"):
        if fmt == "nerfstudio":
            from nerfkit.data.nerfstudio import load_nerfstudio as loader
        else:
            from nerfkit.data.colmap import load_colmap as loader
        kwargs = dict(downscale=1 if downscale is None else downscale)
    else:
        from nerfkit.data.llff import load_llff as loader
        kwargs = dict(factor=LLFF_DEFAULT_FACTOR if downscale is None else downscale)
    allowed = set(inspect.signature(loader).parameters) - {"root", "split", "downscale", "factor"}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ConfigError(f"option(s) {', '.join(unknown)} not valid for {fmt} datasets; valid: "
                          f"{', '.join(sorted(allowed))}")
    scene = loader(root, split=split, **kwargs, **opts)
    if path is None:
        scene.metadata["default_scene"] = True
    return scene
