"""Coordinate MLPs fitting 2D signals: ``(x, y) -> rgb`` for images, ``(x, y, t) -> rgb`` for
videos.

Three trunks, as compared in the papers this family serves:

* SIREN (Sitzmann et al., "Implicit Neural Representations with Periodic Activation Functions",
  NeurIPS 2020): raw coordinates into sine layers with SIREN's initialisation
  (:mod:`nerfkit.nn.mlp`), a linear output. The ResFields video setup (Mihajlovic et al., ICLR
  2024; github.com/markomih/ResFields ``dyrecon/configs/video/base.yaml``) is SIREN
  ``[3, H, H, H, H, 3]`` (``depth=4``) with ResField layers 1 2 3, Adam with cosine decay to a
  tenth, frame-stratified batches (``batching="frames"``) and 10% of each frame's pixels held
  out (``holdout=0.1``).
* ReLU + positional encoding (Mildenhall et al. 2020 eq. 4; Tancik et al. 2020 for signals).
* ReLU + random Fourier features (``encoding="fourier"``): the "FFN" image baseline of CAM (Lee
  et al., ICLR 2024; github.com/maincold2/CAM ``CAM_image.py``): 256 Gaussian frequencies with
  ``sigma = 10`` over coordinates in ``[0, 1]``, 3 x 256 ReLU, sigmoid output, Adam 1e-3 with
  step decay (``lr_schedule="step"``: x0.1 at 50% and 75% of training), full-batch.

Either takes ResField layers over time for videos, and CAM over the pixel position (images) or
time (videos); see :mod:`nerfkit.nn.modulation`. With ``output="affine"`` the field outputs
``0.5 + 0.5 * MLP(c)`` (the MLP fits colours mapped to ``[-1, 1]``, as SIREN does), with
``sigmoid`` ``sigmoid(MLP(c))``. Coordinates come from the signal cameras of
:mod:`nerfkit.data.signal` (ray direction ``(x, y, -1)``, ray time ``t``). Frame-stratified
batches (:class:`~nerfkit.data.raysource.FrameSource`, rays ``[K, P]``) reach the per-frame
ResField path: each layer's ``W(t)`` is formed once per frame.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from nerfkit.core import encodings
from nerfkit.core.render import RenderOutput
from nerfkit.core.rays import FrameBatching, Rays, frame_rows
from nerfkit.errors import ConfigError
from nerfkit.models.registry import register_family, register_preset
from nerfkit.models.base import (Model, ModelConfig, SceneInfo, adam_with_grid_lr,
                                 check_batching)
from nerfkit.nn.mlp import MLP, SIREN_W0
from nerfkit.nn.modulation import CAMConfig, ResFieldsConfig, cam_coordinate

LR_SCHEDULES = ("exponential", "cosine", "step")


@register_family
@dataclasses.dataclass(frozen=True)
class SignalConfig(ModelConfig):
    """A coordinate MLP for images and videos.

    Attributes:
      activation: ``sine`` (SIREN) or ``relu`` (with an input encoding).
      encoding: ``relu`` only: ``positional`` (NeRF's octaves, ``pos_freqs``/``time_freqs``) or
        ``fourier`` (random Fourier features, ``fourier_features`` frequencies of scale
        ``fourier_sigma``).
      output: ``auto`` (``sigmoid`` with Fourier features, else ``affine``), ``affine``
        (``0.5 + 0.5 * MLP``) or ``sigmoid``.
      width, depth: hidden width and number of hidden layers.
      init: ``relu`` only: ``glorot`` (Glorot-uniform weights, zero biases), ``torch``
        (PyTorch ``nn.Linear``'s default, as in the official FFN/CAM image code: weights and
        biases ``U(+-1/sqrt(fan_in))``) or ``auto``: ``torch`` with CAM, ``glorot`` without
        (text image, 250 steps: FFN 22.05 / 15.48 dB with glorot / torch, FFN + CAM 20.78 /
        24.40 dB; README, ResFields and CAM).
      w0: SIREN's frequency factor (30).
      pos_freqs, time_freqs: positional-encoding octaves of ``(x, y)`` and of ``t``.
      resfields: ResField layers over time (videos).
      cam: coordinate-aware modulation (``auto``: pixel position for images, time for videos;
        grid lr ``auto``: 10x ``lr_init``, the image code's ratio, unless ``coord`` is ``time``).
      batching: videos: ``frames`` (frame-stratified, ``frames_per_batch`` frames with
        ``batch_size // frames_per_batch`` pixels each; 0: all frames) or ``pixels`` (uniform
        over all pixels of all frames). Images always draw pixels.
      holdout: fraction of each frame's pixels never trained on (videos; 0.1 in ResFields);
        the benchmark reports PSNR on them.
      lr_schedule: ``exponential`` (``lr_init`` -> ``lr_final`` log-linearly), ``cosine``
        (ResFields: cosine from ``lr_init`` to ``lr_final``) or ``step`` (CAM's image code:
        ``lr_init``, x0.1 at 50% and again at 75% of training).
    """

    family: ClassVar[str] = "signal"

    activation: str = "sine"
    encoding: str = "positional"
    output: str = "auto"
    width: int = 256
    depth: int = 5
    init: str = "auto"
    w0: float = SIREN_W0
    pos_freqs: int = 10
    time_freqs: int = 8
    fourier_features: int = 256
    fourier_sigma: float = 10.0
    resfields: ResFieldsConfig = ResFieldsConfig()
    cam: CAMConfig = CAMConfig()
    batching: str = "frames"
    frames_per_batch: int = 0
    holdout: float = 0.0
    lr_schedule: str = "exponential"
    lr_init: float = 1e-4
    lr_final: float = 1e-5
    batch_size: int = 8192
    background: str = "black"
    render_chunk: int = 32768
    default_steps: int = 5000

    def resolved_init(self) -> str:
        """``init`` with ``auto`` resolved: PyTorch's init with CAM (the authors' code; with
        Glorot weights CAM's per-pixel norm fell behind plain FFN), Glorot otherwise."""
        if self.init != "auto":
            return self.init
        return "torch" if self.cam.enabled and self.activation == "relu" else "glorot"

    def __post_init__(self):
        if self.activation not in ("sine", "relu"):
            raise ConfigError(f"--model.activation must be 'sine' or 'relu', "
                              f"got {self.activation!r}")
        if self.encoding not in ("positional", "fourier"):
            raise ConfigError(f"--model.encoding must be 'positional' or 'fourier', "
                              f"got {self.encoding!r}")
        if self.encoding == "fourier" and self.activation == "sine":
            raise ConfigError("--model.encoding fourier is for ReLU networks (--model.activation "
                              "relu); SIREN reads raw coordinates")
        if self.output not in ("auto", "affine", "sigmoid"):
            raise ConfigError(f"--model.output must be auto, affine or sigmoid, "
                              f"got {self.output!r}")
        check_batching(self.batching, self.frames_per_batch)
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"--model.holdout must be in [0, 1), got {self.holdout}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--model.lr-schedule must be one of {', '.join(LR_SCHEDULES)}, "
                              f"got {self.lr_schedule!r}")
        if self.cam.enabled and self.cam.coord in ("time", "xy", "auto"):
            # Refuse normalisation before sine now (not at build): the message names the flag.
            self.cam.resolved("time" if self.cam.coord == "time" else "xy",
                              sine=self.activation == "sine")

    @property
    def out_sigmoid(self) -> bool:
        return self.output == "sigmoid" or (self.output == "auto" and self.encoding == "fourier")

    def build(self, scene: SceneInfo, rngs: nnx.Rngs) -> "SignalField":
        return SignalField(self, scene, rngs=rngs)

    def learning_rate(self, progress: float, step: Optional[int] = None) -> float:
        p = min(max(progress, 0.0), 1.0)
        if self.lr_schedule == "cosine":
            return self.lr_final + 0.5 * (self.lr_init - self.lr_final) * (1 + math.cos(math.pi * p))
        if self.lr_schedule == "step":
            return self.lr_init * 0.1 ** ((p >= 0.5) + (p >= 0.75))
        return super().learning_rate(progress, step)

    def data_source(self, scene, train_cfg) -> Optional[FrameBatching]:
        if getattr(scene, "times", None) is None or self.batching != "frames":
            if self.holdout > 0:
                raise ConfigError("--model.holdout needs frame-stratified batches of a video "
                                  "(--model.batching frames)")
            return None
        return FrameBatching(self.frames_per_batch, self.holdout)

    def optimizer(self) -> optax.GradientTransformation:
        if self.cam.enabled:
            kind = "time" if self.cam.coord == "time" else "xy"
            return adam_with_grid_lr(self.lr_init, self.cam.grid_lr(kind, self.lr_init))
        return super().optimizer()


class SignalField(Model):
    """``(x, y[, t]) -> rgb`` from the rays of signal cameras (batch ``[B]``, or ``[K, P]`` with
    one frame per row, see :func:`~nerfkit.core.rays.frame_rows`)."""

    def __init__(self, cfg: SignalConfig, scene: SceneInfo, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.timed = bool(scene.has_time)
        frames = cfg.resfields.frames or scene.num_frames
        if cfg.resfields.enabled and not self.timed:
            raise ConfigError("--model.resfields.layers: ResFields need a video (this signal has "
                              "no time)")
        cam = None
        if cfg.cam.enabled:
            kind = cfg.cam.coord if cfg.cam.coord != "auto" else ("time" if self.timed else "xy")
            if kind not in ("time", "xy"):
                raise ConfigError(f"--model.cam.coord {kind!r}: a 2D signal has time or xy")
            if kind == "time" and not self.timed:
                raise ConfigError("--model.cam.coord time: this signal (an image) has no time")
            cam = cfg.cam.resolved(kind, sine=cfg.activation == "sine")
        self.cam_kind = None if cam is None else cam.kind
        coord_dim = 2 + int(self.timed)
        fourier = cfg.activation == "relu" and cfg.encoding == "fourier"
        # A fixed (untrained) projection: a non-Param variable, saved with the checkpoint.
        self.fourier = nnx.Variable(encodings.fourier_projection(
            rngs.params(), coord_dim, cfg.fourier_features, cfg.fourier_sigma)) if fourier else None
        if cfg.activation == "sine":
            in_dim = coord_dim
        elif fourier:
            in_dim = 2 * cfg.fourier_features
        else:
            in_dim = encodings.positional_encoding_dim(2, cfg.pos_freqs, True) + (
                encodings.positional_encoding_dim(1, cfg.time_freqs, True) if self.timed else 0)
        self.mlp = MLP(in_dim, cfg.width, cfg.depth, 3, rngs=rngs, activation=cfg.activation,
                       init=cfg.resolved_init(), w0=cfg.w0, resfields=cfg.resfields,
                       num_frames=frames, cam=cam)

    def field(self, xy: jax.Array, time: Optional[jax.Array],
              frame_time: Optional[jax.Array] = None) -> jax.Array:
        """Colour ``[..., 3]`` at coordinates ``xy [..., 2]`` in ``[-1, 1]`` and ``time [..., 1]``
        in ``[0, 1]`` (``None`` for images). ``frame_time``: optionally one time per leading row,
        ``[K, 1]`` for ``xy [K, P, 2]`` (all pixels of row ``k`` from one frame): ResField
        weights and CAM lookups are then formed once per row."""
        cfg = self.cfg
        if self.timed and time is None:
            raise ValueError("a video field needs time [..., 1]")
        if cfg.activation == "sine":
            feats = [xy] + ([2.0 * time - 1.0] if self.timed else [])
        elif self.fourier is not None:  # coordinates in [0, 1], as the official FFN
            coords = jnp.concatenate([xy] + ([2.0 * time - 1.0] if self.timed else []), -1)
            feats = [encodings.random_fourier_features(0.5 * (coords + 1.0), self.fourier[...])]
        else:
            feats = [encodings.positional_encoding(xy, cfg.pos_freqs, True)]
            if self.timed:
                feats.append(encodings.positional_encoding(2.0 * time - 1.0, cfg.time_freqs, True))
        t_row = time if frame_time is None else frame_time
        c = None
        if self.cam_kind is not None:
            c = cam_coordinate(self.cam_kind, xy=xy, time=t_row)
        out = self.mlp(jnp.concatenate(feats, axis=-1), t_row, c)
        return jax.nn.sigmoid(out) if cfg.out_sigmoid else 0.5 + 0.5 * out

    def render_rays(self, rays: Rays, key: Optional[jax.Array], *, train: bool,
                    background: jax.Array) -> RenderOutput:
        time = rays.time if self.timed else None
        frame_time = rays.time[:, 0] if self.timed and frame_rows(rays) else None
        rgb = self.field(rays.directions[..., :2], time, frame_time)
        ones = jnp.ones((*rgb.shape[:-1], 1), rgb.dtype)
        return {"rgb": rgb, "depth": ones, "acc": ones}


__all__ = ["SignalConfig", "SignalField"]


register_preset(
    "image", "Fit an image with a coordinate MLP (SIREN by default; --model.activation relu for "
    "ReLU + positional encoding, adding --model.encoding fourier for CAM's FFN baseline; "
    "--model.cam.enabled for CAM over the pixel position). Writes the reconstruction as PNG and "
    "prints its PSNR.",
    SignalConfig(), checkpoint_every=1000, final_eval=True)

register_preset(
    "video", "Fit a video (file or frame folder) with an (x, y, t) coordinate MLP (SIREN by "
    "default; --model.resfields.layers 1 2 3 for ResFields, --model.cam.enabled for CAM over "
    "time). Writes the reconstruction as PNG frames and MP4 and prints its PSNR.",
    SignalConfig(), checkpoint_every=1000, final_eval=True)
