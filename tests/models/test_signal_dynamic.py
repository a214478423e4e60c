"""Coordinate MLPs on images/videos and the time-conditioned NeRF, with ResFields and CAM."""

from __future__ import annotations

import dataclasses
import json
import warnings

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nerfkit import cli
from nerfkit.fileio import ffmpeg_subprocess
from nerfkit.core.rays import make_rays
from nerfkit.engine.config import model_config_from_dict, to_dict
from nerfkit.errors import ConfigError
from nerfkit.models.base import SceneInfo
from nerfkit.models.nerf import NeRFConfig
from nerfkit.models.signal import SignalConfig
from nerfkit.nn.modulation import CAMConfig, ResFieldsConfig

DYN = SceneInfo(aabb=((-1.5,) * 3, (1.5,) * 3), near=2.0, far=6.0, has_time=True, num_frames=4)
STATIC = dataclasses.replace(DYN, has_time=False, num_frames=0)
TINY = NeRFConfig(depth=3, width=16, skip=0, view_width=8, pos_freqs=2, dir_freqs=1,
                  time_freqs=2, coarse_samples=4, fine_samples=0)


def _rays(n=5, time=True):
    k1, k2 = jax.random.split(jax.random.key(0))
    d = jax.random.normal(k1, (n, 3)).at[:, 2].set(-1.0)
    t = jax.random.uniform(k2, (n, 1)) if time else None
    return make_rays(jnp.zeros((n, 3)) + jnp.array([0.0, 0.0, 4.0]), d, 2.0, 6.0, t)


def _grad_leaves(model, loss_fn):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest)))(params)
    return {jax.tree_util.keystr(path): g for path, g in
            jax.tree_util.tree_flatten_with_path(grads)[0]}


def test_dynamic_nerf_per_ray_time_equals_per_sample_time():
    """One time per ray (per-ray ResField weights, per-ray CAM lookups) gives the same field as
    that time repeated for every sample (the per-sample code paths)."""
    cfg = dataclasses.replace(TINY, resfields=ResFieldsConfig(layers=(0, 2), rank=3),
                              cam=CAMConfig(enabled=True))
    model = cfg.build(DYN, nnx.Rngs(0))
    field = model.coarse
    for layer in field.trunk.layers:  # non-zero residuals so the time path matters
        if hasattr(layer, "coeffs"):
            layer.coeffs[...] = jax.random.normal(jax.random.key(1), layer.coeffs.shape)
    x = jax.random.normal(jax.random.key(2), (5, 4, 3))
    d = jax.random.normal(jax.random.key(3), (5, 1, 3))
    t = jax.random.uniform(jax.random.key(4), (5, 1))
    s1, c1 = field(x, d, t)
    s2, c2 = field(x, jnp.broadcast_to(d, x.shape), jnp.broadcast_to(t[:, None], (5, 4, 1)))
    np.testing.assert_allclose(s1, s2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c1, c2, rtol=1e-4, atol=1e-4)
    out = model.render_rays(_rays(), None, train=False, background=jnp.ones((5, 3)))
    assert out["rgb"].shape == (5, 3) and out["depth"].shape == (5, 1)


def test_dynamic_nerf_gradients_reach_resfields_and_cam_grids():
    cfg = dataclasses.replace(TINY, resfields=ResFieldsConfig(layers=(1,), rank=2),
                              cam=CAMConfig(enabled=True, resolution=4))
    model = cfg.build(DYN, nnx.Rngs(0))
    model.coarse.density.bias[...] = jnp.ones((1,))  # a visible volume, whatever the seed
    rays = _rays(8)
    loss = lambda m: jnp.mean(m.render_rays(
        rays, None, train=False, background=jnp.ones((8, 3)))["rgb"] ** 2)
    grads = _grad_leaves(model, loss)
    # Official initialisation: both ResField factors are non-zero, so both get gradients from
    # the first step.
    for name in ("coeffs", "basis", "cam_gamma", "cam_beta"):
        hits = [g for k, g in grads.items() if name in k]
        assert hits and all(float(jnp.abs(g).sum()) > 0 for g in hits), name
    # dL/dM_r is proportional to v_r: with every coefficient zero the basis gets nothing.
    model.coarse.trunk.layers[1].coeffs[...] = jnp.zeros((4, 2))
    grads = _grad_leaves(model, loss)
    assert all(float(jnp.abs(g).sum()) == 0 for k, g in grads.items() if "basis" in k)


@pytest.mark.parametrize("coord,combine", [("viewdir", "product"), ("triplane", "product"),
                                           ("triplane", "sum")])
def test_static_nerf_cam(coord, combine):
    cfg = dataclasses.replace(TINY, cam=CAMConfig(enabled=True, coord=coord, resolution=4,
                                                  triplane=combine))
    model = cfg.build(STATIC, nnx.Rngs(0))
    model.coarse.density.bias[...] = jnp.ones((1,))
    assert model.coarse.cam_kind == coord and model.coarse.trunk.cam is not None  # the trunk
    rays = _rays(6, time=False)
    out = model.render_rays(rays, None, train=False, background=jnp.ones((6, 3)))
    assert out["rgb"].shape == (6, 3)
    grads = _grad_leaves(model, lambda m: jnp.mean(m.render_rays(
        rays, None, train=False, background=jnp.ones((6, 3)))["rgb"] ** 2))
    assert any("cam_gamma" in k and float(jnp.abs(g).sum()) > 0 for k, g in grads.items())
    beta_moves = any("cam_beta" in k and float(jnp.abs(g).sum()) > 0 for k, g in grads.items())
    # Official tri-plane CAM multiplies the planes' lookups and starts beta's planes at 0: the
    # product of zeros has zero gradient, so beta never moves there (kept, and documented).
    assert beta_moves == (coord != "triplane" or combine == "sum")
    sigma, rgb = model.radiance(jnp.zeros((7, 3)), jnp.array([[0.0, 0.0, 1.0]] * 7))
    assert sigma.shape == (7,) and rgb.shape == (7, 3)
    if coord == "viewdir":  # density depends on the view direction there
        with pytest.raises(ConfigError, match="view direction"):
            model.density(jnp.zeros((7, 3)))


def test_modulation_options_that_do_not_apply_are_clear_errors():
    with pytest.raises(ConfigError, match="static"):
        dataclasses.replace(TINY, resfields=ResFieldsConfig(layers=(1,))).build(
            STATIC, nnx.Rngs(0))
    with pytest.raises(ConfigError, match="no time"):
        SignalConfig(cam=CAMConfig(enabled=True, coord="time")).build(STATIC, nnx.Rngs(0))
    with pytest.raises(ConfigError, match="hidden layers"):
        SignalConfig(resfields=ResFieldsConfig(layers=(9,))).build(DYN, nnx.Rngs(0))
    with pytest.raises(ConfigError):
        CAMConfig(coord="nope")


def test_nested_modulation_config_round_trips_through_json():
    cfg = SignalConfig(activation="relu", resfields=ResFieldsConfig(layers=(1, 2), rank=4),
                       cam=CAMConfig(enabled=True, resolution=8, lr=0.02))
    back = model_config_from_dict(json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg


@pytest.mark.parametrize("variant", [[], ["--model.activation", "relu", "--model.cam.enabled"],
                                     ["--model.resfields.layers", "1", "--model.resfields.rank",
                                      "2"]])
def test_cli_fits_a_video_and_writes_the_reconstruction(tmp_path, capsys, variant):
    yy, xx = np.mgrid[0:16, 0:24]
    (tmp_path / "frames").mkdir()
    for k in range(3):
        iio.imwrite(tmp_path / "frames" / f"{k:02d}.png",
                    np.stack([xx * 9 + 10 * k, yy * 15, np.full_like(xx, 90)], -1).astype(np.uint8))
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main(["train", "video", "--data", str(tmp_path / "frames"), "--max-steps",
                         "40", "--log-every", "1", "--output", str(run), "--model.width", "32",
                         "--model.depth", "3", "--model.batch-size", "256", "--model.lr-init",
                         "1e-3", *variant])
    # Writing the reconstruction's MP4 starts ffmpeg: no os.fork() warning reaches the user.
    assert not [w for w in caught if "os.fork()" in str(w.message)]
    out = capsys.readouterr().out
    assert code == 0, out
    ev = json.loads((run / "eval" / "test.json").read_text())
    assert ev["num_views"] == 3 and "reconstruction PSNR" in out
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert ev["psnr"] > first["psnr"]  # training improved the fit
    pngs = sorted((run / "renders" / "test").glob("*.png"))
    assert [p.stem for p in pngs] == ["00", "01", "02"]
    rec = iio.imread(pngs[1])
    assert rec.shape == (16, 24, 3)
    with ffmpeg_subprocess():
        frames = iio.imread(run / "renders" / "test.mp4", plugin="FFMPEG")
    assert frames.shape[0] == 3 and frames.shape[1:3] == (16, 24)


def _frame_rows_rays(K=3, P=4, time_values=(0.0, 1 / 3, 1.0)):
    """Rays [K, P]: row k at one time (a frame-stratified batch), plus the flat copy."""
    k1, k2 = jax.random.split(jax.random.key(5))
    d = jax.random.uniform(k1, (K, P, 3), minval=-0.9, maxval=0.9).at[..., 2].set(-1.0)
    o = jnp.broadcast_to(jnp.array([0.0, 0.0, 4.0]), (K, P, 3))
    t = jnp.broadcast_to(jnp.asarray(time_values, jnp.float32)[:, None], (K, P))
    return make_rays(o, d, 2.0, 6.0, t)


def test_video_frame_rows_take_the_per_frame_path_and_match_the_flat_render():
    cfg = SignalConfig(width=16, depth=4, resfields=ResFieldsConfig(layers=(1, 2, 3), rank=3),
                       cam=CAMConfig(enabled=True, coord="time"))
    model = cfg.build(DYN, nnx.Rngs(0))
    rays = _frame_rows_rays()
    bg = jnp.zeros((3, 4, 3))
    rows = model.render_rays(rays, None, train=True, background=bg)["rgb"]
    flat = model.render_rays(rays.reshape(-1), None, train=False,
                             background=bg.reshape(-1, 3))["rgb"]
    assert rows.shape == (3, 4, 3)
    np.testing.assert_allclose(rows.reshape(-1, 3), flat, rtol=1e-4, atol=1e-4)
    # The per-frame path forms each ResField weight once per row: no [.., R * out] product.
    jaxpr = str(jax.make_jaxpr(lambda r: model.render_rays(r, None, train=True,
                                                           background=bg))(rays))
    assert "3,16,16" in jaxpr.replace(" ", "")


def test_dynamic_nerf_frame_rows_match_the_flat_render():
    cfg = dataclasses.replace(TINY, resfields=ResFieldsConfig(layers=(1, 2), rank=3),
                              cam=CAMConfig(enabled=True), batching="frames")
    model = cfg.build(DYN, nnx.Rngs(0))
    model.coarse.density.bias[...] = jnp.ones((1,))
    rays = _frame_rows_rays()
    bg = jnp.ones((3, 4, 3))
    rows = model.render_rays(rays, None, train=False, background=bg)
    flat = model.render_rays(rays.reshape(-1), None, train=False, background=bg.reshape(-1, 3))
    assert rows["rgb"].shape == (3, 4, 3) and rows["depth"].shape == (3, 4, 1)
    np.testing.assert_allclose(rows["rgb"].reshape(-1, 3), flat["rgb"], rtol=1e-4, atol=1e-4)
    assert cfg.data_source(None, None).frames_per_batch == 8


def test_ffn_image_baseline_of_cam():
    """FFN: 256 random Fourier frequencies (sigma 10) of coordinates in [0, 1], 3 x 256 ReLU,
    sigmoid output; its parameter count, and its encoding against NumPy."""
    from nerfkit.core.encodings import random_fourier_features
    img = SceneInfo(aabb=((-1.0,) * 3, (1.0,) * 3), near=0.0, far=1.0)
    cfg = SignalConfig(activation="relu", encoding="fourier", width=256, depth=3)
    model = cfg.build(img, nnx.Rngs(0))
    n = sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    assert n == 512 * 256 + 256 + 2 * (256 * 256 + 256) + 256 * 3 + 3
    B = np.asarray(model.fourier[...])
    assert B.shape == (2, 256) and abs(B.std() - 10.0) < 1.0  # fixed, not a parameter
    x = np.random.default_rng(0).uniform(0, 1, (5, 2)).astype(np.float32)
    z = 2 * np.pi * x @ B
    np.testing.assert_allclose(random_fourier_features(jnp.asarray(x), jnp.asarray(B)),
                               np.concatenate([np.sin(z), np.cos(z)], -1), atol=2e-4)
    rays = _rays(6, time=False)
    rgb = model.render_rays(rays, None, train=False, background=jnp.zeros((6, 3)))["rgb"]
    assert ((rgb > 0) & (rgb < 1)).all()
    with pytest.raises(ConfigError, match="ReLU"):
        SignalConfig(activation="sine", encoding="fourier")
    cam = dataclasses.replace(cfg, cam=CAMConfig(enabled=True)).build(img, nnx.Rngs(0))
    m = sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(cam, nnx.Param)))
    assert m - n == 3 * 2 * 32 * 32  # scalar 32 x 32 grids on the 3 hidden layers


def test_official_learning_rate_schedules():
    cos = SignalConfig(lr_schedule="cosine", lr_init=5e-5, lr_final=5e-6)
    assert cos.learning_rate(0.0) == pytest.approx(5e-5)
    assert cos.learning_rate(0.5) == pytest.approx(0.5 * (5e-5 + 5e-6))
    assert cos.learning_rate(1.0) == pytest.approx(5e-6)
    step = SignalConfig(lr_schedule="step", lr_init=1e-3)
    assert [step.learning_rate(p) for p in (0.0, 0.49, 0.5, 0.74, 0.75, 1.0)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
