"""ResField layers, CAM grids and SIREN layers against independent NumPy/SciPy references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from nerfkit.models.base import adam_with_grid_lr, grid_labels
from nerfkit.nn.mlp import MLP
from nerfkit.nn.modulation import (CAMGrid, ResFieldLinear, ResFieldsConfig, cam_coordinate,
                                   direction_angles, frame_coefficients, interp_line,
                                   interp_plane, interp_triplane, resfield_linear)


def _np_coeffs(coeffs, t):
    """Reference linear interpolation of per-frame rows (frame k at t = k / (T - 1))."""
    T = coeffs.shape[0]
    out = []
    for ti in np.clip(np.asarray(t).reshape(-1), 0, 1):
        pos = ti * (T - 1)
        k = min(int(math.floor(pos)), T - 2)
        a = pos - k
        out.append((1 - a) * coeffs[k] + a * coeffs[k + 1])
    return np.stack(out)


def test_frame_coefficients_hit_frames_and_interpolate():
    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=(5, 3)).astype(np.float32)
    t_frames = np.arange(5, dtype=np.float32)[:, None] / 4
    np.testing.assert_allclose(frame_coefficients(jnp.asarray(coeffs), t_frames), coeffs,
                               atol=1e-6)
    mid = (t_frames[:-1] + t_frames[1:]) / 2
    np.testing.assert_allclose(frame_coefficients(jnp.asarray(coeffs), mid),
                               (coeffs[:-1] + coeffs[1:]) / 2, atol=1e-6)
    t = rng.uniform(-0.2, 1.2, size=(17, 1)).astype(np.float32)  # clamped outside [0, 1]
    np.testing.assert_allclose(frame_coefficients(jnp.asarray(coeffs), t), _np_coeffs(coeffs, t),
                               atol=1e-5)


def test_resfield_equals_base_layer_when_residual_is_zero():
    layer = ResFieldLinear(6, 4, num_frames=7, rank=3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (9, 6))
    t = jax.random.uniform(jax.random.key(2), (9, 1))
    ref = np.asarray(x) @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])
    np.testing.assert_allclose(layer(x, t), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_ray", [False, True])
def test_resfield_matches_explicit_time_varying_weight(per_ray):
    rng = np.random.default_rng(3)
    din, dout, R, T = 5, 4, 3, 6
    W = rng.normal(size=(din, dout)).astype(np.float32)
    b = rng.normal(size=dout).astype(np.float32)
    M = rng.normal(size=(R, din, dout)).astype(np.float32)
    V = rng.normal(size=(T, R)).astype(np.float32)
    if per_ray:  # x [B, S, in], one time per ray
        x = rng.normal(size=(3, 4, din)).astype(np.float32)
        t = rng.uniform(size=(3, 1)).astype(np.float32)
        v = _np_coeffs(V, t)
        ref = np.stack([x[i] @ (W + np.einsum("r,rio->io", v[i], M)) + b for i in range(3)])
    else:
        x = rng.normal(size=(8, din)).astype(np.float32)
        t = rng.uniform(size=(8, 1)).astype(np.float32)
        v = _np_coeffs(V, t)
        ref = np.stack([x[i] @ (W + np.einsum("r,rio->io", v[i], M)) + b for i in range(8)])
    out = resfield_linear(jnp.asarray(x), jnp.asarray(t), jnp.asarray(W), jnp.asarray(b),
                          jnp.asarray(M), jnp.asarray(V))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_interpolation_matches_scipy_linear():
    rng = np.random.default_rng(4)
    line = rng.normal(size=(9, 2)).astype(np.float32)
    u = rng.uniform(-1, 1, size=50).astype(np.float32)
    ref = np.stack([np.interp((u + 1) / 2 * 8, np.arange(9), line[:, c]) for c in range(2)], -1)
    np.testing.assert_allclose(interp_line(jnp.asarray(line), jnp.asarray(u)), ref, atol=1e-5)
    plane = rng.normal(size=(6, 8, 3)).astype(np.float32)  # [Nv, Nu, C]
    uv = rng.uniform(-1, 1, size=(40, 2)).astype(np.float32)
    coords = np.stack([(uv[:, 1] + 1) / 2 * 5, (uv[:, 0] + 1) / 2 * 7])
    ref = np.stack([ndimage.map_coordinates(plane[..., c], coords, order=1) for c in range(3)], -1)
    np.testing.assert_allclose(interp_plane(jnp.asarray(plane), jnp.asarray(uv)), ref, atol=1e-5)
    planes = rng.normal(size=(3, 5, 5, 2)).astype(np.float32)
    xyz = rng.uniform(-1, 1, size=(30, 3)).astype(np.float32)
    ref = sum(np.asarray(interp_plane(jnp.asarray(planes[k]), jnp.asarray(xyz[:, list(p)])))
              for k, p in enumerate(((0, 1), (0, 2), (1, 2))))
    np.testing.assert_allclose(interp_triplane(jnp.asarray(planes), jnp.asarray(xyz)), ref,
                               atol=1e-5)


def _np_layer_norm(h):
    mu = h.mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize("kind,dim", [("time", 1), ("xy", 2), ("viewdir", 2), ("triplane", 3)])
def test_cam_is_identity_modulation_at_init_and_shapes(kind, dim):
    grid = CAMGrid(kind, 8, 16)
    h = jax.random.normal(jax.random.key(0), (11, 16)) * 3 + 1
    c = jax.random.uniform(jax.random.key(1), (11, dim), minval=-1, maxval=1)
    out = grid(h, c)
    assert out.shape == (11, 16)
    np.testing.assert_allclose(out, _np_layer_norm(np.asarray(h)), rtol=1e-4, atol=1e-4)
    # One coordinate per ray, broadcast over its samples: h [B, S, C], c [B, D].
    h3 = jax.random.normal(jax.random.key(2), (4, 5, 16))
    out3 = grid(h3, c[:4])
    assert out3.shape == (4, 5, 16)
    np.testing.assert_allclose(out3, _np_layer_norm(np.asarray(h3)), rtol=1e-4, atol=1e-4)


def test_cam_coordinates():
    t = jnp.array([[0.0], [0.5], [1.0]])
    np.testing.assert_allclose(cam_coordinate("time", time=t), [[-1.0], [0.0], [1.0]])
    d = jnp.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]])
    ang = np.asarray(direction_angles(d))
    np.testing.assert_allclose(ang[:3], [[0, 0], [0.5, 0], [0, 1]], atol=1e-6)
    assert abs(abs(ang[3, 0]) - 1.0) < 1e-6
    with pytest.raises(Exception, match="needs a time"):
        cam_coordinate("time", xy=jnp.zeros((1, 2)))


def _cam_mlp(**kw):
    return MLP(3, 16, 3, 3, rngs=nnx.Rngs(0), cam="time", cam_resolution=4, **kw)


def test_gradients_reach_both_cam_grids_of_every_layer():
    mlp = _cam_mlp()
    x = jax.random.normal(jax.random.key(0), (32, 3))
    t = jax.random.uniform(jax.random.key(1), (32, 1))
    y = jax.random.normal(jax.random.key(2), (32, 3))
    graphdef, params = nnx.split(mlp, nnx.Param)

    def loss(p):
        m = nnx.merge(graphdef, p)
        return jnp.mean((m(x, None, 2 * t - 1) - y) ** 2)

    grads = nnx.State(jax.grad(loss)(params))
    for i in range(3):
        g = grads["cam"][i]
        assert float(jnp.abs(g["cam_gamma"][...]).sum()) > 0, f"no gradient to gamma of layer {i}"
        assert float(jnp.abs(g["cam_beta"][...]).sum()) > 0, f"no gradient to beta of layer {i}"


def test_grids_train_at_their_own_learning_rate():
    """Adam's first update is -lr * sign(g) per entry (up to eps): the grids move by the grid
    learning rate, the rest by the field's."""
    mlp = _cam_mlp()
    x = jax.random.normal(jax.random.key(0), (64, 3))
    t = jax.random.uniform(jax.random.key(1), (64, 1))
    graphdef, params = nnx.split(mlp, nnx.Param)
    labels = jax.tree_util.tree_leaves(grid_labels(params))
    assert labels.count("grid") == 6 and labels.count("field") == 8  # 3 layers x (gamma, beta)
    lr, grid_lr = 1e-3, 3e-2
    tx = adam_with_grid_lr(lr, grid_lr)
    opt = tx.init(params)
    grads = jax.grad(lambda p: jnp.mean(nnx.merge(graphdef, p)(x, None, 2 * t - 1) ** 2))(params)
    updates, _ = tx.update(grads, opt, params)
    for lab, u, g in zip(labels, jax.tree_util.tree_leaves(updates),
                         jax.tree_util.tree_leaves(grads)):
        nz = np.abs(np.asarray(g)) > 1e-6
        assert nz.any()
        expect = grid_lr if lab == "grid" else lr
        np.testing.assert_allclose(np.abs(np.asarray(u))[nz], expect, rtol=2e-2)


def test_siren_layers_follow_the_paper_initialisation_and_activation():
    mlp = MLP(2, 64, 3, 3, rngs=nnx.Rngs(0), activation="sine")
    w0 = 30.0
    k = [np.asarray(layer.kernel[...]) for layer in mlp.layers]
    assert np.abs(k[0]).max() <= 1 / 2 and np.abs(k[0]).max() > 0.9 / 2
    for w in k[1:]:
        bound = math.sqrt(6 / 64) / w0
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    x = np.random.default_rng(0).uniform(-1, 1, (10, 2)).astype(np.float32)
    h = x
    for layer in mlp.layers:
        h = np.sin(w0 * (h @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])))
    ref = h @ np.asarray(mlp.out.kernel[...]) + np.asarray(mlp.out.bias[...])
    np.testing.assert_allclose(mlp(jnp.asarray(x)), ref, rtol=1e-4, atol=1e-4)


def test_mlp_with_resfields_on_chosen_layers():
    cfg = ResFieldsConfig(layers=(1, 2), rank=4)
    mlp = MLP(3, 8, 3, 2, rngs=nnx.Rngs(0), resfields=cfg, num_frames=5)
    assert [type(layer).__name__ for layer in mlp.layers] == ["Linear", "ResFieldLinear",
                                                              "ResFieldLinear"]
    assert mlp.layers[1].basis.shape == (4, 8, 8) and mlp.layers[1].coeffs.shape == (5, 4)
    x = jnp.ones((6, 3))
    assert mlp(x, jnp.full((6, 1), 0.3)).shape == (6, 2)
    with pytest.raises(ValueError, match="time"):
        mlp(x)
