"""Distillation: pseudo cameras stay within the training camera distribution, the teacher source
labels batches with the teacher's renders, and each student family distils from a tiny NeRF
teacher through the CLI, then evaluates or renders like any run."""

import json
import math

import jax
import numpy as np
import pytest

from nerfkit.data.pseudo import (pseudo_camera_data, sample_box_poses, sample_pseudo_rays,
                                 sample_sphere_poses)
from nerfkit.data.raysource import RayGeometry


def _look_at_origin(centres, up=np.array([0.0, 0.0, 1.0])):
    z = centres / np.linalg.norm(centres, axis=-1, keepdims=True)
    x = np.cross(up, z)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z, centres], axis=-1)


def _sphere_cameras(n, el_deg, az_deg, radius=(4.0, 4.0), seed=0):
    rng = np.random.default_rng(seed)
    el = np.radians(rng.uniform(*el_deg, n))
    az = np.radians(rng.uniform(*az_deg, n))
    r = rng.uniform(*radius, n)
    centres = r[:, None] * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                     np.sin(el)], -1)
    return _look_at_origin(centres)


INTR = np.tile([[40.0, 40.0, 25.0, 25.0]], (1, 1))


def _check_rotations(c2w):
    rot = c2w[:, :, :3]
    np.testing.assert_allclose(np.einsum("nji,njk->nik", rot, rot),
                               np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)


@pytest.mark.parametrize("az_range", [(-180, 180), (10, 130)])
def test_sphere_poses_stay_within_training_cameras(az_range):
    train = _sphere_cameras(60, (12, 65), az_range, radius=(3.5, 4.5))
    data = pseudo_camera_data(train, np.tile(INTR, (60, 1)), 50, 50)
    c2w = np.asarray(jax.jit(sample_sphere_poses, static_argnums=2)(data, jax.random.key(0),
                                                                   4000), np.float64)
    _check_rotations(c2w)
    centres = c2w[:, :, 3]
    r = np.linalg.norm(centres, axis=-1)
    tr = np.linalg.norm(train[:, :, 3], axis=-1)
    assert r.min() >= tr.min() - 1e-4 and r.max() <= tr.max() + 1e-4
    el = np.degrees(np.arcsin(centres[:, 2] / r))
    tel = np.degrees(np.arcsin(train[:, 2, 3] / tr))
    assert el.min() >= tel.min() - 0.05 and el.max() <= tel.max() + 0.05
    assert el.max() - el.min() > 0.9 * (tel.max() - tel.min())          # and fill it
    # Every pseudo camera looks at the origin: its viewing axis is its centre's direction,
    # and its x axis stays horizontal (no roll).
    np.testing.assert_allclose(c2w[:, :, 2], centres / r[:, None], atol=1e-5)
    assert np.abs(c2w[:, 2, 0]).max() < 1e-5
    az = np.degrees(np.arctan2(centres[:, 1], centres[:, 0]))
    taz = np.degrees(np.arctan2(train[:, 1, 3], train[:, 0, 3]))
    if az_range == (-180, 180):
        assert az.min() < -170 and az.max() > 170
    else:
        assert az.min() >= taz.min() - 0.05 and az.max() <= taz.max() + 0.05


def test_box_poses_stay_within_training_boxes():
    rng = np.random.default_rng(0)
    n = 20
    centres = rng.uniform([-1.0, -0.5, -0.2], [1.0, 0.5, 0.3], (n, 3))
    # Forward-facing cameras looking roughly down -z (axis near +z), small random tilts.
    axes = np.stack([rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), np.ones(n)], -1)
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    up = np.array([0.0, 1.0, 0.0])
    x = np.cross(up, axes)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    train = np.stack([x, np.cross(axes, x), axes, centres], -1)
    data = pseudo_camera_data(train, np.tile(INTR, (n, 1)), 50, 50)
    c2w = np.asarray(jax.jit(sample_box_poses, static_argnums=2)(data, jax.random.key(1), 3000),
                     np.float64)
    _check_rotations(c2w)
    lo, hi = centres.min(0), centres.max(0)
    assert np.all(c2w[:, :, 3] >= lo - 1e-5) and np.all(c2w[:, :, 3] <= hi + 1e-5)
    # Each viewing axis points into the box of the training axes: some positive multiple of it
    # lies in the box (slab test).
    a = c2w[:, :, 2]
    alo, ahi = axes.min(0), axes.max(0)
    s_lo = np.max(np.minimum(alo / a, ahi / a), axis=-1)
    s_hi = np.min(np.maximum(alo / a, ahi / a), axis=-1)
    assert np.all(s_lo <= s_hi + 1e-6) and np.all(s_hi > 0)


def test_pseudo_rays_go_through_the_image():
    train = _sphere_cameras(30, (20, 60), (-180, 180))
    data = pseudo_camera_data(train, np.tile(INTR, (30, 1)), 50, 50)
    geom = RayGeometry(2.0, 6.0)
    rays = jax.jit(sample_pseudo_rays, static_argnums=(1, 3, 4))(
        data, geom, jax.random.key(0), 2000, "sphere")
    o = np.asarray(rays.origins)
    np.testing.assert_allclose(np.linalg.norm(o, axis=-1), 4.0, rtol=1e-5)
    # Angle from the optical axis (towards the origin) within the half-diagonal field of view.
    cosang = np.sum(np.asarray(rays.viewdirs) * -o / 4.0, -1)
    half_diag = math.atan(math.hypot(25, 25) / 40)
    assert np.all(cosang >= math.cos(half_diag) - 1e-5)
    assert np.asarray(rays.near).min() == 2.0 and np.asarray(rays.far).max() == 6.0


# ------------------------------------------------------------------------ end to end -----
# On a tiny dataset in the Blender layout (nerfkit's generated scene at 24 x 24 pixels, 12 training
# and 3 test views) so that the whole pipeline runs in seconds, real data or not.

TEACHER = ["--model.depth", "2", "--model.width", "16", "--model.view-width", "8",
           "--model.coarse-samples", "8", "--model.fine-samples", "8",
           "--model.batch-size", "128"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from nerfkit.cli import main
    from nerfkit.data.synthetic import generate_default_scene
    root = tmp_path_factory.mktemp("distill")
    data = generate_default_scene(root / "scene", num_train=12, num_test=3, resolution=24)
    run = root / "teacher"
    assert main(["train", "nerf", "--data", str(data), "--max-steps", "3",
                 "--output", str(run), "--no-final-eval", *TEACHER]) == 0
    return run


def test_teacher_source_labels_pseudo_and_real_rays(teacher):
    from nerfkit.engine.distill import TeacherSource
    from nerfkit.engine.run import load_run
    from nerfkit.models.nerdf import NeRDFConfig
    run = load_run(teacher)
    scene = run.load_split("train")
    source = TeacherSource(teacher, scene, NeRDFConfig(teacher=str(teacher), real_fraction=0.25,
                                                       teacher_chunk=16))
    assert source.mode == "sphere" and set(source.extra_keys) == {"t_mid", "weights", "density"}
    batch = jax.jit(source.sample, static_argnums=2)(source.data, jax.random.key(0), 64)
    assert batch.rgb.shape == (64, 3) and batch.extras["density"].shape == (64, 16)
    # Pseudo rays start on the training cameras' sphere; their targets are the teacher's renders.
    r = np.linalg.norm(np.asarray(batch.rays.origins), axis=-1)
    np.testing.assert_allclose(r, 4.0, rtol=1e-4)
    model = jax.jit(lambda rays, bg: run.renderer(64)._fn(run.params, run.buffers, rays, bg))
    ref = model(batch.rays, batch.background)
    np.testing.assert_allclose(np.asarray(batch.rgb)[16:], np.asarray(ref["rgb"])[16:],
                               atol=1e-5)
    # The first quarter are real pixels: their targets are ground truth, not the teacher's.
    gt = scene.composited().reshape(-1, 3)
    for c in np.asarray(batch.rgb)[:16]:
        assert np.min(np.abs(gt - c).sum(-1)) < 1e-5


@pytest.mark.parametrize("family, args", [
    ("r2l", ["--model.depth", "4", "--model.width", "16", "--model.points", "4",
             "--model.teacher-cache-rays", "256"]),
    ("nerdf", ["--model.depth", "2", "--model.width", "16", "--model.samples", "8",
               "--model.num-basis", "6", "--model.points", "4"]),
])
def test_distill_cli_then_eval_and_render(teacher, tmp_path, family, args):
    from nerfkit.cli import main
    out = tmp_path / family
    assert main(["distill", family, "--teacher", str(teacher), "--max-steps", "3",
                 "--output", str(out), "--no-final-eval", "--model.batch-size", "64",
                 "--log-every", "1", *args]) == 0
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["model"]["family"] == family
    assert cfg["model"]["teacher"] == str(teacher.absolute())
    assert cfg["downscale"] is None and cfg["data"].endswith("scene")
    assert max(json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()) == 3
    # The student is an ordinary run (one of each command per family keeps CI short).
    if family == "r2l":  # distilled from a cache of teacher renders
        assert len(list((out / "teacher_cache").glob("chunk_*.npz"))) == 1
        # Fine-tuning on the real images starts from the distilled weights (a step with a
        # negligible learning rate leaves them where they were) ...
        ft = tmp_path / "finetune"
        assert main(["train", "r2l", "--init-from", str(out), "--data", cfg["data"],
                     "--max-steps", "1", "--output", str(ft), "--no-final-eval",
                     "--model.batch-size", "64", "--model.lr-init", "1e-12",
                     "--model.lr-final", "1e-12", *args[:6]]) == 0
        from nerfkit.engine.run import load_run
        a, b = load_run(out).params, load_run(ft).params
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-8)
        # ... and refuses a run of other sizes with a message naming it.
        assert main(["train", "r2l", "--init-from", str(out), "--data", cfg["data"],
                     "--max-steps", "1", "--output", str(tmp_path / "bad"),
                     "--model.width", "8"]) == 2
        assert main(["eval", str(out), "--split", "test"]) == 0
        ev = json.loads((out / "eval" / "test.json").read_text())
        assert ev["num_views"] == 3 and 3.0 < ev["psnr"] < 40.0
    else:
        assert main(["render", str(out), "--camera-path", "orbit", "--frames", "2",
                     "--output", str(tmp_path / "orbit")]) == 0
        assert len(list((tmp_path / "orbit" / "frames").glob("*.png"))) == 2


def test_distill_needs_a_teacher_run(tmp_path, capsys):
    from nerfkit.cli import main
    assert main(["distill", "r2l", "--output", str(tmp_path / "s"), "--max-steps", "1"]) == 2
    assert "--teacher" in capsys.readouterr().err
    assert main(["distill", "nerdf", "--teacher", str(tmp_path / "nope"), "--output",
                 str(tmp_path / "s"), "--max-steps", "1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_teacher_cache_matches_on_the_fly_labels_and_is_reused(teacher, tmp_path):
    """Cached pseudo rays carry exactly the teacher's render (re-composited onto each batch's
    background), and a second source reuses the chunks on disk instead of rendering again."""
    from nerfkit.engine.distill import TeacherSource
    from nerfkit.engine.run import load_run
    from nerfkit.models.nerdf import NeRDFConfig
    run = load_run(teacher)
    scene = run.load_split("train")
    cfg = NeRDFConfig(teacher=str(teacher), teacher_chunk=16, teacher_cache_rays=100,
                      background="random")
    cache_dir = tmp_path / "cache"
    # Small chunks so that the cache spans several files (the last one partly used).
    import nerfkit.engine.distill as distill_mod
    orig = distill_mod.build_teacher_cache
    build = lambda src, d, n, seed: orig(src, d, n, seed, chunk_rays=48)
    distill_mod.build_teacher_cache = build
    try:
        source = TeacherSource(teacher, scene, cfg, cache_dir=cache_dir, seed=3)
        assert sorted(p.name for p in cache_dir.glob("chunk_*.npz")) == [
            "chunk_00000.npz", "chunk_00001.npz", "chunk_00002.npz"]
        cache = source.data.cache
        assert cache.rgb.shape == (100, 3) and cache.extras["weights"].shape == (100, 16)
        batch = jax.jit(source.sample, static_argnums=2)(source.data, jax.random.key(1), 64)
        # Every ray of the batch is a cached ray ...
        cached_o = np.asarray(cache.rays.origins)
        idx = [int(np.argmin(np.abs(cached_o - o).sum(-1))) for o in np.asarray(batch.rays.origins)]
        np.testing.assert_allclose(cached_o[idx], np.asarray(batch.rays.origins), atol=0)
        # ... whose target is the teacher's render of it on the batch's (random) background.
        from flax import nnx
        ref = jax.jit(lambda r, bg: nnx.merge(run.graphdef, run.params, run.buffers).render_rays(
            r, None, train=False, background=bg))(batch.rays, batch.background)
        np.testing.assert_allclose(np.asarray(batch.rgb), np.asarray(ref["rgb"]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(batch.extras["weights"]),
                                   np.asarray(ref["weights"]), atol=1e-5)
        # A second source (e.g. --resume) loads the chunks: same cache, nothing re-rendered.
        stamps = {p: p.stat().st_mtime_ns for p in cache_dir.glob("chunk_*.npz")}
        again = TeacherSource(teacher, scene, cfg, cache_dir=cache_dir, seed=3)
        assert {p: p.stat().st_mtime_ns for p in cache_dir.glob("chunk_*.npz")} == stamps
        np.testing.assert_array_equal(np.asarray(again.data.cache.rgb), np.asarray(cache.rgb))
        # Another seed is another pseudo dataset: the stale chunks are replaced.
        other = TeacherSource(teacher, scene, cfg, cache_dir=cache_dir, seed=4)
        assert not np.allclose(np.asarray(other.data.cache.rays.origins), cached_o)
    finally:
        distill_mod.build_teacher_cache = orig
