"""Hash-grid NeRF: field shapes, empty grid renders background, trunc_exp, smoke training."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import requires_shared, shared_datasets
from nerfkit.cli import main
from nerfkit.core.rays import make_rays
from nerfkit.models.base import SceneInfo
from nerfkit.core.activations import trunc_exp
from nerfkit.models.ngp import NGPConfig

SMALL = NGPConfig(levels=4, log2_table_size=10, max_resolution=64, hidden=16,
                  occupancy_resolution=8, march_steps=32, num_samples=8, eval_samples=8)
INFO = SceneInfo(aabb=((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)), near=2.0, far=6.0)


def _occupy_only(m, region):
    """Marks only the occupancy cells ``region`` (a tuple of slices) as occupied."""
    g = m.grid.get_value()
    occ = np.zeros(g.occupied.shape, bool)
    occ[region] = True
    m.grid.set_value(g._replace(occupied=jnp.asarray(occ)))


def _rays_down_z(n, spread):
    """``n`` rays from (0, 0, 4) towards -z, directions jittered by ``spread`` (fixed key)."""
    o = jnp.tile(jnp.array([[0.0, 0.0, 4.0]]), (n, 1))
    d = jax.random.normal(jax.random.key(5), (n, 3)) * spread + jnp.array([0.0, 0.0, -1.0])
    return make_rays(o, d, 2.0, 6.0)


def test_trunc_exp_value_and_clamped_gradient():
    x = jnp.array([0.0, 1.0, 20.0])
    np.testing.assert_allclose(trunc_exp(x), jnp.exp(x), rtol=1e-6)
    g = jax.grad(lambda v: trunc_exp(v).sum())(x)
    np.testing.assert_allclose(g, jnp.exp(jnp.minimum(x, 15.0)), rtol=1e-6)


def test_field_shapes_and_positive_density():
    m = SMALL.build(INFO, nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (5, 7, 3), minval=-1.5, maxval=1.5)
    d = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), x.shape)
    sigma, rgb = m.field(x, d)
    assert sigma.shape == (5, 7) and rgb.shape == (5, 7, 3)
    assert bool(jnp.all(sigma > 0)) and bool(jnp.all((rgb >= 0) & (rgb <= 1)))


def test_empty_grid_renders_background():
    m = SMALL.build(INFO, nnx.Rngs(0))
    g = m.grid.get_value()
    m.grid.set_value(g._replace(occupied=jnp.zeros_like(g.occupied)))
    o = jnp.tile(jnp.array([[0.0, 0.0, 4.0]]), (6, 1))
    d = jax.random.normal(jax.random.key(2), (6, 3)) * 0.1 + jnp.array([0.0, 0.0, -1.0])
    rays = make_rays(o, d, 2.0, 6.0)
    bg = jax.random.uniform(jax.random.key(3), (6, 3))
    out = m.render_rays(rays, None, train=False, background=bg)
    np.testing.assert_allclose(out["rgb"], bg, atol=1e-7)
    np.testing.assert_allclose(out["acc"], 0.0, atol=1e-7)


def test_occupancy_update_through_pre_step_empties_space():
    """With a field that is empty everywhere, the first update after warm-up clears the grid."""
    m = SMALL.build(INFO, nnx.Rngs(0))
    # Force every density to (almost) zero through the density MLP's output bias.
    m.density_mlp.out.bias[...] = m.density_mlp.out.bias[...].at[0].set(-30.0)
    m.density_mlp.out.kernel[...] = jnp.zeros_like(m.density_mlp.out.kernel[...])
    assert bool(m.grid.get_value().occupied.all())
    m.pre_step(jnp.int32(0), jax.random.key(0))
    assert not bool(m.grid.get_value().occupied.any())


def test_weight_decay_only_on_mlp_kernels():
    m = SMALL.build(INFO, nnx.Rngs(0))
    params = nnx.state(m, nnx.Param)
    tx = SMALL.optimizer()
    opt = tx.init(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    # With zero gradients, Adam's first step is driven only by the decayed weights.
    upd, _ = tx.update(zeros, opt, params)
    assert float(jnp.abs(upd["encoding"]["tables"]).max()) == 0.0
    assert float(jnp.abs(upd["density_mlp"]["layers"][0]["kernel"]).max()) > 0.0


@requires_shared
@pytest.mark.slow
def test_smoke_train_lego(tmp_path):
    lego = str(shared_datasets() / "nerf_synthetic" / "lego")
    run = tmp_path / "ngp"
    args = ["train", "ngp", "--data", lego, "--downscale", "16", "--max-steps", "20",
            "--output", str(run), "--model.levels", "8", "--model.log2-table-size", "14",
            "--model.max-resolution", "256", "--model.occupancy-resolution", "32",
            "--model.batch-size", "1024", "--model.occupancy-warmup", "8",
            "--model.occupancy-every", "4", "--model.eval-samples", "24",
            "--model.num-samples", "24", "--model.train-active-fraction", "1.0",
            "--log-every", "1", "--no-final-eval"]
    assert main(args) == 0
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = lines[0]["loss"], lines[-1]["loss"]
    assert np.isfinite(last) and last < first  # it learns
    assert main(["eval", str(run), "--split", "test"]) == 0
    ev = json.loads((run / "eval" / "test.json").read_text())
    assert ev["num_views"] == 200 and ev["psnr"] > 10.0


def test_renderer_skips_empty_rays_exactly():
    """Skipping rays the grid marks empty changes no pixel."""
    from nerfkit.data.raysource import RayGeometry
    from nerfkit.engine.renderer import Renderer
    m = SMALL.build(INFO, nnx.Rngs(0))
    _occupy_only(m, np.s_[2:6, 2:6, 2:6])
    graphdef, params, buffers = nnx.split(m, nnx.Param, ...)
    r = Renderer(graphdef, params, buffers, RayGeometry(2.0, 6.0), chunk=64, early_stop=None)
    assert r._mask_fn is not None
    o = jnp.tile(jnp.array([[0.0, 0.0, 4.0]]), (300, 1))
    d = jax.random.normal(jax.random.key(2), (300, 3)) * 0.3 + jnp.array([0.0, 0.0, -1.0])
    rays = make_rays(o, d, 2.0, 6.0)
    bg = np.array([0.2, 0.5, 0.9], np.float32)
    fast = r.render_rays(rays, bg)
    full = m.render_rays(rays, None, train=False, background=jnp.broadcast_to(bg, (300, 3)))
    active = np.asarray(m.active_rays(rays))
    assert 0 < active.sum() < 300  # some rays hit the block, some miss it
    np.testing.assert_allclose(fast["rgb"], full["rgb"], atol=1e-5)
    np.testing.assert_allclose(fast["acc"], full["acc"], atol=1e-6)


def test_training_ray_packing_changes_nothing_but_cost():
    """Packing the rays that cross occupied cells gives the same renders and gradients."""
    import dataclasses
    packed_cfg = dataclasses.replace(SMALL, train_active_fraction=0.5)
    full_cfg = dataclasses.replace(SMALL, train_active_fraction=1.0)
    m = packed_cfg.build(INFO, nnx.Rngs(0))
    _occupy_only(m, np.s_[3:5, 3:5, 3:5])
    graphdef, params, buffers = nnx.split(m, nnx.Param, ...)
    rays = _rays_down_z(64, 0.15)
    bg = jax.random.uniform(jax.random.key(6), (64, 3))
    assert 0 < int(m.active_rays(rays).sum()) <= 32

    def loss(p, cfg):
        mm = nnx.merge(graphdef, p, buffers)
        mm.cfg = cfg
        out = mm.render_rays(rays, None, train=True, background=bg)
        return jnp.sum(out["rgb"] ** 2), out

    (lp, op), gp = jax.value_and_grad(lambda p: loss(p, packed_cfg), has_aux=True)(params)
    (lf, of), gf = jax.value_and_grad(lambda p: loss(p, full_cfg), has_aux=True)(params)
    np.testing.assert_allclose(op["rgb"], of["rgb"], atol=1e-6)
    np.testing.assert_allclose(op["acc"], of["acc"], atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gf)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_rays_beyond_the_packing_slots_are_left_out_of_the_loss():
    import dataclasses
    from nerfkit.core.rays import Batch
    cfg = dataclasses.replace(SMALL, train_active_fraction=0.25)
    m = cfg.build(INFO, nnx.Rngs(0))  # grid fully occupied: every ray through the box is active
    rays = _rays_down_z(16, 0.1)
    bg = jnp.zeros((16, 3))
    out = m.render_rays(rays, None, train=True, background=bg)
    mask = np.asarray(out["ray_mask"])[:, 0]
    assert mask.sum() == 4  # 16 active rays, 4 slots
    target = jnp.full((16, 3), 0.5)
    loss, _ = m.loss(out, Batch(rays, target, bg))
    kept = mask > 0
    expected = float(jnp.mean((out["rgb"][kept] - 0.5) ** 2))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_s3im_ignores_the_rays_left_out_of_the_loss():
    """Rays beyond the packing slots render the background, not their pixel: S3IM (like the MSE)
    must not count them, or it trains towards the background where it saw nothing. (Fewer than
    64 slots: S3IM takes the whole batch, the left-out rays matching exactly.)"""
    import dataclasses
    from nerfkit.core import losses
    from nerfkit.core.rays import Batch
    cfg = dataclasses.replace(SMALL, train_active_fraction=0.25, s3im_weight=1.0)
    m = cfg.build(INFO, nnx.Rngs(0))
    rays = _rays_down_z(64, 0.1)
    bg = jnp.zeros((64, 3))
    out = m.render_rays(rays, None, train=True, background=bg)
    kept = np.asarray(out["ray_mask"])[:, 0] > 0
    assert kept.sum() == 16
    target = jax.random.uniform(jax.random.key(6), (64, 3))
    key = jax.random.key(7)
    _, metrics = m.loss(out, Batch(rays, target, bg), key)
    # Reference: the left-out rays replaced by their targets by hand (zero error there).
    pred = np.where(kept[:, None], np.asarray(out["rgb"]), np.asarray(target))
    ref = losses.s3im(key, jnp.asarray(pred), target)
    np.testing.assert_allclose(float(metrics["s3im"]), float(ref), rtol=1e-6)
    unmasked = losses.s3im(key, out["rgb"], target)
    assert abs(float(unmasked) - float(ref)) > 1e-3  # the masking matters here


def test_s3im_patches_are_made_of_the_rendered_rays():
    """With at least 64 packed slots S3IM's pseudo-patches hold only the rays the field rendered
    (the paper's batch), not the whole batch whose other rays match exactly."""
    import dataclasses
    from nerfkit.core import losses
    from nerfkit.core.rays import Batch
    cfg = dataclasses.replace(SMALL, train_active_fraction=0.25, s3im_weight=1.0)
    m = cfg.build(INFO, nnx.Rngs(0))
    down = _rays_down_z(256, 0.1)
    flip = jnp.where((jnp.arange(256) % 2 == 1)[:, None], -1.0, 1.0)  # odd rays miss the box
    rays = make_rays(down.origins, down.directions * flip, 2.0, 6.0)
    bg = jnp.zeros((256, 3))
    out = m.render_rays(rays, None, train=True, background=bg)
    rendered = np.arange(0, 128, 2)  # 128 active rays, 64 slots: the first 64 in batch order
    np.testing.assert_array_equal(np.asarray(out["rendered_rays"]), rendered)
    target = jax.random.uniform(jax.random.key(6), (256, 3))
    key = jax.random.key(7)
    _, metrics = m.loss(out, Batch(rays, target, bg), key)
    ref = losses.s3im(key, out["rgb"][rendered], target[rendered])
    np.testing.assert_allclose(float(metrics["s3im"]), float(ref), rtol=1e-6)
    whole = losses.s3im(key, jnp.where(out["ray_mask"] > 0, out["rgb"], target), target)
    assert abs(float(whole) - float(ref)) > 1e-3


def test_s3im_takes_any_batch_size():
    """The preset's S3IM on a batch that is not a multiple of 64 rays: the first 64 (the batch is
    shuffled); under 64 rays: one row group of the batch's height."""
    import dataclasses
    from nerfkit.core import losses
    from nerfkit.core.rays import Batch
    m = dataclasses.replace(SMALL, s3im_weight=1.0).build(INFO, nnx.Rngs(0))
    key = jax.random.key(3)
    for n, ref_rays, height in ((100, 64, 64), (40, 40, 40)):
        pred, target = (jax.random.uniform(k, (n, 3)) for k in jax.random.split(key, 2))
        _, metrics = m.loss({"rgb": pred}, Batch(None, target, None), key)
        ref = losses.s3im(key, pred[:ref_rays], target[:ref_rays], patch_height=height)
        np.testing.assert_allclose(float(metrics["s3im"]), float(ref), rtol=1e-6)


def test_bounded_distortion_loss_packed_equals_full_and_matches_the_intervals():
    """The distortion loss on a bounded scene: the same per-ray values with and without the
    ray packing, and equal to mip-NeRF 360's eq. 15 on the samples' intervals in normalised t."""
    import dataclasses
    from nerfkit.core import losses, occupancy
    from nerfkit.core.rays import Batch
    packed_cfg = dataclasses.replace(SMALL, train_active_fraction=0.5, distortion_loss_weight=0.01)
    full_cfg = dataclasses.replace(packed_cfg, train_active_fraction=1.0)
    m = packed_cfg.build(INFO, nnx.Rngs(0))
    _occupy_only(m, np.s_[2:6, 3:5, 3:5])
    rays = _rays_down_z(64, 0.15)
    bg = jnp.zeros((64, 3))
    active = np.asarray(m.active_rays(rays))
    assert 0 < active.sum() <= 32
    packed = m.render_rays(rays, None, train=True, background=bg)
    m.cfg = full_cfg
    full = m.render_rays(rays, None, train=True, background=bg)
    np.testing.assert_allclose(packed["distortion"], full["distortion"], rtol=1e-5, atol=1e-9)
    assert np.all(np.asarray(full["distortion"])[active] > 0)
    assert np.all(np.asarray(full["distortion"])[~active] == 0)
    # Reference: the intervals around the same samples, by hand.
    t_mid, dt, valid = occupancy.occupied_samples(None, rays, m.grid.get_value(),
                                                  full_cfg.march_steps, full_cfg.num_samples)
    s0 = (np.asarray(t_mid - 0.5 * dt) - 2.0) / 4.0
    s1 = (np.asarray(t_mid + 0.5 * dt) - 2.0) / 4.0
    assert np.all(s1[:, :-1] <= s0[:, 1:] + 1e-6)  # disjoint, sorted
    ref = losses.distortion_loss_intervals(jnp.asarray(s0), jnp.asarray(s1), full["weights"])
    np.testing.assert_allclose(full["distortion"], ref, rtol=1e-5, atol=1e-9)
    _, metrics = m.loss(packed, Batch(rays, jnp.zeros((64, 3)), bg))
    np.testing.assert_allclose(float(metrics["distortion"]), float(np.mean(ref)), rtol=1e-5)
