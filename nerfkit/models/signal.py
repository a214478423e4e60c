"""Coordinate MLPs fitting 2D signals: ``(x, y) -> rgb`` for images, ``(x, y, t) -> rgb`` for
videos.

Two trunks, as compared in the papers this family serves:

* SIREN (Sitzmann et al., "Implicit Neural Representations with Periodic Activation Functions",
  NeurIPS 2020): raw coordinates into sine layers with SIREN's initialisation
  (:mod:`nerfkit.nn.mlp`), a linear output.
* ReLU + positional encoding (Mildenhall et al. 2020 eq. 4; Tancik et al. 2020 for signals).

Either takes ResField layers over time (Mihajlovic et al., ICLR 2024) for videos, and CAM
(Lee et al., ICLR 2024) over the pixel position (images) or time (videos); see
:mod:`nerfkit.nn.modulation`. The field outputs ``0.5 + 0.5 * MLP(c)`` so that the MLP fits the
colours mapped to ``[-1, 1]``, as SIREN does. Coordinates come from the signal cameras of
:mod:`nerfkit.data.signal` (ray direction ``(x, y, -1)``, ray time ``t``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from nerfkit.core import encodings
from nerfkit.core.render import RenderOutput
from nerfkit.core.rays import Rays
from nerfkit.errors import ConfigError
from nerfkit.models.registry import register_family, register_preset
from nerfkit.models.base import Model, ModelConfig, SceneInfo, adam_with_grid_lr
from nerfkit.nn.mlp import MLP, SIREN_W0
from nerfkit.nn.modulation import CAMConfig, ResFieldsConfig, cam_coordinate


@register_family
@dataclasses.dataclass(frozen=True)
class SignalConfig(ModelConfig):
    """A coordinate MLP for images and videos.

    Attributes:
      activation: ``sine`` (SIREN) or ``relu`` (with positional encoding).
      width, depth: hidden width and number of hidden layers.
      w0: SIREN's frequency factor (30).
      pos_freqs, time_freqs: positional-encoding octaves of ``(x, y)`` and of ``t`` (``relu``
        only; SIREN reads raw coordinates).
      resfields: ResField layers over time (videos).
      cam: coordinate-aware modulation (``auto``: pixel position for images, time for videos).
    """

    family: ClassVar[str] = "signal"

    activation: str = "sine"
    width: int = 256
    depth: int = 5
    w0: float = SIREN_W0
    pos_freqs: int = 10
    time_freqs: int = 8
    resfields: ResFieldsConfig = ResFieldsConfig()
    cam: CAMConfig = CAMConfig()
    lr_init: float = 1e-4
    lr_final: float = 1e-5
    batch_size: int = 8192
    background: str = "black"
    render_chunk: int = 32768
    default_steps: int = 5000

    def __post_init__(self):
        if self.activation not in ("sine", "relu"):
            raise ConfigError(f"--model.activation must be 'sine' or 'relu', "
                              f"got {self.activation!r}")

    def build(self, scene: SceneInfo, rngs: nnx.Rngs) -> "SignalField":
        return SignalField(self, scene, rngs=rngs)

    def optimizer(self) -> optax.GradientTransformation:
        if self.cam.enabled:
            return adam_with_grid_lr(self.lr_init, self.cam.lr)
        return super().optimizer()


class SignalField(Model):
    """``(x, y[, t]) -> rgb`` from the rays of signal cameras."""

    def __init__(self, cfg: SignalConfig, scene: SceneInfo, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.timed = bool(scene.has_time)
        frames = cfg.resfields.frames or scene.num_frames
        if cfg.resfields.enabled and not self.timed:
            raise ConfigError("--model.resfields.layers: ResFields need a video (this signal has "
                              "no time)")
        cam = None
        if cfg.cam.enabled:
            cam = cfg.cam.coord if cfg.cam.coord != "auto" else ("time" if self.timed else "xy")
            if cam not in ("time", "xy"):
                raise ConfigError(f"--model.cam.coord {cam!r}: a 2D signal has time or xy")
            if cam == "time" and not self.timed:
                raise ConfigError("--model.cam.coord time: this signal (an image) has no time")
        self.cam_kind = cam
        in_dim = 2 + int(self.timed)
        if cfg.activation == "relu":
            in_dim = encodings.positional_encoding_dim(2, cfg.pos_freqs, True) + (
                encodings.positional_encoding_dim(1, cfg.time_freqs, True) if self.timed else 0)
        self.mlp = MLP(in_dim, cfg.width, cfg.depth, 3, rngs=rngs, activation=cfg.activation,
                       w0=cfg.w0, resfields=cfg.resfields, num_frames=frames, cam=cam,
                       cam_resolution=cfg.cam.resolution)

    def field(self, xy: jax.Array, time: Optional[jax.Array]) -> jax.Array:
        """Colour ``[..., 3]`` at coordinates ``xy [..., 2]`` in ``[-1, 1]`` and ``time [..., 1]``
        in ``[0, 1]`` (``None`` for images)."""
        cfg = self.cfg
        if self.timed and time is None:
            raise ValueError("a video field needs time [..., 1]")
        if cfg.activation == "sine":
            feats = [xy] + ([2.0 * time - 1.0] if self.timed else [])
        else:
            feats = [encodings.positional_encoding(xy, cfg.pos_freqs, True)]
            if self.timed:
                feats.append(encodings.positional_encoding(2.0 * time - 1.0, cfg.time_freqs, True))
        c = None
        if self.cam_kind is not None:
            c = cam_coordinate(self.cam_kind, xy=xy, time=time)
        out = self.mlp(jnp.concatenate(feats, axis=-1), time, c)
        return 0.5 + 0.5 * out

    def render_rays(self, rays: Rays, key: Optional[jax.Array], *, train: bool,
                    background: jax.Array) -> RenderOutput:
        rgb = self.field(rays.directions[..., :2], rays.time if self.timed else None)
        ones = jnp.ones((*rgb.shape[:-1], 1), rgb.dtype)
        return {"rgb": rgb, "depth": ones, "acc": ones}


__all__ = ["SignalConfig", "SignalField"]


register_preset(
    "image", "Fit an image with a coordinate MLP (SIREN by default; --model.activation relu for "
    "ReLU + positional encoding, --model.cam.enabled for CAM over the pixel position). Writes the "
    "reconstruction as PNG and prints its PSNR.",
    SignalConfig(), checkpoint_every=1000, final_eval=True)

register_preset(
    "video", "Fit a video (file or frame folder) with an (x, y, t) coordinate MLP (SIREN by "
    "default; --model.resfields.layers 1 2 3 for ResFields, --model.cam.enabled for CAM over "
    "time). Writes the reconstruction as PNG frames and MP4 and prints its PSNR.",
    SignalConfig(), checkpoint_every=1000, final_eval=True)
