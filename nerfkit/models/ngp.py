"""Hash-grid NeRF with an occupancy grid: Müller et al., "Instant Neural Graphics Primitives with
a Multiresolution Hash Encoding", SIGGRAPH 2022 (Sec. 5.4, "Neural radiance and density fields").

Field (paper Sec. 5.4): the multiresolution hash encoding of the position (normalised into the
scene box) feeds a density MLP (one hidden layer of 64 neurons) with 16 outputs; the first output,
through a truncated exponential, is the density. The 16 outputs and the spherical-harmonics
encoding (degree 4: 16 coefficients) of the view direction feed a colour MLP (two hidden layers of
64) with a sigmoid output.

Sampling: an occupancy grid over the box, updated every ``occupancy_every`` steps from the field's
density by an exponential moving average (paper App. E.2), marks where the volume may be non-empty.
Instead of marching with a variable number of steps (which would give dynamic shapes under jit),
each ray takes ``num_samples`` stratified samples *of its occupied length*: the ray is cut into
``march_steps`` candidate steps inside the box, the occupied ones are concatenated, and the samples
are spread evenly over that concatenated length (each sample stands for an equal share ``L_occ/S``
of it, its ``delta``). Empty space costs no field evaluations, the shapes stay static, and as the
grid empties the samples concentrate on the surfaces. Densities of samples in unoccupied cells are
zeroed, so an empty grid renders the background exactly.

Training follows the paper: Adam (beta1 0.9, beta2 0.99, eps 1e-15), learning rate 1e-2 with
decay, L2 weight decay 1e-6 on the MLP weights only, random background colours for RGBA scenes.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nerfkit.core import encodings, hashgrid, occupancy, render
from nerfkit.core.sharding import shard_batch
from nerfkit.core.rays import Rays
from nerfkit.core.activations import trunc_exp
from nerfkit.models.registry import register_family, register_preset
from nerfkit.models.base import Model, ModelConfig, SceneInfo
from nerfkit.nn.hashgrid import HashEncoding
from nerfkit.nn.mlp import MLP


@register_family
@dataclasses.dataclass(frozen=True)
class NGPConfig(ModelConfig):
    """Instant-NGP radiance field (every size configurable).

    Attributes:
      levels, features_per_level, log2_table_size, base_resolution, max_resolution: the hash grid
        (paper: 16, 2, 19, 16, 2048 x scene scale).
      hidden, geo_features, color_layers, sh_degree: MLP widths (64), density-MLP outputs (16),
        hidden layers of the colour MLP (2), SH bands of the view direction (4 -> 16 coefficients).
      density_activation: ``trunc_exp`` (paper) or ``softplus``.
      occupancy_resolution: cells per axis of the occupancy grid; occupancy_every: steps between
        updates; occupancy_threshold: density below which a cell is empty;
        occupancy_warmup: steps during which every cell is re-evaluated at each update.
      march_steps: candidate steps per ray through the box (occupancy tests, cheap).
      num_samples: field evaluations per ray while training; eval_samples: while rendering.
      weight_decay: L2 weight decay of the MLP weights. backend: hash-encoding implementation
        (``jax`` optimised, ``naive`` reference, ``ffi`` custom kernel when built).
      s3im_weight: weight of the S3IM loss (0 disables it).
      train_active_fraction: while training, only rays that cross an occupied cell go through
        the field, packed into ``train_active_fraction * batch_size`` slots (the others render
        the background with zero gradient); 1 sends every ray through the field.
    """

    family: ClassVar[str] = "ngp"

    levels: int = 16
    features_per_level: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    hidden: int = 64
    geo_features: int = 16
    color_layers: int = 2
    sh_degree: int = 4
    density_activation: str = "trunc_exp"
    occupancy_resolution: int = 128
    occupancy_every: int = 16
    occupancy_threshold: float = 0.01
    occupancy_warmup: int = 256
    march_steps: int = 512
    num_samples: int = 48
    eval_samples: int = 96
    weight_decay: float = 1e-6
    backend: str = "jax"
    s3im_weight: float = 0.0
    train_active_fraction: float = 0.5
    lr_init: float = 1e-2
    lr_final: float = 5e-4
    lr_warmup: float = 0.0
    batch_size: int = 4096
    background: str = "random"
    render_chunk: int = 8192
    default_steps: int = 20_000

    def grid_config(self) -> hashgrid.HashGridConfig:
        return hashgrid.HashGridConfig(self.levels, self.features_per_level, self.log2_table_size,
                                       self.base_resolution, self.max_resolution)

    def build(self, scene: SceneInfo, rngs: nnx.Rngs) -> "NGP":
        return NGP(self, scene, rngs=rngs)

    def optimizer(self) -> optax.GradientTransformation:
        def make(learning_rate):
            def mlp_weights(params):
                return jax.tree_util.tree_map_with_path(
                    lambda path, _: "kernel" in jax.tree_util.keystr(path), params)
            return optax.chain(
                optax.add_decayed_weights(self.weight_decay, mask=mlp_weights),
                optax.scale_by_adam(b1=0.9, b2=0.99, eps=1e-15),
                optax.scale_by_learning_rate(learning_rate))
        return optax.inject_hyperparams(make)(learning_rate=self.lr_init)


class NGP(Model):
    """Instant-NGP radiance field with occupancy-grid sampling."""

    def __init__(self, cfg: NGPConfig, scene: SceneInfo, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.aabb = tuple(tuple(float(v) for v in row) for row in scene.aabb)  # static
        self.encoding = HashEncoding(cfg.grid_config(), cfg.backend, rngs=rngs)
        self.density_mlp = MLP(cfg.grid_config().output_dim, cfg.hidden, 1, cfg.geo_features,
                               rngs=rngs, kernel_init=nnx.initializers.he_uniform())
        sh_dim = encodings.spherical_harmonics_dim(cfg.sh_degree)
        self.color_mlp = MLP(cfg.geo_features + sh_dim, cfg.hidden, cfg.color_layers, 3,
                             out_activation="sigmoid", rngs=rngs,
                             kernel_init=nnx.initializers.he_uniform())
        self.grid = nnx.Variable(occupancy.init_occupancy(cfg.occupancy_resolution,
                                                          np.asarray(scene.aabb, np.float32)))

    # -- field -------------------------------------------------------------------------------
    def _normalise(self, x: jax.Array) -> jax.Array:
        lo, hi = jnp.asarray(self.aabb[0]), jnp.asarray(self.aabb[1])
        return (x - lo) / (hi - lo)

    def _geo(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.density_mlp(self.encoding(self._normalise(x)))
        raw = h[..., 0]
        if self.cfg.density_activation == "softplus":
            sigma = jax.nn.softplus(raw - 1.0)
        else:
            sigma = trunc_exp(raw)
        return sigma, h

    def density(self, x: jax.Array, time: Optional[jax.Array] = None) -> jax.Array:
        return self._geo(x)[0]

    def field(self, x: jax.Array, d: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x [..., 3]``, unit ``d [..., 3]`` -> density ``[...]``, rgb ``[..., 3]``."""
        sigma, h = self._geo(x)
        sh = encodings.spherical_harmonics(d, self.cfg.sh_degree)
        sh = jnp.broadcast_to(sh, (*h.shape[:-1], sh.shape[-1]))
        rgb = self.color_mlp(jnp.concatenate([h, sh], axis=-1))
        return sigma, rgb

    def radiance(self, x, d, time=None):
        return self.field(x, d)

    # -- training hooks ----------------------------------------------------------------------
    def pre_step(self, step: jax.Array, key: jax.Array) -> None:
        cfg = self.cfg
        grid = self.grid.get_value()
        density_fn = lambda x: jax.lax.stop_gradient(self.density(shard_batch(x)))

        diag = float(np.linalg.norm(np.subtract(self.aabb[1], self.aabb[0])))

        def update(_):
            return occupancy.update_occupancy(
                grid, key, density_fn, step, step_size=diag / cfg.march_steps,
                threshold=cfg.occupancy_threshold, warmup_steps=cfg.occupancy_warmup)

        self.grid.set_value(jax.lax.cond(step % cfg.occupancy_every == 0, update,
                                       lambda _: grid, None))

    # -- rendering -----------------------------------------------------------------------------
    def active_rays(self, rays: Rays) -> jax.Array:
        """Rays whose path through the box crosses at least one occupied candidate step."""
        return occupancy.occupied_length(rays, self.grid.get_value(), self.cfg.march_steps) > 0

    def render_rays(self, rays: Rays, key: Optional[jax.Array], *, train: bool,
                    background: jax.Array) -> dict[str, jax.Array]:
        cfg = self.cfg
        n = cfg.num_samples if train else cfg.eval_samples
        key = key if train else None
        if not train or cfg.train_active_fraction >= 1.0:
            return self._render(rays, key, n, background)
        # Training: rays that cross no occupied cell render the background whatever the
        # parameters are (zero gradient), so only up to ``train_active_fraction * B`` rays that
        # do are packed into a smaller fixed-size batch and sent through the field; active rays
        # beyond that are left out of the loss (``ray_mask``).
        b = rays.origins.shape[0]
        slots = max(1, int(b * cfg.train_active_fraction))
        active = occupancy.occupied_length(rays, self.grid.get_value(), cfg.march_steps) > 0
        pos = jnp.cumsum(active) - 1
        dest = jnp.where(active & (pos < slots), pos, slots)
        src = jnp.full((slots,), b, jnp.int32).at[dest].set(jnp.arange(b, dtype=jnp.int32),
                                                            mode="drop")
        take = jnp.minimum(src, b - 1)
        # The packed rays are split across devices again (the packing itself is global, so
        # the result does not depend on the number of devices).
        sub, sub_bg = shard_batch((jax.tree_util.tree_map(lambda a: a[take], rays),
                                   background[take]))
        out = self._render(sub, key, n, sub_bg)
        full = {
            "rgb": background.at[src].set(out["rgb"], mode="drop"),
            "depth": rays.far.at[src].set(out["depth"], mode="drop"),
            "acc": jnp.zeros_like(rays.far).at[src].set(out["acc"], mode="drop"),
            "active_fraction": jnp.mean(active.astype(jnp.float32)),
            # Active rays beyond the slots were not rendered: leave them out of the loss.
            "ray_mask": (~(active & (pos >= slots)))[:, None].astype(jnp.float32),
        }
        return full

    def _render(self, rays: Rays, key: Optional[jax.Array], n: int,
                background: jax.Array) -> dict[str, jax.Array]:
        cfg = self.cfg
        t_mid, deltas_t, valid = occupancy.occupied_samples(
            key, rays, self.grid.get_value(), cfg.march_steps, n)
        x = rays.points_at(t_mid)
        sigma, rgb = self.field(x, rays.viewdirs[..., None, :])
        sigma = jnp.where(valid, sigma, 0.0)
        deltas = deltas_t * jnp.linalg.norm(rays.directions, axis=-1, keepdims=True)
        weights, _, _ = render.weights_from_density(sigma, deltas)
        out = render.render_weights(weights, rgb, t_mid, background)
        out["weights"] = weights
        out["t_mid"] = t_mid
        return out

    def loss(self, outputs, batch, key=None):
        total, metrics = super().loss(outputs, batch, key)
        if self.cfg.s3im_weight > 0:
            from nerfkit.core import losses
            s = losses.s3im(key, outputs["rgb"], batch.rgb)
            total = total + self.cfg.s3im_weight * s
            metrics["s3im"] = s
        return total, metrics


# The paper's optimiser, a CPU-sized grid: a 2^17-entry table (not 2^19) and a 64^3 occupancy
# grid keep the per-step memory traffic (dense Adam over the table, marching) low on a 2-core
# machine; benchmarks/ngp.py measures it. Scale up by flags on a GPU.
register_preset(
    "ngp", "Instant-NGP (Mueller et al. 2022): hash grid + tiny MLPs + occupancy grid. The default.",
    NGPConfig(log2_table_size=17, max_resolution=1024, occupancy_resolution=64, march_steps=192,
              num_samples=48, eval_samples=48),
    checkpoint_every=500, eval_every=0)
