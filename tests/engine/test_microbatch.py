"""Gradient micro-batches (``ModelConfig.microbatch``): a step over ``n`` micro-batches makes the
same update as one step over the whole batch, for a per-ray mean loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from nerfkit.data import load_scene
from nerfkit.data.raysource import PixelSource
from nerfkit.engine.trainer import make_train_step
from nerfkit.engine.run import TrainState
from nerfkit.models.base import Model


class Tiny(Model):
    """A deterministic two-layer field of the ray (no sampling noise), so both steps see the
    same function of the same batch."""

    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(6, 8, rngs=rngs)
        self.b = nnx.Linear(8, 3, rngs=rngs)

    def render_rays(self, rays, key, *, train, background):
        h = jnp.tanh(self.a(jnp.concatenate([rays.origins, rays.viewdirs], -1)))
        rgb = jax.nn.sigmoid(self.b(h))
        acc = jnp.ones_like(rays.near)
        return {"rgb": rgb, "depth": rays.near, "acc": acc}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from nerfkit.data.synthetic import generate_default_scene
    data = generate_default_scene(tmp_path_factory.mktemp("mb") / "scene", num_train=3,
                                  num_test=1, resolution=16)
    return PixelSource(load_scene(data, "train"), "random")


@pytest.mark.parametrize("microbatch", [8, 32])
def test_microbatch_step_equals_whole_batch_step(source, microbatch):
    graphdef, params, buffers = nnx.split(Tiny(nnx.Rngs(0)), nnx.Param, ...)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    results = []
    for mb in (None, microbatch):
        step = make_train_step(graphdef, tx, source, 64, False, microbatch=mb)
        state = TrainState(params, buffers, tx.init(params), jnp.zeros((), jnp.int32))
        state = jax.tree_util.tree_map(jnp.array, state)  # fresh buffers: the step donates
        new, aux = step(state, source.data, jax.random.key(7), jnp.float32(0.1))
        results.append((new, aux))
    (a, aux_a), (b, aux_b) = results
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
    # The update is not trivially zero, and the reported loss/PSNR are the whole batch's.
    moved = [np.abs(np.asarray(x) - np.asarray(p)).max() for x, p in
             zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(params))]
    assert max(moved) > 1e-4
    np.testing.assert_allclose(float(aux_a["loss"]), float(aux_b["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(aux_a["psnr"]), float(aux_b["psnr"]), rtol=1e-5)


def test_microbatch_must_divide_the_batch(source):
    graphdef, _, _ = nnx.split(Tiny(nnx.Rngs(0)), nnx.Param, ...)
    with pytest.raises(ValueError, match="divide"):
        make_train_step(graphdef, optax.sgd(0.1), source, 64, False, microbatch=48)
