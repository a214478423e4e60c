"""ResField layers, CAM grids and SIREN layers against independent NumPy/SciPy references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from nerfkit.engine.config import from_dict, model_config_from_dict, to_dict
from nerfkit.errors import ConfigError
from nerfkit.models.base import adam_with_grid_lr, grid_labels
from nerfkit.models.signal import SignalConfig
from nerfkit.nn.mlp import MLP
from nerfkit.nn.modulation import (CAMConfig, CAMGrid, CAMSpec, ResFieldLinear, ResFieldsConfig,
                                   cam_coordinate, cam_norm, direction_angles,
                                   frame_coefficients, interp_line, interp_line_dense,
                                   interp_plane, interp_plane_dense, interp_triplane,
                                   resfield_linear)


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


def test_resfield_official_initialisation_and_base_layer_when_residual_is_zero():
    """Both factors start at 0.01 * N(0, 1) (official ``vm`` layer); with the coefficients
    zeroed the layer is its base layer."""
    layer = ResFieldLinear(64, 48, num_frames=50, rank=10, rngs=nnx.Rngs(0))
    for p in (layer.basis[...], layer.coeffs[...]):
        p = np.asarray(p)
        assert abs(p.std() - 0.01) < 0.1 * 0.01 and abs(p.mean()) < 3 * 0.01 / math.sqrt(p.size)
    assert np.asarray(layer.basis[...]).shape == (10, 64, 48)
    assert np.asarray(layer.coeffs[...]).shape == (50, 10)
    layer.coeffs[...] = jnp.zeros_like(layer.coeffs[...])
    x = jax.random.normal(jax.random.key(1), (9, 64))
    t = jax.random.uniform(jax.random.key(2), (9, 1))
    ref = np.asarray(x) @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])
    np.testing.assert_allclose(layer(x, t), ref, rtol=1e-5, atol=1e-5)


def test_per_frame_and_per_sample_resfield_paths_agree():
    """Rows of K frames with P pixels each (t [K, 1], W(t) formed once per frame) give what the
    per-sample path gives with every pixel carrying its frame's time (t [K, P, 1])."""
    rng = np.random.default_rng(7)
    K, P, din, dout, R, T = 4, 6, 5, 7, 3, 9
    W = jnp.asarray(rng.normal(size=(din, dout)), jnp.float32)
    b = jnp.asarray(rng.normal(size=dout), jnp.float32)
    M = jnp.asarray(rng.normal(size=(R, din, dout)), jnp.float32)
    V = jnp.asarray(rng.normal(size=(T, R)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(K, P, din)), jnp.float32)
    t = jnp.asarray(rng.integers(0, T, size=(K, 1)) / (T - 1), jnp.float32)
    per_frame = resfield_linear(x, t, W, b, M, V)
    per_sample = resfield_linear(x, jnp.broadcast_to(t[:, None], (K, P, 1)), W, b, M, V)
    np.testing.assert_allclose(per_frame, per_sample, rtol=1e-4, atol=1e-4)
    # Two inner axes (frames x rays x samples) take the same per-frame weights.
    x4 = jnp.asarray(rng.normal(size=(K, P, 3, din)), jnp.float32)
    np.testing.assert_allclose(
        resfield_linear(x4, t, W, b, M, V),
        resfield_linear(x4, jnp.broadcast_to(t[:, None, None], (K, P, 3, 1)), W, b, M, V),
        rtol=1e-4, atol=1e-4)
    # And through a whole MLP with ResFields on layers 1 2 3 (the official video layout).
    mlp = MLP(3, 16, 4, 3, rngs=nnx.Rngs(1), activation="sine",
              resfields=ResFieldsConfig(layers=(1, 2, 3), rank=4), num_frames=T)
    xin = jnp.asarray(rng.uniform(-1, 1, size=(K, P, 3)), jnp.float32)
    np.testing.assert_allclose(mlp(xin, t), mlp(xin, jnp.broadcast_to(t[:, None], (K, P, 1))),
                               rtol=1e-4, atol=1e-4)


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
    looks = [np.asarray(interp_plane(jnp.asarray(planes[k]), jnp.asarray(xyz[:, list(p)])))
             for k, p in enumerate(((0, 1), (0, 2), (1, 2)))]
    np.testing.assert_allclose(interp_triplane(jnp.asarray(planes), jnp.asarray(xyz)),
                               sum(looks), atol=1e-5)
    np.testing.assert_allclose(interp_triplane(jnp.asarray(planes), jnp.asarray(xyz), "product"),
                               looks[0] * looks[1] * looks[2], atol=1e-5)
    # The dense (hat-weight) forms used for scalar grids: the same values, also clamped outside.
    u2 = rng.uniform(-1.3, 1.3, size=50).astype(np.float32)
    np.testing.assert_allclose(interp_line_dense(jnp.asarray(line), jnp.asarray(u2)),
                               interp_line(jnp.asarray(line), jnp.asarray(u2)), atol=1e-5)
    np.testing.assert_allclose(interp_line_dense(jnp.asarray(line), jnp.asarray(u)),
                               np.stack([np.interp((u + 1) / 2 * 8, np.arange(9), line[:, c])
                                         for c in range(2)], -1), atol=1e-5)
    np.testing.assert_allclose(interp_plane_dense(jnp.asarray(plane), jnp.asarray(uv)),
                               np.stack([ndimage.map_coordinates(plane[..., c], coords, order=1)
                                         for c in range(3)], -1), atol=1e-5)
    uv2 = rng.uniform(-1.3, 1.3, size=(40, 2)).astype(np.float32)
    np.testing.assert_allclose(interp_plane_dense(jnp.asarray(plane), jnp.asarray(uv2)),
                               interp_plane(jnp.asarray(plane), jnp.asarray(uv2)), atol=1e-5)
    np.testing.assert_allclose(
        interp_triplane(jnp.asarray(planes), jnp.asarray(xyz), "product", dense=True),
        looks[0] * looks[1] * looks[2], atol=1e-5)


def _np_layer_norm(h, eps=1e-5):
    mu = h.mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + eps)


def _np_ray_norm(h, eps=1e-6):
    """Each ray [S, C] over all its samples and channels (GroupNorm with one group)."""
    out = np.empty_like(h)
    for idx in np.ndindex(*h.shape[:-2]):
        r = h[idx].astype(np.float64)
        out[idx] = (r - r.mean()) / np.sqrt(r.var() + eps)
    return out


@pytest.mark.parametrize("mode", ["none", "layer", "ray"])
def test_norm_modes_match_numpy(mode):
    h = np.asarray(jax.random.normal(jax.random.key(0), (3, 5, 7, 8))) * 2.5 + 0.7
    ref = {"none": h, "layer": _np_layer_norm(h), "ray": _np_ray_norm(h)}[mode]
    np.testing.assert_allclose(cam_norm(jnp.asarray(h), mode), ref, rtol=1e-4, atol=1e-4)
    if mode == "ray":
        with pytest.raises(ValueError, match="samples"):
            cam_norm(jnp.ones((4, 8)), "ray")


@pytest.mark.parametrize("kind,dim,res", [("time", 1, (5,)), ("xy", 2, (32, 32)),
                                          ("viewdir", 2, (10, 3)), ("triplane", 3, (8, 8))])
@pytest.mark.parametrize("per_channel", [False, True])
def test_cam_is_identity_at_init_and_parameter_count(kind, dim, res, per_channel):
    C = 16
    grid = CAMGrid(CAMSpec(kind, res, "none", per_channel), C)
    h = jax.random.normal(jax.random.key(0), (11, C)) * 3 + 1
    c = jax.random.uniform(jax.random.key(1), (11, dim), minval=-1, maxval=1)
    np.testing.assert_allclose(grid(h, c), h, rtol=1e-6, atol=1e-6)
    # One coordinate per ray, broadcast over its samples: h [B, S, C], c [B, D].
    h3 = jax.random.normal(jax.random.key(2), (4, 5, C))
    np.testing.assert_allclose(grid(h3, c[:4]), h3, rtol=1e-6, atol=1e-6)
    # Parameters: gamma and beta, each prod(cells) (x3 planes) x (1 or C channels).
    cells = math.prod(res) * (3 if kind == "triplane" else 1)
    n = sum(np.asarray(p[...]).size for p in (grid.cam_gamma, grid.cam_beta))
    assert n == 2 * cells * (C if per_channel else 1)
    # With layer norm it is the parameter-free normalisation at init.
    g = CAMGrid(CAMSpec(kind, res, "layer", per_channel), C)
    np.testing.assert_allclose(g(h, c), _np_layer_norm(np.asarray(h)), rtol=1e-4, atol=1e-4)


def test_scalar_cam_grids_of_an_mlp_count_as_the_formula_says():
    """The official image network: FFN 512 -> 3 x 256 -> 3 with 32 x 32 scalar grids on its 3
    hidden layers adds 3 * 2 * 32 * 32 = 6144 parameters."""
    spec = CAMConfig(enabled=True).resolved("xy")
    assert spec.resolution == (32, 32) and spec.norm == "layer" and not spec.per_channel
    plain = MLP(512, 256, 3, 3, rngs=nnx.Rngs(0))
    cam = MLP(512, 256, 3, 3, rngs=nnx.Rngs(0), cam=spec)
    count = lambda m: sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(m, nnx.Param)))
    assert count(plain) == 512 * 256 + 256 + 2 * (256 * 256 + 256) + 256 * 3 + 3
    assert count(cam) - count(plain) == 3 * 2 * 32 * 32
    per = MLP(512, 256, 3, 3, rngs=nnx.Rngs(0),
              cam=CAMConfig(enabled=True, per_channel=True).resolved("xy"))
    assert count(per) - count(plain) == 3 * 2 * 32 * 32 * 256


def test_official_per_task_cam_defaults():
    cfg = CAMConfig(enabled=True)
    assert cfg.resolved("time") == CAMSpec("time", (5,), "none", False, "product", 1.0)
    assert cfg.resolved("viewdir").resolution == (10, 3) and cfg.resolved("viewdir").norm == "ray"
    assert cfg.resolved("triplane").norm == "none"
    assert cfg.grid_lr("xy", 1e-3) == pytest.approx(1e-2)    # image: 10x the network's lr
    assert cfg.grid_lr("time", 5e-4) == pytest.approx(5e-4)  # T-NeRF: one learning rate
    assert CAMConfig(lr=0.3).grid_lr("xy", 1e-3) == 0.3
    assert CAMConfig(resolution=7).resolved("viewdir").resolution == (7, 7)


def test_normalisation_before_sine_is_refused_with_a_clear_message():
    for norm in ("layer", "ray"):
        with pytest.raises(ConfigError, match=r"--model.cam.norm .*sine.*SIREN"):
            SignalConfig(activation="sine", cam=CAMConfig(enabled=True, norm=norm))
        with pytest.raises(ConfigError, match="sine"):
            MLP(2, 8, 2, 3, rngs=nnx.Rngs(0), activation="sine",
                cam=CAMSpec("xy", (4, 4), norm))
    # auto resolves to no normalisation before a sine; ReLU keeps the image default (layer).
    assert CAMConfig(enabled=True).resolved("xy", sine=True).norm == "none"
    SignalConfig(activation="sine", cam=CAMConfig(enabled=True)).build(
        _image_info(), nnx.Rngs(0))
    SignalConfig(activation="relu", cam=CAMConfig(enabled=True, norm="layer"))


def _image_info():
    from nerfkit.models.base import SceneInfo
    return SceneInfo(aabb=((-1.0,) * 3, (1.0,) * 3), near=0.0, far=1.0)


def test_cam_configs_saved_before_norm_existed_keep_their_meaning():
    """An older run's config (per-channel grids, always layer-normalised, summed tri-planes)
    still loads, with the meaning its checkpoint was trained under; new dumps round-trip."""
    old = {"enabled": True, "coord": "auto", "resolution": 32, "lr": 0.01}
    cfg = from_dict(CAMConfig, old)
    assert cfg.per_channel and cfg.norm == "layer" and cfg.triplane == "sum"
    assert cfg.resolution == 32 and cfg.lr == 0.01
    assert from_dict(CAMConfig, {"enabled": True}) == CAMConfig(enabled=True)
    new = SignalConfig(activation="relu", encoding="fourier", cam=CAMConfig(enabled=True))
    assert model_config_from_dict(to_dict(new)) == new
    old_signal = {"family": "signal", "activation": "relu", "width": 32, "depth": 3,
                  "resfields": {"layers": [], "rank": 10, "frames": 0}, "cam": old}
    loaded = model_config_from_dict(old_signal)
    assert loaded.cam.per_channel and loaded.encoding == "positional"


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
