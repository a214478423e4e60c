"""A radiance field fitted with a plain optax loop on nerfkit's core functions, no engine.

The model is the smallest NeRF (Mildenhall et al., ECCV 2020; official code
github.com/bmild/nerf): stratified samples along each ray, positional encoding of the sample
points, a ReLU MLP written as a list of ``(W, b)`` arrays (a plain pytree, no Flax), density and
colour per sample, alpha compositing onto the scene's background. Only :mod:`nerfkit.core`
(rays, samplers, encodings, volume rendering, loss and metric) is used, plus
:func:`nerfkit.data.load_scene` to read the images and cameras::

    python examples/optax_loop.py                    # the generated default scene, 32x32 images
    python examples/optax_loop.py --data ../shared/datasets/nerf_synthetic/lego --downscale 8

It prints the training PSNR as it goes and the PSNR of the first test view at the end.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nerfkit import core
from nerfkit.data import load_scene

POS_FREQS, DIR_FREQS = 6, 2


def init_mlp(key: jax.Array, sizes: list[int]) -> list[tuple[jax.Array, jax.Array]]:
    """Glorot-uniform weights ``[in, out]`` and zero biases for layer widths ``sizes``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.nn.initializers.glorot_uniform()(k, (a, b)), jnp.zeros(b))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def field(params, x: jax.Array, d: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Density ``[..., S]`` and colour ``[..., S, 3]`` at points ``x [..., S, 3]`` seen along unit
    directions ``d [..., 1, 3]``: ``params["trunk"]`` on the encoded position, ``params["color"]``
    on the trunk features and the encoded direction."""
    h = core.positional_encoding(x, POS_FREQS)
    for w, b in params["trunk"]:
        h = jax.nn.relu(h @ w + b)
    sigma = jax.nn.softplus(h[..., 0] - 1.0)
    d_enc = jnp.broadcast_to(core.positional_encoding(d, DIR_FREQS),
                             (*h.shape[:-1], core.positional_encoding_dim(3, DIR_FREQS)))
    (w1, b1), (w2, b2) = params["color"]
    rgb = jax.nn.sigmoid(jax.nn.relu(jnp.concatenate([h, d_enc], -1) @ w1 + b1) @ w2 + b2)
    return sigma, rgb


def render(params, rays: core.Rays, key, num_samples: int, background: jax.Array) -> jax.Array:
    """``rgb [B, 3]`` of rays ``[B]`` (``key=None``: evenly spaced samples)."""
    t = core.stratified_samples(key, rays.near, rays.far, num_samples, randomized=key is not None)
    x = rays.points_at(core.interval_midpoints(t))
    sigma, rgb = field(params, x, rays.viewdirs[..., None, :])
    return core.volume_render(sigma, rgb, t, rays.directions, background)["rgb"]


def scene_rays(scene) -> tuple[core.Rays, np.ndarray]:
    """Every pixel's ray ``[N * H * W]`` and its target colour ``[N * H * W, 3]``."""
    rays = [core.image_rays(scene.cameras, i, scene.near, scene.far) for i in range(len(scene))]
    rays = jax.tree_util.tree_map(lambda *r: jnp.stack(r).reshape(-1, r[0].shape[-1]), *rays)
    return rays, scene.composited().reshape(-1, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset folder (default: the generated scene)")
    ap.add_argument("--downscale", type=int, default=4)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--width", type=int, default=64)
    args = ap.parse_args()

    train, test = (load_scene(args.data, s, args.downscale) for s in ("train", "test"))
    rays, target = scene_rays(train)
    bg = jnp.asarray(train.background)
    key = jax.random.key(0)
    k_trunk, k_color, key = jax.random.split(key, 3)
    pos_dim = core.positional_encoding_dim(3, POS_FREQS)
    params = {"trunk": init_mlp(k_trunk, [pos_dim, args.width, args.width, args.width]),
              "color": init_mlp(k_color, [args.width + core.positional_encoding_dim(3, DIR_FREQS),
                                          args.width // 2, 3])}
    schedule = optax.exponential_decay(5e-3, args.steps, 0.1)
    tx = optax.adam(schedule)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, key):
        k_batch, k_sample = jax.random.split(key)
        idx = jax.random.randint(k_batch, (args.batch_size,), 0, target.shape[0])
        batch = jax.tree_util.tree_map(lambda r: r[idx], rays)

        def loss_fn(p):
            return core.mse(render(p, batch, k_sample, args.samples, bg), jnp.asarray(target)[idx])

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for i in range(1, args.steps + 1):
        key, sub = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, sub)
        if i % max(args.steps // 10, 1) == 0 or i == args.steps:
            print(f"step {i:5d}  loss {float(loss):.5f}  train PSNR {float(core.psnr(loss)):.2f} dB")

    view = core.image_rays(test.cameras, 0, test.near, test.far)  # batch [H, W]
    pred = jax.jit(lambda p, r: render(p, r, None, args.samples, bg))(params, view)
    test_mse = core.mse(pred, jnp.asarray(test.composited()[0]))
    print(f"test view {test.names[0]}: PSNR {float(core.psnr(test_mse)):.2f} dB")


if __name__ == "__main__":
    main()
