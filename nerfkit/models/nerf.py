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
who evaluate exactly this T-NeRF) and CAM (Lee et al., ICLR 2024): over time for dynamic scenes;
for static scenes over the view direction (the colour branch's hidden layer) or a tri-plane over
position (the trunk). See :mod:`nerfkit.nn.modulation`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from nerfkit.core import encodings, render, samplers
from nerfkit.core.render import RenderOutput
from nerfkit.core.rays import Rays
from nerfkit.errors import ConfigError
from nerfkit.models.registry import register_family, register_preset
from nerfkit.models.base import Model, ModelConfig, SceneInfo, adam_with_grid_lr
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
      cam: coordinate-aware modulation (``auto``: time for dynamic scenes, view direction for
        static ones; ``triplane`` modulates the trunk by position).
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
    lr_init: float = 5e-4
    lr_final: float = 5e-5
    batch_size: int = 1024
    default_steps: int = 200_000

    def build(self, scene: SceneInfo, rngs: nnx.Rngs) -> "NeRF":
        return NeRF(self, scene, rngs=rngs)

    def optimizer(self):
        if self.cam.enabled:
            return adam_with_grid_lr(self.lr_init, self.cam.lr)
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
    modulation is on)."""

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
        trunk_cam = cam if cam in ("time", "triplane") else None
        self.trunk = MLP(pos_dim, cfg.width, cfg.depth, None, skips=skips, rngs=rngs,
                         resfields=cfg.resfields,
                         num_frames=cfg.resfields.frames or scene.num_frames,
                         cam=trunk_cam, cam_resolution=cfg.cam.resolution)
        self.density = nnx.Linear(cfg.width, 1, rngs=rngs,
                                  kernel_init=nnx.initializers.glorot_uniform())
        self.feature = nnx.Linear(cfg.width, cfg.width, rngs=rngs,
                                  kernel_init=nnx.initializers.glorot_uniform())
        self.color = MLP(cfg.width + dir_dim, cfg.view_width, 1, 3, out_activation="sigmoid",
                         rngs=rngs, cam="viewdir" if cam == "viewdir" else None,
                         cam_resolution=cfg.cam.resolution)

    def _trunk(self, x: jax.Array, time: Optional[jax.Array]) -> jax.Array:
        feats = encodings.positional_encoding(x, self.cfg.pos_freqs, True)
        if self.timed:
            if time is None:
                time = jnp.zeros((*x.shape[:-1], 1), x.dtype)
            t_enc = encodings.positional_encoding(time, self.cfg.time_freqs, True)
            if t_enc.ndim < feats.ndim:  # one time per ray
                t_enc = t_enc[..., None, :]
            t_enc = jnp.broadcast_to(t_enc, (*feats.shape[:-1], t_enc.shape[-1]))
            feats = jnp.concatenate([feats, t_enc], axis=-1)
        c = None
        if self.cam_kind == "time":
            c = cam_coordinate("time", time=time)
        elif self.cam_kind == "triplane":
            lo, hi = jnp.asarray(self.aabb[0]), jnp.asarray(self.aabb[1])
            c = cam_coordinate("triplane", position=2.0 * (x - lo) / (hi - lo) - 1.0)
        return self.trunk(feats, time if self.timed else None, c)

    def raw_density(self, x: jax.Array, time: Optional[jax.Array] = None) -> jax.Array:
        """Pre-activation density ``[...]`` at ``x [..., 3]`` (``time`` as in ``__call__``)."""
        return self.density(self._trunk(x, time))[..., 0]

    def __call__(self, x: jax.Array, d: jax.Array, time: Optional[jax.Array] = None
                 ) -> tuple[jax.Array, jax.Array]:
        h = self._trunk(x, time)
        raw_density = self.density(h)[..., 0]
        feat = self.feature(h)
        d_enc = encodings.positional_encoding(d, self.cfg.dir_freqs, True)
        d_enc = jnp.broadcast_to(d_enc, (*feat.shape[:-1], d_enc.shape[-1]))
        c = None
        if self.cam_kind == "viewdir":
            per_ray = d.ndim == x.ndim and d.shape[-2] == 1 and x.shape[-2] != 1
            c = cam_coordinate("viewdir", viewdir=d[..., 0, :] if per_ray else d)
        rgb = self.color(jnp.concatenate([feat, d_enc], axis=-1), None, c)
        return raw_density, rgb


class NeRF(Model):
    """Coarse-to-fine NeRF."""

    def __init__(self, cfg: NeRFConfig, scene: SceneInfo, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.coarse = NeRFField(cfg, scene, rngs=rngs)
        self.fine = NeRFField(cfg, scene, rngs=rngs) if cfg.fine_samples > 0 else None

    def _query(self, field: NeRFField, rays: Rays, t_edges: jax.Array, key, train: bool,
               background: jax.Array) -> dict[str, jax.Array]:
        t_mid = render.interval_midpoints(t_edges)
        x = rays.points_at(t_mid)
        raw_density, rgb = field(x, rays.viewdirs[..., None, :], rays.time)
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
        raw, rgb = field(x, d, _point_time(x, time))
        return jax.nn.relu(raw), rgb

    def render_rays(self, rays: Rays, key: Optional[jax.Array], *, train: bool,
                    background: jax.Array) -> RenderOutput:
        cfg = self.cfg
        keys = jax.random.split(key, 4) if key is not None else [None] * 4
        randomized = train and key is not None
        t_coarse = samplers.stratified_samples(keys[0], rays.near, rays.far, cfg.coarse_samples,
                                               randomized=randomized, lindisp=cfg.lindisp)
        coarse = self._query(self.coarse, rays, t_coarse, keys[1], train, background)
        samples = ("weights", "t_mid", "density")  # per-sample outputs, e.g. for distillation
        if self.fine is None:
            return {k: coarse[k] for k in ("rgb", "depth", "acc", *samples)}
        t_new = samplers.sample_pdf(keys[2], t_coarse, coarse["weights"], cfg.fine_samples,
                                    randomized=randomized)
        t_fine = samplers.merge_samples(t_coarse, t_new)
        fine = self._query(self.fine, rays, t_fine, keys[3], train, background)
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
