"""Per-image appearance embeddings: shapes, lookup, and the fixed vector for unseen cameras."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nerfkit.nn.appearance import AppearanceEmbedding


def test_shapes_and_rows():
    emb = AppearanceEmbedding(7, 5, rngs=nnx.Rngs(0))
    table = np.asarray(emb.embedding.embedding[...])
    assert table.shape == (7, 5)
    ids = jnp.array([[0, 3, 6], [2, 2, 1]])
    out = emb(ids)
    assert out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, table[np.asarray(ids)])
    assert emb(jnp.int32(4)).shape == (5,)
    # N(0, 1) initialisation (nerfacto / NeRF-W): rows are not all alike
    big = np.asarray(AppearanceEmbedding(500, 32, rngs=nnx.Rngs(1)).embedding.embedding[...])
    assert abs(big.std() - 1.0) < 0.05 and abs(big.mean()) < 0.05


def test_unseen_cameras_get_the_mean_by_default():
    emb = AppearanceEmbedding(4, 3, rngs=nnx.Rngs(2))
    table = np.asarray(emb.embedding.embedding[...], np.float64)
    out = np.asarray(emb(jnp.array([-1, 4, 100, 1])))
    for row in out[:3]:
        np.testing.assert_allclose(row, table.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[3], table[1].astype(np.float32))
    # the mean is not any training row, and not zero
    assert np.min(np.abs(table - table.mean(axis=0)).sum(-1)) > 1e-3
    assert np.abs(out[0]).sum() > 1e-3


def test_zeros_mode():
    emb = AppearanceEmbedding(4, 3, unseen="zeros", rngs=nnx.Rngs(3))
    np.testing.assert_array_equal(emb(jnp.array([-1, 7])), np.zeros((2, 3)))
    np.testing.assert_array_equal(emb.unseen_vector(), np.zeros(3))


def test_gradients_reach_only_the_seen_rows():
    emb = AppearanceEmbedding(5, 2, rngs=nnx.Rngs(4))

    def loss(m, ids):
        return jnp.sum(m(ids) ** 2)

    g = nnx.grad(loss)(emb, jnp.array([2, 2, -1]))
    grad_table = np.asarray(g.embedding.embedding[...])
    table = np.asarray(emb.embedding.embedding[...])
    expected = np.zeros_like(table)
    expected[2] = 2 * 2 * table[2]  # two rays of image 2; the unseen ray trains nothing
    np.testing.assert_allclose(grad_table, expected, rtol=1e-6)


def test_jit_and_bad_arguments():
    emb = AppearanceEmbedding(3, 4, rngs=nnx.Rngs(5))
    out = nnx.jit(lambda m, i: m(i))(emb, jnp.array([0, -1]))
    assert out.shape == (2, 4)
    with pytest.raises(TypeError):
        emb(jnp.array([0.5]))
    with pytest.raises(ValueError):
        AppearanceEmbedding(3, 4, unseen="random", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        AppearanceEmbedding(0, 4, rngs=nnx.Rngs(0))
