"""The one in-memory scene type every parser produces."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from nerfkit.core.cameras import Cameras


@dataclasses.dataclass
class Scene:
    """One split of a dataset, held in host memory.

    Attributes:
      images: ``[N, H, W, 3]`` float32 RGB in ``[0, 1]``. For RGBA sources these are the *straight*
        (un-premultiplied) colours; composite with ``alphas`` and a background at batch time.
      alphas: ``[N, H, W, 1]`` float32 alpha in ``[0, 1]``, or ``None`` for opaque images.
      cameras: the ``N`` cameras (:class:`~nerfkit.core.cameras.Cameras`).
      names: ``N`` image names without extension (``r_0``), used for output file names.
      near, far: the ray integration bounds in world units (in NDC ``t`` if ``ndc``).
      ndc: forward-facing scene whose rays are mapped to NDC (LLFF).
      aabb: ``[2, 3]`` axis-aligned box (min, max) enclosing the content, in the coordinates the
        model sees (NDC for ``ndc`` scenes).
      white_background: composite RGBA images onto white (``True``) or black when evaluating.
      times: ``[N]`` normalised times in ``[0, 1]`` for dynamic scenes, else ``None``.
      unbounded: a real capture whose content reaches far beyond the cameras (COLMAP,
        nerfstudio): ``aabb`` is then the inner, uncontracted region (the cameras lie inside it)
        and ``far`` is large; a model must contract space beyond it.
      metadata: free-form provenance (``format``, ``path``, ``split``, ``downscale``, ...).
    """

    images: np.ndarray
    cameras: Cameras
    names: list[str]
    near: float
    far: float
    alphas: Optional[np.ndarray] = None
    ndc: bool = False
    aabb: np.ndarray = dataclasses.field(
        default_factory=lambda: np.array([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]], np.float32))
    white_background: bool = True
    times: Optional[np.ndarray] = None
    unbounded: bool = False
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @property
    def background(self) -> np.ndarray:
        """``[3]`` evaluation background colour."""
        return np.ones(3, np.float32) if self.white_background else np.zeros(3, np.float32)

    def composited(self, background: Optional[np.ndarray] = None) -> np.ndarray:
        """``[N, H, W, 3]`` images composited over ``background`` (default: :attr:`background`)."""
        if self.alphas is None:
            return self.images
        bg = self.background if background is None else np.asarray(background, np.float32)
        return self.images * self.alphas + bg * (1.0 - self.alphas)
