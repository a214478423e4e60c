"""A new radiance-field family in one file, trained by nerfkit's engine, then used by the CLI.

``TinyNeRF`` is a small NeRF (Mildenhall et al., "NeRF: Representing Scenes as Neural Radiance
Fields for View Synthesis", ECCV 2020; official code github.com/bmild/nerf) reduced to one
network: stratified samples along each ray, positional encoding, an MLP giving density and a
view-dependent colour, and alpha compositing. Everything comes from :mod:`nerfkit.core` (samplers,
encodings, volume rendering) and :mod:`nerfkit.nn` (the MLP); the family registers itself with
:func:`nerfkit.models.register_family`, so the trainer, ``nerfkit render``, ``nerfkit eval`` and
``nerfkit export`` handle it without a change anywhere else::

    python examples/custom_family.py --max-steps 300 --output runs/tiny-nerf   # default scene
    nerfkit render runs/tiny-nerf --split test
    nerfkit eval runs/tiny-nerf
    nerfkit export cameras runs/tiny-nerf cameras.json
    nerfkit export mesh runs/tiny-nerf mesh.ply --resolution 128 --threshold 5

The run's ``config.json`` records this file's path (``family_source``), and the CLI imports it
again when it loads the run (keep the file where it is, or move the runs with it).
"""

import argparse
import dataclasses
from pathlib import Path
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
from flax import nnx

import nerfkit
from nerfkit import core
from nerfkit.models import Model, ModelConfig, SceneInfo, register_family, register_preset
from nerfkit.nn import MLP


@register_family
@dataclasses.dataclass(frozen=True)
class TinyNeRFConfig(ModelConfig):
    """A one-network NeRF: ``depth`` x ``width`` ReLU MLP on ``pos_freqs`` octaves of the position
    (scaled to the scene box), a colour layer on ``dir_freqs`` octaves of the view direction,
    ``num_samples`` stratified samples per ray."""

    family: ClassVar[str] = "tiny-nerf"

    width: int = 64
    depth: int = 3
    pos_freqs: int = 6
    dir_freqs: int = 2
    num_samples: int = 32
    lr_init: float = 5e-3
    lr_final: float = 5e-4
    default_steps: int = 2000

    def build(self, scene: SceneInfo, rngs: nnx.Rngs) -> "TinyNeRF":
        return TinyNeRF(self, scene, rngs=rngs)


class TinyNeRF(Model):
    """Rays ``[B]`` -> ``rgb [B, 3]``, ``depth [B, 1]``, ``acc [B, 1]`` (and ``weights [B, S]``)."""

    def __init__(self, cfg: TinyNeRFConfig, scene: SceneInfo, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.lo, self.hi = (tuple(map(float, v)) for v in scene.aabb)
        pos_dim = core.positional_encoding_dim(3, cfg.pos_freqs)
        dir_dim = core.positional_encoding_dim(3, cfg.dir_freqs)
        self.trunk = MLP(pos_dim, cfg.width, cfg.depth, None, rngs=rngs)
        self.sigma = nnx.Linear(cfg.width, 1, rngs=rngs)
        self.color = MLP(cfg.width + dir_dim, cfg.width // 2, 1, 3, out_activation="sigmoid",
                         rngs=rngs)

    def radiance(self, x: jax.Array, d: jax.Array, time: Optional[jax.Array] = None
                 ) -> tuple[jax.Array, jax.Array]:
        """Density ``[...]`` (1 / world unit) and colour ``[..., 3]`` at points ``x [..., 3]`` seen
        along unit directions ``d`` (broadcastable to ``x``)."""
        lo, hi = jnp.asarray(self.lo), jnp.asarray(self.hi)
        h = self.trunk(core.positional_encoding(2.0 * (x - lo) / (hi - lo) - 1.0,
                                                self.cfg.pos_freqs))
        d_enc = jnp.broadcast_to(core.positional_encoding(d, self.cfg.dir_freqs),
                                 (*h.shape[:-1], core.positional_encoding_dim(3, self.cfg.dir_freqs)))
        rgb = self.color(jnp.concatenate([h, d_enc], -1))
        return jax.nn.softplus(self.sigma(h)[..., 0] - 1.0), rgb

    def density(self, x: jax.Array, time: Optional[jax.Array] = None) -> jax.Array:
        """Density ``[...]`` at ``x [..., 3]`` (used by ``nerfkit export mesh``)."""
        return self.radiance(x, jnp.zeros_like(x))[0]

    def render_rays(self, rays: core.Rays, key: Optional[jax.Array], *, train: bool,
                    background: jax.Array) -> dict[str, jax.Array]:
        t = core.stratified_samples(key, rays.near, rays.far, self.cfg.num_samples,
                                    randomized=train and key is not None)  # [B, S+1] edges
        x = rays.points_at(core.interval_midpoints(t))                     # [B, S, 3]
        sigma, rgb = self.radiance(x, rays.viewdirs[..., None, :])
        return core.volume_render(sigma, rgb, t, rays.directions, background)


register_preset("tiny-nerf", "A one-network NeRF in one file (examples/custom_family.py).",
                TinyNeRFConfig(), checkpoint_every=500)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset folder (default: the generated scene)")
    ap.add_argument("--downscale", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--output", type=Path, default=Path("runs/tiny-nerf"))
    args = ap.parse_args()
    _, preset = nerfkit.presets()["tiny-nerf"]
    cfg = dataclasses.replace(
        preset, model=dataclasses.replace(preset.model, batch_size=args.batch_size),
        data=args.data, downscale=args.downscale, max_steps=args.max_steps, output=args.output,
        overwrite=True)
    summary = nerfkit.train(cfg)
    print(f"trained {summary['step']} steps -> {summary['run_dir']}"
          + (f"; test PSNR {summary['test_psnr']:.2f} dB" if "test_psnr" in summary else ""))


if __name__ == "__main__":
    main()
