"""Dataset parsers: each format becomes the same :class:`~nerfkit.data.scene.Scene`.

:func:`load_scene` detects the format of a folder:

* Blender / NeRF-Synthetic / D-NeRF: ``transforms_{split}.json`` (any ``transforms_*.json``),
  parsed by :func:`nerfkit.data.blender.load_blender`;
* LLFF: ``poses_bounds.npy``, parsed by :func:`nerfkit.data.llff.load_llff`;
* 2D signals (:mod:`nerfkit.data.signal`): an image file, or a video (a video file, or a folder
  holding image files directly, taken as its frames in name order);
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


def detect_format(path: str | os.PathLike, split: str = "train") -> str:
    """``"blender"``, ``"llff"``, ``"image"`` or ``"video"``; :class:`DataError` if none."""
    from nerfkit.data import signal
    root = Path(path)
    if not root.exists():
        raise DataError(root, "dataset path not found")
    if root.is_file() and signal.is_image_file(root):
        return "image"
    if root.is_file() and signal.is_video_file(root):
        return "video"
    if not root.is_dir():
        raise DataError(root, "dataset path must be a folder (or a transforms_*.json / "
                              "poses_bounds.npy file inside one)")
    if (root / f"transforms_{split}.json").is_file() or any(root.glob("transforms_*.json")):
        return "blender"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    if signal.is_frame_folder(root):
        return "video"
    raise DataError(root, "unrecognised dataset format: expected transforms_{split}.json "
                          "(Blender / NeRF-Synthetic / D-NeRF layout) or poses_bounds.npy with "
                          "images_N/ (LLFF layout) in this folder, video frames, or an image or "
                          "video file")


def load_scene(path: Optional[str | os.PathLike], split: str = "train",
               downscale: Optional[int] = None, **opts: Any) -> Scene:
    """Loads one split of a dataset, detecting its format.

    Args:
      path: dataset folder (a ``transforms_*.json`` or ``poses_bounds.npy`` file selects its
        folder), an image or video file, a folder of video frames, or ``None`` for the generated default scene
        (:func:`nerfkit.data.synthetic.default_scene_path`, generated on first use).
      split: ``"train"``, ``"test"``, ... (LLFF: ``"train"``, ``"test"``, ``"val"``, ``"all"``).
      downscale: integer image downscale. ``None`` means 1 for Blender-layout data and
        :data:`LLFF_DEFAULT_FACTOR` (8, the ``images_8/`` folder) for LLFF, where it selects the
        ``images_{downscale}/`` folder.
      **opts: passed to the parser: ``white_background`` (Blender); ``holdout``, ``ndc``,
        ``recenter``, ``bd_factor`` (LLFF); ``max_frames`` (video).
    Raises:
      DataError: missing or unrecognised dataset, or anything the parser finds wrong.
      ConfigError: an option the detected format does not take.
    """
    if path is None:
        from nerfkit.data.synthetic import default_scene_path
        root = default_scene_path()
    else:
        root = Path(path)
        if root.is_file() and (root.name == "poses_bounds.npy"
                               or (root.name.startswith("transforms_") and root.suffix == ".json")):
            root = root.parent
    fmt = detect_format(root, split)
    if fmt == "blender":
        from nerfkit.data.blender import load_blender as loader
        kwargs = dict(downscale=1 if downscale is None else downscale)
    elif fmt in ("image", "video"):
        from nerfkit.data import signal
        loader = signal.load_image_signal if fmt == "image" else signal.load_video
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
