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

Unbounded scenes (real captures, ``SceneInfo.unbounded``; ``scene`` overrides): the field, the
occupancy grid and the sampler work in mip-NeRF 360's contracted space (Barron et al., CVPR 2022,
eq. 10; :mod:`nerfkit.core.contraction`) with the L-inf norm that nerfstudio's nerfacto uses for
its hash grid (``SceneContraction(order=inf)`` in ``nerfstudio/field_components/spatial_distortions.py``):
the hash grid encodes ``contract(x)`` mapped from ``[-2, 2]^3`` to ``[0, 1]^3``, the occupancy grid
covers the same cube (:func:`~nerfkit.core.occupancy.update_contracted_occupancy`), and rays are
cut from ``near`` to ``far`` into Instant-NGP's cone steps (paper App. E.1; their length grows with
distance), and the ``S`` samples of a ray are spread evenly over all its occupied steps, as the
bounded path spreads them over its occupied length
(:func:`~nerfkit.core.occupancy.occupied_samples_contracted`). Per-image appearance embeddings
(NeRF-W, Martin-Brualla et al. 2021, Sec. 4.1; nerfacto's ``appearance_embedding``) join the colour
MLP's input, and mip-NeRF 360's distortion loss (eq. 15) on the samples' intervals in normalised
disparity ``s`` is an option. Bounded scenes (Blender, LLFF) take exactly the path above.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax import nnx

from nerfkit.core import contraction, encodings, hashgrid, losses, occupancy, render
from nerfkit.core.sharding import shard_batch
from nerfkit.core.rays import Rays
from nerfkit.core.activations import trunc_exp
from nerfkit.errors import ConfigError
from nerfkit.models.registry import register_family, register_preset
from nerfkit.models.base import Model, ModelConfig, SceneInfo
from nerfkit.nn.appearance import AppearanceEmbedding
from nerfkit.nn.hashgrid import HashEncoding
from nerfkit.nn.mlp import MLP


SCENE_MODES = ("auto", "bounded", "unbounded")
# Unbounded marching (benchmarks/ngp_unbounded_step.py, 4096-ray steps of the preset on the shared
# 2-core CPU): steps of 0.02 world units up to r = 0.64, then growing by 1/32 per step, so 270
# candidates reach far = 1000; with the packed field evaluations a step cost 1.07x the bounded
# one (cone 1/64, 493 candidates: 1.44x; Instant-NGP's 1/256 needs ~1600 candidates).
CONE_ANGLE = 1.0 / 32.0
DT_MIN = 0.02
APPEARANCE_DIM_UNBOUNDED = 16


#: Rows of S3IM's pseudo-images (the official default).
S3IM_PATCH_HEIGHT = 64


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
      num_samples: field evaluations per ray while training; eval_samples: while rendering;
        unbounded_eval_samples: while rendering an unbounded scene, whose occupied length spans
        the room (bonsai held-out views, the same 1415-step model: 22.80 / 23.39 / 23.49 / 23.51
        dB with 48 / 96 / 192 / 384; early termination keeps the cost to the samples in front).
      weight_decay: L2 weight decay of the MLP weights. backend: hash-encoding implementation:
        ``auto`` (the custom kernel that ``pip install`` compiles, when it loads; else pure JAX,
        with one warning), ``ffi`` (the kernel, an error without it), ``jax`` (optimised pure
        JAX), ``naive`` (reference). Same values; only the speed differs.
      s3im_weight: weight of the S3IM loss (Xie et al., ICCV 2023; 0 disables it, the ``ngp``
        preset uses the official 1). Its pseudo-patches are made of the rays the field renders.
      train_active_fraction: while training, only rays that cross an occupied cell go through
        the field, packed into ``train_active_fraction * batch_size`` slots (the others render
        the background with zero gradient; active rays beyond the slots are left out of the
        loss); 1 sends every ray through the field.
      scene: ``auto`` (unbounded when the data says so, ``SceneInfo.unbounded``), ``bounded`` or
        ``unbounded``.
      contraction_norm: ``linf`` (nerfacto's choice for hash grids: the contracted cube has no
        unused cells) or ``l2`` (the paper's ball).
      cone_angle, dt_min: unbounded marching, steps of ``clamp(cone_angle * r, dt_min, inf)`` world
        units at distance ``r``; max_candidates: candidate steps per ray (0: enough to reach
        ``far``, :func:`~nerfkit.core.occupancy.cone_step_count`). For unbounded scenes
        ``train_active_fraction`` is the share of the batch's ``B * num_samples`` sample slots
        the field evaluates while training (occupied steps, packed), and only the first rays
        that can fill it are marched (twice the budget's rays); ``march_steps`` is unused.
      appearance_dim: length of the per-training-image appearance vector fed to the colour MLP
        (0: none; ``None``: 16 for unbounded scenes, 0 for bounded ones). Rays without a camera
        index (held-out or novel views) use the mean vector.
      distortion_loss_weight: weight of mip-NeRF 360's distortion loss on the samples' intervals
        in normalised distance ``s`` (unbounded: nerfacto's piecewise spacing, linear in ``t`` up
        to 1, in disparity beyond; bounded: ``t`` normalised to ``[near, far]``; 0 disables it;
        the paper uses 0.01).
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
    unbounded_eval_samples: int = 192
    weight_decay: float = 1e-6
    backend: str = "auto"
    s3im_weight: float = 0.0
    train_active_fraction: float = 0.5
    scene: str = "auto"
    contraction_norm: str = "linf"
    cone_angle: float = CONE_ANGLE
    dt_min: float = DT_MIN
    max_candidates: int = 0
    appearance_dim: Annotated[Optional[int], tyro.conf.arg(metavar="INT")] = None
    distortion_loss_weight: float = 0.0
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

    def unbounded(self, scene: SceneInfo) -> bool:
        """Whether the model for ``scene`` contracts space (see ``scene``)."""
        if self.scene not in SCENE_MODES:
            raise ConfigError(f"ngp: scene must be one of {SCENE_MODES}, got {self.scene!r}")
        if self.scene == "auto":
            return bool(getattr(scene, "unbounded", False))
        return self.scene == "unbounded"

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
    """Instant-NGP radiance field with occupancy-grid sampling (bounded or contracted space)."""

    def __init__(self, cfg: NGPConfig, scene: SceneInfo, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.aabb = tuple(tuple(float(v) for v in row) for row in scene.aabb)  # static
        self.unbounded = cfg.unbounded(scene)
        self.encoding = HashEncoding(cfg.grid_config(), cfg.backend, rngs=rngs)
        self.density_mlp = MLP(cfg.grid_config().output_dim, cfg.hidden, 1, cfg.geo_features,
                               rngs=rngs, kernel_init=nnx.initializers.he_uniform())
        app_dim = cfg.appearance_dim
        if app_dim is None:
            app_dim = APPEARANCE_DIM_UNBOUNDED if self.unbounded else 0
        sh_dim = encodings.spherical_harmonics_dim(cfg.sh_degree)
        self.color_mlp = MLP(cfg.geo_features + sh_dim + app_dim, cfg.hidden, cfg.color_layers,
                             3, out_activation="sigmoid", rngs=rngs,
                             kernel_init=nnx.initializers.he_uniform())
        self.appearance = (AppearanceEmbedding(max(scene.num_images, 1), app_dim, rngs=rngs)
                           if app_dim > 0 else None)
        if self.unbounded:
            self.grid = nnx.Variable(occupancy.init_contracted_occupancy(cfg.occupancy_resolution))
            self.max_candidates = cfg.max_candidates or occupancy.cone_step_count(
                scene.near, scene.far, cfg.cone_angle, cfg.dt_min, 1e10)
        else:
            self.grid = nnx.Variable(occupancy.init_occupancy(cfg.occupancy_resolution,
                                                              np.asarray(scene.aabb, np.float32)))

    # -- field -------------------------------------------------------------------------------
    def _normalise(self, x: jax.Array) -> jax.Array:
        """World points ``[..., 3]`` -> hash-grid coordinates in ``[0, 1]^3``: the box, or the
        contracted cube ``[-2, 2]^3`` for unbounded scenes."""
        if self.unbounded:
            return (contraction.contract(x, self.cfg.contraction_norm) + 2.0) / 4.0
        lo, hi = jnp.asarray(self.aabb[0]), jnp.asarray(self.aabb[1])
        return (x - lo) / (hi - lo)

    def _geo(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.density_mlp(self.encoding(self._normalise(x)))
        return self._activate(h[..., 0]), h

    def _activate(self, raw: jax.Array) -> jax.Array:
        if self.cfg.density_activation == "softplus":
            return jax.nn.softplus(raw - 1.0)
        return trunc_exp(raw)

    def density(self, x: jax.Array, time: Optional[jax.Array] = None) -> jax.Array:
        return self._geo(x)[0]

    def field(self, x: jax.Array, d: jax.Array, appearance: Optional[jax.Array] = None
              ) -> tuple[jax.Array, jax.Array]:
        """``x [..., 3]``, unit ``d [..., 3]`` -> density ``[...]``, rgb ``[..., 3]``.

        ``appearance``: ``[..., A]`` appearance vectors (broadcast against ``x``'s batch) when the
        model has an embedding; ``None`` uses the unseen-camera (mean) vector.
        """
        sigma, h = self._geo(x)
        return sigma, self._color(h, d, appearance)

    def _color(self, h: jax.Array, d: jax.Array, appearance: Optional[jax.Array]) -> jax.Array:
        """Colour ``[..., 3]`` from density-MLP outputs ``h [..., F]`` and unit ``d``."""
        sh = encodings.spherical_harmonics(d, self.cfg.sh_degree)
        parts = [h, jnp.broadcast_to(sh, (*h.shape[:-1], sh.shape[-1]))]
        if self.appearance is not None:
            a = self.appearance.unseen_vector() if appearance is None else appearance
            parts.append(jnp.broadcast_to(a, (*h.shape[:-1], a.shape[-1])))
        return self.color_mlp(jnp.concatenate(parts, axis=-1))

    def radiance(self, x, d, time=None):
        return self.field(x, d)

    def _ray_appearance(self, rays: Rays) -> Optional[jax.Array]:
        """``[B, 1, A]`` appearance of each ray's training image (``Rays.camera_index``), or
        ``None`` (mean vector) when the rays carry no index or the model has no embedding."""
        ids = getattr(rays, "camera_index", None)
        if self.appearance is None or ids is None:
            return None
        return self.appearance(ids[..., 0])[..., None, :]

    # -- training hooks ----------------------------------------------------------------------
    def pre_step(self, step: jax.Array, key: jax.Array) -> None:
        cfg = self.cfg
        grid = self.grid.get_value()
        if self.unbounded:  # the grid stores the optical depth of one cone step
            density_fn = lambda z: jax.lax.stop_gradient(self._activate(
                self.density_mlp(self.encoding((shard_batch(z) + 2.0) / 4.0))[..., 0]))

            def update(_):
                return occupancy.update_contracted_occupancy(
                    grid, key, density_fn, step, cone_angle=cfg.cone_angle, dt_min=cfg.dt_min,
                    norm=cfg.contraction_norm, contracted_input=True,
                    threshold=cfg.occupancy_threshold, warmup_steps=cfg.occupancy_warmup)
        else:
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
        """Rays whose path through the box crosses at least one occupied candidate step (every
        ray in an unbounded scene: the background is part of the volume)."""
        if self.unbounded:
            return jnp.ones(rays.origins.shape[:-1], bool)
        return occupancy.occupied_length(rays, self.grid.get_value(), self.cfg.march_steps) > 0

    def _num_samples(self, train: bool) -> int:
        """Samples per ray: ``num_samples`` while training, else ``eval_samples`` (bounded) or
        ``unbounded_eval_samples``."""
        cfg = self.cfg
        if train:
            return cfg.num_samples
        return cfg.unbounded_eval_samples if self.unbounded else cfg.eval_samples

    def eval_samples(self, rays: Rays) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The ``eval_samples`` (``unbounded_eval_samples``) samples per ray that evaluation
        composites (stratum centres): ``t_mid [B, S]``, world-unit ``deltas [B, S]``,
        ``valid [B, S]``."""
        cfg = self.cfg
        if self.unbounded:
            t_mid, deltas_t, valid = occupancy.occupied_samples_contracted(
                rays, self.grid.get_value(), self._num_samples(False), cone_angle=cfg.cone_angle,
                dt_min=cfg.dt_min, max_candidates=self.max_candidates, key=None,
                norm=cfg.contraction_norm)
        else:
            t_mid, deltas_t, valid = occupancy.occupied_samples(
                None, rays, self.grid.get_value(), cfg.march_steps, self._num_samples(False))
        return t_mid, deltas_t * jnp.linalg.norm(rays.directions, axis=-1, keepdims=True), valid

    def eval_density(self, rays: Rays, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Density ``[B, K]`` at ``t [B, K]`` and the density MLP's outputs ``[B, K, F]`` (the
        colour MLP's geometry input)."""
        return self._geo(rays.points_at(t))

    def eval_color(self, rays: Rays, features: jax.Array) -> jax.Array:
        """Colour ``[P, 3]`` from density-MLP outputs ``features [P, F]`` along ``rays [P]``."""
        app = self._ray_appearance(rays)
        return self._color(features, rays.viewdirs, None if app is None else app[:, 0])

    def render_rays(self, rays: Rays, key: Optional[jax.Array], *, train: bool,
                    background: jax.Array) -> dict[str, jax.Array]:
        cfg = self.cfg
        n = self._num_samples(train)
        key = key if train else None
        if self.unbounded:
            if train and cfg.train_active_fraction < 1.0:
                return self._train_unbounded(rays, key, n, background)
            return self._render_unbounded(rays, key, n, background, train)
        if not train or cfg.train_active_fraction >= 1.0:
            return self._render(rays, key, n, background,
                                distortion=train and cfg.distortion_loss_weight > 0)
        # Training: rays that cross no occupied cell render the background whatever the
        # parameters are (zero gradient), so only up to ``train_active_fraction * B`` rays that
        # do are packed into a smaller fixed-size batch and sent through the field; active rays
        # beyond that are left out of the loss (``ray_mask``).
        b = rays.origins.shape[0]
        slots = max(1, round(b * cfg.train_active_fraction))
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
        out = self._render(sub, key, n, sub_bg, distortion=cfg.distortion_loss_weight > 0)
        full = {
            "rgb": background.at[src].set(out["rgb"], mode="drop"),
            "depth": rays.far.at[src].set(out["depth"], mode="drop"),
            "acc": jnp.zeros_like(rays.far).at[src].set(out["acc"], mode="drop"),
            "active_fraction": jnp.mean(active.astype(jnp.float32)),
            # Active rays beyond the slots were not rendered: leave them out of the loss.
            "ray_mask": (~(active & (pos >= slots)))[:, None].astype(jnp.float32),
            # The rays the field rendered (S3IM's pseudo-patches are made of these).
            "rendered_rays": take,
            "rendered_valid": (src < b)[:, None].astype(jnp.float32),
        }
        if "distortion" in out:  # per rendered ray; empty slots (src == b) are dropped
            full["distortion"] = jnp.zeros_like(rays.far[:, 0]).at[src].set(
                out["distortion"], mode="drop")
        return full

    def _render(self, rays: Rays, key: Optional[jax.Array], n: int,
                background: jax.Array, distortion: bool = False) -> dict[str, jax.Array]:
        cfg = self.cfg
        t_mid, deltas_t, valid = occupancy.occupied_samples(
            key, rays, self.grid.get_value(), cfg.march_steps, n)
        x = rays.points_at(t_mid)
        sigma, rgb = self.field(x, rays.viewdirs[..., None, :], self._ray_appearance(rays))
        sigma = jnp.where(valid, sigma, 0.0)
        deltas = deltas_t * jnp.linalg.norm(rays.directions, axis=-1, keepdims=True)
        weights, _, _ = render.weights_from_density(sigma, deltas)
        out = render.render_weights(weights, rgb, t_mid, background)
        out["weights"] = weights
        out["t_mid"] = t_mid
        if distortion:
            # Bounded scenes: s is t normalised to [near, far]; the samples' intervals (an equal
            # share of the occupied length each) do not overlap, whatever the gaps between them.
            span = rays.far - rays.near
            out["distortion"] = losses.distortion_loss_intervals(
                (t_mid - 0.5 * deltas_t - rays.near) / span,
                (t_mid + 0.5 * deltas_t - rays.near) / span, weights)
        return out

    def _train_unbounded(self, rays: Rays, key: Optional[jax.Array], n: int,
                         background: jax.Array) -> dict[str, jax.Array]:
        """Training on an unbounded scene: every ray crosses occupied space and the sample
        budget (``train_active_fraction * B * n``) fills from the first rays, so only the first
        ``min(B, 2 * budget / n)`` rays are marched (the budget's rays and as many again for
        those with fewer occupied steps); the rest render the background, out of the loss."""
        b = rays.origins.shape[0]
        budget = max(1, round(b * n * self.cfg.train_active_fraction))
        m = min(b, 2 * -(-budget // n))
        if m == b:
            return self._render_unbounded(rays, key, n, background, True, budget)
        sub, sub_bg = shard_batch((jax.tree_util.tree_map(lambda a: a[:m], rays),
                                   background[:m]))
        out = self._render_unbounded(sub, key, n, sub_bg, True, budget)
        rest = {"rgb": background[m:], "depth": rays.far[m:],
                "ray_mask": jnp.zeros((b - m, 1), jnp.float32)}
        full = {}
        for k, v in out.items():
            if k == "active_fraction":
                full[k] = v
            elif k in rest:
                full[k] = jnp.concatenate([v, rest[k]], axis=0)
            else:  # acc, weights, t_mid, s_starts, s_ends, distortion: zero if not marched
                full[k] = jnp.concatenate([v, jnp.zeros((b - m, *v.shape[1:]), v.dtype)], 0)
        full["rendered_rays"] = jnp.arange(m, dtype=jnp.int32)
        full["rendered_valid"] = out["ray_mask"]
        return full

    def _render_unbounded(self, rays: Rays, key: Optional[jax.Array], n: int,
                          background: jax.Array, train: bool,
                          budget: Optional[int] = None) -> dict[str, jax.Array]:
        """Cone-stepping through the contracted grid: ``n`` samples spread over all the ray's
        occupied steps, near to far (:func:`~nerfkit.core.occupancy.occupied_samples_contracted`);
        adds the intervals in ``s`` for the distortion loss.

        Training packs the batch's occupied steps (in ray order) into ``budget`` (default
        ``train_active_fraction * B * n``) field evaluations, so a step costs the field no more than
        the bounded path's packed rays; rays with steps beyond that budget are left out of the
        loss (``ray_mask``), as are the bounded path's surplus rays.
        """
        cfg = self.cfg
        t_mid, deltas_t, mask = occupancy.occupied_samples_contracted(
            rays, self.grid.get_value(), n, cone_angle=cfg.cone_angle, dt_min=cfg.dt_min,
            max_candidates=self.max_candidates, key=key, norm=cfg.contraction_norm)
        x = rays.points_at(t_mid)                                     # [B, n, 3]
        d = jnp.broadcast_to(rays.viewdirs[..., None, :], x.shape)
        app = self._ray_appearance(rays)
        app = None if app is None else jnp.broadcast_to(app, (*x.shape[:-1], app.shape[-1]))
        extra = {}
        if train and cfg.train_active_fraction < 1.0:
            total = mask.size
            budget = min(total, budget or max(1, round(total * cfg.train_active_fraction)))
            flat = mask.reshape(-1)
            pos = jnp.cumsum(flat) - 1
            kept = flat & (pos < budget)
            src = jnp.full((budget,), total, jnp.int32).at[jnp.where(kept, pos, budget)].set(
                jnp.arange(total, dtype=jnp.int32), mode="drop")
            take = jnp.minimum(src, total - 1)
            pick = lambda a: None if a is None else a.reshape(total, -1)[take]
            sig_p, rgb_p = self.field(pick(x), pick(d), pick(app))
            sigma = jnp.zeros((total,), sig_p.dtype).at[src].set(sig_p, mode="drop")
            rgb = jnp.zeros((total, 3), rgb_p.dtype).at[src].set(rgb_p, mode="drop")
            sigma, rgb = sigma.reshape(mask.shape), rgb.reshape(*mask.shape, 3)
            dropped = (flat & ~kept).reshape(mask.shape)
            extra = {"ray_mask": (~jnp.any(dropped, axis=-1))[:, None].astype(jnp.float32),
                     "active_fraction": jnp.mean(flat.astype(jnp.float32))}
        else:
            sigma, rgb = self.field(x, d, app)
        sigma = jnp.where(mask, sigma, 0.0)
        deltas = deltas_t * jnp.linalg.norm(rays.directions, axis=-1, keepdims=True)
        weights, _, _ = render.weights_from_density(sigma, deltas)
        out = render.render_weights(weights, rgb, t_mid, background)
        out.update(extra, weights=weights, t_mid=t_mid)
        if cfg.distortion_loss_weight > 0:
            # s: linear in t below 1, in disparity beyond (nerfacto's piecewise spacing).
            t0 = jnp.maximum(t_mid - 0.5 * deltas_t, rays.near)
            t1 = jnp.minimum(t_mid + 0.5 * deltas_t, rays.far)
            out["s_starts"] = contraction.t_to_s(t0, rays.near, rays.far, "piecewise")
            out["s_ends"] = contraction.t_to_s(t1, rays.near, rays.far, "piecewise")
            out["distortion"] = losses.distortion_loss_intervals(out["s_starts"], out["s_ends"],
                                                                 weights)
        return out

    def loss(self, outputs, batch, key=None):
        total, metrics = super().loss(outputs, batch, key)
        if self.cfg.s3im_weight > 0:
            pred, target = outputs["rgb"], batch.rgb
            idx = outputs.get("rendered_rays")
            if idx is not None and idx.shape[0] >= S3IM_PATCH_HEIGHT:
                # Pseudo-patches of the rendered rays only (the paper's batch): the packing
                # renders a third of the batch, and the rest (background, or left out) would
                # fill two thirds of every patch with exact matches. Empty slots match exactly.
                ok = outputs["rendered_valid"] > 0
                pred, target = jnp.where(ok, pred[idx], target[idx]), target[idx]
            elif "ray_mask" in outputs:  # rays left out of the loss (not rendered) match exactly
                pred = jnp.where(outputs["ray_mask"] > 0, pred, target)
            # Whole pseudo-image rows: the first multiple of 64 rays (the batch is shuffled);
            # a batch under 64 rays is one row group of its own height.
            n = pred.shape[0]
            height = S3IM_PATCH_HEIGHT if n >= S3IM_PATCH_HEIGHT else n
            n = n // height * height
            s = losses.s3im(key, pred[:n], target[:n], patch_height=height)
            total = total + self.cfg.s3im_weight * s
            metrics["s3im"] = s
        if self.cfg.distortion_loss_weight > 0 and "distortion" in outputs:  # [B], per ray
            dist = jnp.mean(outputs["distortion"])
            total = total + self.cfg.distortion_loss_weight * dist
            metrics["distortion"] = dist
        return total, metrics


# The paper's optimiser, a CPU-sized grid: a 2^17-entry table (not 2^19) and a 64^3 occupancy
# grid keep the per-step memory traffic (dense Adam over the table, marching) low on a 2-core
# machine; benchmarks/ngp.py measures it. Scale up by flags on a GPU. 6144-ray batches of which
# at most a third (2048 rays) go through the field: the same field cost per step as 4096 rays
# packed into half, but once the grid has emptied lego's batches fill those 2048 slots (~35% of
# rays cross occupied cells) instead of ~1,430 (benchmarks/results/ngp_issue19_s9.json: +0.3 dB
# at 2-5 minutes, +0.1 dB after 10). Unbounded scenes march only the rays the budget needs.
# S3IM at the official weight, 1: lego +0.35 dB after 10 minutes (32.25 against 31.90; two runs
# of an earlier version, 32.18 and 32.27), fern, bonsai (5 minutes) and the demo level or better
# (benchmarks/results/ngp_s3im_rendered_s12.json and the README's S3IM table).
register_preset(
    "ngp", "Instant-NGP (Mueller et al. 2022): hash grid + tiny MLPs + occupancy grid. The default.",
    NGPConfig(log2_table_size=17, max_resolution=1024, occupancy_resolution=64, march_steps=192,
              num_samples=48, eval_samples=48, batch_size=6144, train_active_fraction=1 / 3,
              s3im_weight=1.0),
    checkpoint_every=500, eval_every=0)
