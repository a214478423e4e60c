"""Vanilla NeRF: Mildenhall et al., "NeRF: Representing Scenes as Neural Radiance Fields for View
Synthesis", ECCV 2020.

An 8x256 ReLU MLP with the encoded position fed again into its fifth layer, a density head and a
128-wide view-dependent colour branch (paper Fig. 7); positional encoding with L=10 for positions
and L=4 for directions (eq. 4); a coarse network with 64 stratified samples and a fine network
with 128 more samples drawn from the coarse weights (sec. 5.2), both trained with the MSE of
their renders; Adam with the learning rate decaying exponentially from 5e-4 to 5e-5.

Dynamic scenes (D-NeRF format, per-frame ``time``): the field also reads the encoded time, as the
"T-NeRF" baseline of Pumarola et al., "D-NeRF", CVPR 2021 (radiance as a function of position,
direction and time). The trunk takes ResField layers over time (Mihajlovic et al., ICLR 2024,
who evaluate exactly this T-NeRF) and CAM (Lee et al., ICLR 2024) on every trunk layer, as the
official code (github.com/maincold2/CAM): over time for dynamic scenes (5 cells, no
normalisation: nerfacc ``TNeRFRadianceField``); for static scenes over the view direction
(10 x 3 cells over azimuth/elevation, each ray normalised over its samples: mip-NeRF ``affine``;
the density then depends on the view direction, as there) or a tri-plane over position (planes
multiplied, no normalisation: nerfacc ``coord_dim == 3``). See :mod:`nerfkit.nn.modulation`.
With ``batching="frames"`` (dynamic scenes) training batches are frame-stratified
(:class:`~nerfkit.data.raysource.FrameSource`): the ResField weights are formed once per frame.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from nerfkit.core import encodings, render, samplers
from nerfkit.core.render import RenderOutput
from nerfkit.core.rays import FrameBatching, Rays, frame_rows
from nerfkit.errors import ConfigError
from nerfkit.models.registry import register_family, register_preset
from nerfkit.models.base import (Model, ModelConfig, SceneInfo, adam_with_grid_lr,
                                 check_batching)
from nerfkit.nn.mlp import MLP
from nerfkit.nn.modulation import CAMConfig, ResFieldsConfig, cam_coordinate


@register_family
@dataclasses.dataclass(frozen=True)
class NeRFConfig(ModelConfig):
    """Vanilla NeRF (every size configurable).

    Attributes:
      depth, width: MLP trunk layers and width (8, 256); skip: layer that re-reads the input (4).
      view_width: width of the view-dependent colour branch (128).
      pos_freqs, dir_freqs: positional-encoding frequencies L for x (10) and d (4).
      coarse_samples, fine_samples: 64 stratified + 128 importance samples per ray.
      density_noise: std of noise added to raw densities while training (paper: 1 for real scenes).
      lindisp: sample linearly in inverse depth (used for unbounded LLFF scenes without NDC).
      time_freqs: positional-encoding octaves of the time input (dynamic scenes only).
      resfields: ResField layers of the trunk (dynamic scenes).
      cam: coordinate-aware modulation of the trunk (``auto``: time for dynamic scenes, view
        direction for static ones; ``triplane``: position).
      batching: ``pixels`` (random rays of all images) or ``frames`` (dynamic scenes:
        ``frames_per_batch`` frames per step, ``batch_size // frames_per_batch`` rays each).
    """

    family: ClassVar[str] = "nerf"

    depth: int = 8
    width: int = 256
    skip: int = 4
    view_width: int = 128
    pos_freqs: int = 10
    dir_freqs: int = 4
    coarse_samples: int = 64
    fine_samples: int = 128
    density_noise: float = 0.0
    lindisp: bool = False
    time_freqs: int = 6
    resfields: ResFieldsConfig = ResFieldsConfig()
    cam: CAMConfig = CAMConfig()
    batching: str = "pixels"
    frames_per_batch: int = 8
    lr_init: float = 5e-4
    lr_final: float = 5e-5
    batch_size: int = 1024
    default_steps: int = 200_000

    def __post_init__(self):
        check_batching(self.batching, self.frames_per_batch)

    def build(self, scene: SceneInfo, rngs: nnx.Rngs) -> "NeRF":
        return NeRF(self, scene, rngs=rngs)

    def data_source(self, scene, train_cfg):
        return FrameBatching(self.frames_per_batch) if self.batching == "frames" else None

    def optimizer(self):
        if self.cam.enabled:
            kind = "time" if self.cam.coord == "auto" else self.cam.coord  # auto: 1x either way
            return adam_with_grid_lr(self.lr_init, self.cam.grid_lr(kind, self.lr_init))
        return super().optimizer()

    def flops_per_ray(self) -> float:
        """2 x multiply-adds of the MLPs per ray (biases, activations, encodings and compositing
        not counted): the coarse field at ``coarse_samples`` points, the fine one at
        ``coarse_samples + fine_samples`` (303.8 M for the defaults, as in the R2L paper)."""
        pos = encodings.positional_encoding_dim(3, self.pos_freqs, True)
        dirs = encodings.positional_encoding_dim(3, self.dir_freqs, True)
        w = self.width
        trunk = pos * w + sum((w + (pos if i == self.skip else 0)) * w
                              for i in range(1, self.depth))
        point = trunk + w + w * w + (w + dirs) * self.view_width + self.view_width * 3
        points = self.coarse_samples + (self.coarse_samples + self.fine_samples
                                         if self.fine_samples > 0 else 0)
        return 2.0 * point * points


class NeRFField(nnx.Module):
    """The NeRF MLP: ``(x [B, S, 3], d [B, 1, 3], time [B, 1]) -> (density [B, S], rgb [B, S, 3])``
    (``time`` only for dynamic scenes; any leading shape ``[...]`` works when no per-ray
    modulation is on; ``x [K, P, S, 3]``, ``d [K, P, 1, 3]`` with ``time [K, 1]``: one time per
    frame row)."""

    def __init__(self, cfg: NeRFConfig, scene: SceneInfo, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.timed = bool(scene.has_time)
        self.aabb = tuple(map(tuple, scene.aabb))
        pos_dim = encodings.positional_encoding_dim(3, cfg.pos_freqs, True)
        if self.timed:
            pos_dim += encodings.positional_encoding_dim(1, cfg.time_freqs, True)
        dir_dim = encodings.positional_encoding_dim(3, cfg.dir_freqs, True)
        skips = (cfg.skip,) if 0 < cfg.skip < cfg.depth else ()
        if cfg.resfields.enabled and not self.timed:
            raise ConfigError("--model.resfields.layers: ResFields need a dynamic scene (per-frame "
                              "time); this scene is static")
        cam = None
        if cfg.cam.enabled:
            cam = cfg.cam.coord if cfg.cam.coord != "auto" else (
                "time" if self.timed else "viewdir")
            if cam == "xy" or (cam == "time" and not self.timed):
                raise ConfigError(f"--model.cam.coord {cam!r} does not apply to this radiance "
                                  "field (use time for dynamic scenes, viewdir or triplane)")
        self.cam_kind = cam
        self.trunk = MLP(pos_dim, cfg.width, cfg.depth, None, skips=skips, rngs=rngs,
                         resfields=cfg.resfields,
                         num_frames=cfg.resfields.frames or scene.num_frames,
                         cam=None if cam is None else cfg.cam.resolved(cam))
        self.density = nnx.Linear(cfg.width, 1, rngs=rngs,
                                  kernel_init=nnx.initializers.glorot_uniform())
        self.feature = nnx.Linear(cfg.width, cfg.width, rngs=rngs,
                                  kernel_init=nnx.initializers.glorot_uniform())
        self.color = MLP(cfg.width + dir_dim, cfg.view_width, 1, 3, out_activation="sigmoid",
                         rngs=rngs)

    def _trunk(self, x: jax.Array, time: Optional[jax.Array],
               d: Optional[jax.Array] = None) -> jax.Array:
        feats = encodings.positional_encoding(x, self.cfg.pos_freqs, True)
        if self.timed:
            if time is None:
                time = jnp.zeros((*x.shape[:-1], 1), x.dtype)
            t_enc = encodings.positional_encoding(time, self.cfg.time_freqs, True)
            while t_enc.ndim < feats.ndim:  # one time per ray / frame row
                t_enc = t_enc[..., None, :]
            t_enc = jnp.broadcast_to(t_enc, (*feats.shape[:-1], t_enc.shape[-1]))
            feats = jnp.concatenate([feats, t_enc], axis=-1)
        c = None
        if self.cam_kind == "time":
            c = cam_coordinate("time", time=time)
        elif self.cam_kind == "triplane":
            lo, hi = jnp.asarray(self.aabb[0]), jnp.asarray(self.aabb[1])
            c = cam_coordinate("triplane", position=2.0 * (x - lo) / (hi - lo) - 1.0)
        elif self.cam_kind == "viewdir":
            if d is None:
                raise ConfigError("with view-direction CAM the density depends on the view "
                                  "direction (as in the official code); query radiance(x, d)")
            c = cam_coordinate("viewdir", viewdir=d)
        return self.trunk(feats, time if self.timed else None, c)

    def raw_density(self, x: jax.Array, time: Optional[jax.Array] = None) -> jax.Array:
        """Pre-activation density ``[...]`` at ``x [..., 3]`` (``time`` as in ``__call__``)."""
        return self.density(self._trunk(x, time))[..., 0]

    def __call__(self, x: jax.Array, d: jax.Array, time: Optional[jax.Array] = None
                 ) -> tuple[jax.Array, jax.Array]:
        h = self._trunk(x, time, d)
        raw_density = self.density(h)[..., 0]
        feat = self.feature(h)
        d_enc = encodings.positional_encoding(d, self.cfg.dir_freqs, True)
        d_enc = jnp.broadcast_to(d_enc, (*feat.shape[:-1], d_enc.shape[-1]))
        rgb = self.color(jnp.concatenate([feat, d_enc], axis=-1))
        return raw_density, rgb


class NeRF(Model):
    """Coarse-to-fine NeRF."""

    def __init__(self, cfg: NeRFConfig, scene: SceneInfo, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.coarse = NeRFField(cfg, scene, rngs=rngs)
        self.fine = NeRFField(cfg, scene, rngs=rngs) if cfg.fine_samples > 0 else None

    def _query(self, field: NeRFField, rays: Rays, t_edges: jax.Array, key, train: bool,
               background: jax.Array, rows: Optional[jax.Array] = None) -> dict[str, jax.Array]:
        t_mid = render.interval_midpoints(t_edges)
        x = rays.points_at(t_mid)
        d, time = rays.viewdirs[..., None, :], rays.time
        if rows is not None:  # frame rows [K, P]: one time per row for the per-frame paths
            k = rows.shape[0]
            x, d = x.reshape(k, -1, *x.shape[1:]), d.reshape(k, -1, *d.shape[1:])
            time = rows
        raw_density, rgb = field(x, d, time)
        if rows is not None:
            raw_density = raw_density.reshape(-1, *raw_density.shape[2:])
            rgb = rgb.reshape(-1, *rgb.shape[2:])
        if train and self.cfg.density_noise > 0 and key is not None:
            raw_density = raw_density + self.cfg.density_noise * jax.random.normal(
                key, raw_density.shape)
        density = jax.nn.relu(raw_density)
        out = render.volume_render(density, rgb, t_edges, rays.directions, background)
        out["density"] = density
        out["t_mid"] = t_mid
        return out

    def density(self, x: jax.Array, time: Optional[jax.Array] = None) -> jax.Array:
        field = self.fine if self.fine is not None else self.coarse
        return jax.nn.relu(field.raw_density(x, _point_time(x, time)))

    def radiance(self, x, d, time=None):
        field = self.fine if self.fine is not None else self.coarse
        t = _point_time(x, time)
        if field.cam_kind == "viewdir":  # each point its own one-sample ray (per-ray norm)
            raw, rgb = field(x[..., None, :], d[..., None, :],
                             None if t is None else t[..., None, :])
            return jax.nn.relu(raw[..., 0]), rgb[..., 0, :]
        raw, rgb = field(x, d, t)
        return jax.nn.relu(raw), rgb

    def render_rays(self, rays: Rays, key: Optional[jax.Array], *, train: bool,
                    background: jax.Array) -> RenderOutput:
        rows = None
        if frame_rows(rays):  # [K, P]: sample and composite flat, query the field per frame
            rows = rays.time[:, 0]
            shape = rays.batch_shape
            rays = rays.reshape(-1)
            background = background.reshape(-1, background.shape[-1])
            out = self._render_flat(rays, key, train, background, rows)
            return {k: v.reshape(*shape, *v.shape[1:]) for k, v in out.items()}
        return self._render_flat(rays, key, train, background, None)

    def _render_flat(self, rays: Rays, key, train: bool, background: jax.Array,
                     rows: Optional[jax.Array]) -> RenderOutput:
        cfg = self.cfg
        keys = jax.random.split(key, 4) if key is not None else [None] * 4
        randomized = train and key is not None
        t_coarse = samplers.stratified_samples(keys[0], rays.near, rays.far, cfg.coarse_samples,
                                               randomized=randomized, lindisp=cfg.lindisp)
        coarse = self._query(self.coarse, rays, t_coarse, keys[1], train, background, rows)
        samples = ("weights", "t_mid", "density")  # per-sample outputs, e.g. for distillation
        if self.fine is None:
            return {k: coarse[k] for k in ("rgb", "depth", "acc", *samples)}
        t_new = samplers.sample_pdf(keys[2], t_coarse, coarse["weights"], cfg.fine_samples,
                                    randomized=randomized)
        t_fine = samplers.merge_samples(t_coarse, t_new)
        fine = self._query(self.fine, rays, t_fine, keys[3], train, background, rows)
        return {**{k: fine[k] for k in ("rgb", "depth", "acc", *samples)},
                "rgb_coarse": coarse["rgb"]}


def _point_time(x: jax.Array, time: Optional[jax.Array]) -> Optional[jax.Array]:
    """A per-point ``[..., 1]`` time for queries at points ``x [..., 3]`` (scalar broadcast)."""
    if time is None:
        return None
    time = jnp.asarray(time, x.dtype)
    return jnp.broadcast_to(time.reshape(time.shape + (1,) if time.shape[-1:] != (1,) else
                                         time.shape), (*x.shape[:-1], 1))


# No final evaluation by default: rendering all 200 lego test views with the full model takes
# most of an hour on a 2-core CPU. Run `nerfkit eval RUN` when wanted.
register_preset(
    "nerf", "Vanilla NeRF (Mildenhall et al. 2020): 8x256 MLP, 64 coarse + 128 fine samples.",
    NeRFConfig(), eval_every=0, checkpoint_every=1000, final_eval=False)

# A NeRF small enough for a 2-core CPU (6x128 trunk, 48 + 48 samples); the full NeRF sizes are
# flags away (--model.width 256 --model.depth 8 ...). No automatic final evaluation (the 20 lego
# test views at 200x200 take ~7 minutes on 2 cores); run `nerfkit eval RUN` for it, or pass
# --final-eval.
register_preset(
    "dnerf", "Dynamic radiance field (T-NeRF: NeRF with time as input) for D-NeRF-format scenes, "
    "CPU-sized; --model.resfields.layers 1 2 3 for ResFields, --model.cam.enabled for CAM over "
    "time.",
    NeRFConfig(depth=6, width=128, skip=3, view_width=64, coarse_samples=48, fine_samples=48,
               batch_size=1024, render_chunk=8192, default_steps=20_000),
    checkpoint_every=1000, final_eval=False)
