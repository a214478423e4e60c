"""The fast renderer: early ray termination against the full composite on a trained NGP, packed
small views against one-at-a-time renders, bucketed call sizes, progress output, and the periodic
evaluation's time budget."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from rich.console import Console

from nerfkit.engine.renderer import Renderer, bucket_size, segment_bounds

SIZE = 24  # pixels
SMALL_NGP = dict(levels=8, log2_table_size=12, max_resolution=128, hidden=32, geo_features=15,
                 occupancy_resolution=32, march_steps=64, num_samples=24, eval_samples=24,
                 occupancy_warmup=16, occupancy_every=4, batch_size=1024, render_chunk=256,
                 microbatch=None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An NGP trained for a few seconds on the generated default scene (solid objects: its
    rays stop at their first surface)."""
    from nerfkit.data.synthetic import generate_default_scene
    from nerfkit.engine.config import presets
    from nerfkit.engine.run import load_run
    from nerfkit.engine.trainer import train
    root = tmp_path_factory.mktemp("fastrender")
    data = generate_default_scene(root / "scene", num_train=12, num_test=4, resolution=SIZE)
    _, base = presets()["ngp"]
    model = dataclasses.replace(base.model, **{k: v for k, v in SMALL_NGP.items()
                                               if hasattr(base.model, k)})
    out = root / "run"
    train(dataclasses.replace(base, model=model, data=str(data), downscale=None, max_minutes=None,
                              max_steps=80, output=out, eval_every=0, eval_minutes=(),
                              final_eval=False, checkpoint_every=10**6))
    run = load_run(out)
    return run, run.load_split("test")


def _renderer(run, **kw) -> Renderer:
    return Renderer(run.graphdef, run.params, run.buffers, run.geom, run.cfg.model.render_chunk,
                    **kw)


@pytest.mark.slow
def test_early_termination_matches_the_full_renderer(trained):
    run, test = trained
    full = _renderer(run, early_stop=None)   # the model's own render_rays, every sample
    assert full._segment_fn is None
    exact = _renderer(run, early_stop=0.0)  # segments, nothing dropped
    fast = _renderer(run, early_stop=1e-2)
    for i in range(2):
        ref = full.render_view(test, i)
        assert 0.05 < ref["acc"].mean() < 0.95  # some rays hit the objects, some miss them
        e = exact.render_view(test, i)
        np.testing.assert_allclose(e["rgb"], ref["rgb"], atol=2e-5)
        np.testing.assert_allclose(e["acc"], ref["acc"], atol=2e-5)
        hit = ref["acc"][..., 0] > 0.5
        np.testing.assert_allclose(e["depth"][hit], ref["depth"][hit], rtol=1e-4)
        f = fast.render_view(test, i)
        # A stopped ray's remaining light is below its transmittance (1e-2).
        np.testing.assert_allclose(f["rgb"], ref["rgb"], atol=1e-2)
        np.testing.assert_allclose(f["acc"], ref["acc"], atol=1e-2)
        assert np.abs(f["rgb"] - ref["rgb"]).mean() < 1e-3
    # (A model trained for seconds is foggy, so few of its rays stop early; the saving itself
    # is tested on an opaque field, test_opaque_rays_stop_after_their_first_segment.)


def test_opaque_rays_stop_after_their_first_segment():
    """A field made opaque (density ~e^6 everywhere in a block of occupied cells): each ray
    stops in its first segment of samples, and the image is the full composite's."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from nerfkit.core.rays import make_rays
    from nerfkit.data.raysource import RayGeometry
    from nerfkit.models.base import SceneInfo
    from nerfkit.models.ngp import NGPConfig
    cfg = NGPConfig(levels=4, log2_table_size=10, max_resolution=64, hidden=16,
                    occupancy_resolution=8, march_steps=32, num_samples=24, eval_samples=24)
    m = cfg.build(SceneInfo(aabb=((-1.5,) * 3, (1.5,) * 3), near=2.0, far=6.0), nnx.Rngs(0))
    g = m.grid.get_value()
    occ = np.zeros(g.occupied.shape, bool)
    occ[2:6, 2:6, 2:6] = True
    m.grid.set_value(g._replace(occupied=jnp.asarray(occ)))
    bias = m.density_mlp.out.bias
    bias.set_value(bias.get_value().at[0].set(6.0))
    graphdef, params, buffers = nnx.split(m, nnx.Param, ...)
    o = jnp.tile(jnp.array([[0.0, 0.0, 4.0]]), (300, 1))
    d = jax.random.normal(jax.random.key(2), (300, 3)) * 0.3 + jnp.array([0.0, 0.0, -1.0])
    rays = make_rays(o, d, 2.0, 6.0)
    bg = np.array([0.2, 0.5, 0.9], np.float32)
    r = Renderer(graphdef, params, buffers, RayGeometry(2.0, 6.0), chunk=128, segment=8)
    fast = r.render_rays(rays, bg)
    full = m.render_rays(rays, None, train=False, background=jnp.broadcast_to(bg, (300, 3)))
    active = np.asarray(m.active_rays(rays))
    assert 0 < active.sum() < 300 and float(np.min(np.asarray(full["acc"])[active])) > 0.999
    np.testing.assert_allclose(fast["rgb"], full["rgb"], atol=1e-4)
    np.testing.assert_allclose(fast["acc"], full["acc"], atol=1e-4)
    # Nearly every hit ray stopped after its first segment (8 of its 24 samples; a ray grazing
    # the block's edge may need a second one).
    n_hit = int(active.sum())
    assert 8 * n_hit <= r.counts["samples"] <= 1.1 * 8 * n_hit, (r.counts, n_hit)


@pytest.mark.slow
def test_packed_small_views_equal_one_at_a_time(trained):
    run, test = trained
    r = _renderer(run, min_chunk=64)
    assert r.views_per_call(test) == 1  # 576 pixels > a 256-ray chunk
    big = Renderer(run.graphdef, run.params, run.buffers, run.geom, 4096, min_chunk=64)
    assert big.views_per_call(test) == 4096 // (SIZE * SIZE)
    packed = big.render_views(test, [0, 1, 2])
    for i, p in enumerate(packed):
        one = r.render_view(test, i)
        for k in ("rgb", "depth", "acc"):
            assert p[k].shape == one[k].shape == (SIZE, SIZE, one[k].shape[-1])
            np.testing.assert_allclose(p[k], one[k], atol=1e-5)
    # Same for a family without early termination (the plain path, bucketed last chunk).
    plain, plain_big = _renderer(run, early_stop=None), Renderer(
        run.graphdef, run.params, run.buffers, run.geom, 4096, early_stop=None)
    for i, p in enumerate(plain_big.render_views(test, [0, 1])):
        np.testing.assert_allclose(p["rgb"], plain.render_view(test, i)["rgb"], atol=1e-5)
    # 3 views of 576 rays were packed into one call of the next power of two, not 3 of 4096.
    assert plain_big.counts["ray_slots"] <= 2048


def test_bucket_sizes_and_segments():
    assert bucket_size(10_000, 4096, 1024) == 4096
    assert bucket_size(625, 4096, 256) == 1024       # a 25x25 view: not a full chunk
    assert bucket_size(100, 4096, 256) == 256
    assert bucket_size(3000, 4096, 256, multiple=3) == 4098
    assert bucket_size(3000, 2048 + 512, 256) == 2560  # capped at the chunk
    assert segment_bounds(10, (4, 4, 8)) == [(0, 4), (4, 8), (8, 10)]
    assert segment_bounds(20, (2, 3)) == [(0, 2), (2, 5), (5, 8), (8, 11), (11, 14), (14, 17),
                                          (17, 20)]
    with pytest.raises(ValueError):
        segment_bounds(4, (0,))


@pytest.mark.slow
def test_evaluate_and_render_show_progress(trained, tmp_path):
    from nerfkit.engine.evaluate import evaluate
    from nerfkit.engine.progress import RenderProgress
    from nerfkit.export.frames import render_split
    run, test = trained
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=120)
    with RenderProgress("eval", len(test), console, every=0.0) as prog:
        ev = evaluate(_renderer(run), test, progress=prog)
    lines = buf.getvalue().splitlines()
    assert ev["num_views"] == len(test) == 4
    assert [l.split()[1] for l in lines] == ["1/4", "2/4", "3/4", "4/4"], lines
    assert lines[-1].startswith("[eval] 4/4 views,") and "views/s" in lines[-1]
    buf2 = io.StringIO()
    assert render_split(run, "test", tmp_path, console=Console(file=buf2, force_terminal=False)) == 4
    assert "[render test] 4/4 views" in buf2.getvalue()
    assert len(list((tmp_path / "test").glob("*.png"))) == 4


@pytest.mark.slow
def test_periodic_evaluation_stays_within_its_time_budget(tmp_path, monkeypatch):
    """With an evaluation far slower than a step, most --eval-every evaluations are skipped and
    their total stays near 10% of the training time."""
    import json
    import time

    from nerfkit.data.synthetic import generate_default_scene
    from nerfkit.engine import trainer
    from nerfkit.engine.config import presets
    data = generate_default_scene(tmp_path / "scene", num_train=4, num_test=2, resolution=12)
    real = trainer.evaluate

    def slow_evaluate(*a, **k):
        time.sleep(0.3)
        return real(*a, **k)
    monkeypatch.setattr(trainer, "evaluate", slow_evaluate)
    _, base = presets()["ngp"]
    model = dataclasses.replace(base.model, levels=4, log2_table_size=10, max_resolution=64,
                                hidden=16, occupancy_resolution=8, march_steps=32, num_samples=8,
                                eval_samples=8, batch_size=64, render_chunk=256, microbatch=None)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    trainer.train(dataclasses.replace(base, model=model, data=str(data), downscale=None,
                                      max_minutes=None, max_steps=20, output=out, eval_every=1,
                                      eval_views=1, eval_minutes=(), final_eval=False,
                                      checkpoint_every=10**6))
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [l for l in lines if "eval_psnr" in l]
    train_s = max(l["time"] for l in lines)
    assert 1 <= len(evals) < 20
    # every evaluation but the last started within the budget
    assert (len(evals) - 1) * 0.3 <= trainer.PERIODIC_EVAL_BUDGET * train_s + 0.3, (
        len(evals), train_s, time.perf_counter() - t0)
