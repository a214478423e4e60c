"""evaluate(): per-view PSNR / SSIM against a scene, including images too small for SSIM."""

from types import SimpleNamespace

import numpy as np
import pytest

from nerfkit.core import metrics
from nerfkit.core.cameras import make_cameras
from nerfkit.data.scene import Scene
from nerfkit.engine.evaluate import SSIM_WINDOW, evaluate, evenly_spaced_views


def _scene_and_renders(size, n=2, noise=0.05):
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.2, 0.8, (n, size, size, 3)).astype(np.float32)
    c2w = np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1))
    scene = Scene(images=gt, cameras=make_cameras(c2w, 10.0, 10.0, size, size),
                  names=[f"v{i}" for i in range(n)], near=1.0, far=5.0)
    pred = np.clip(gt + rng.normal(0, noise, gt.shape), 0, 1).astype(np.float32)
    renderer = SimpleNamespace(render_view=lambda scene, i: {"rgb": pred[i]})
    return scene, renderer, gt, pred


def test_evaluate_matches_closed_form_psnr_and_ssim():
    scene, renderer, gt, pred = _scene_and_renders(16)
    ev = evaluate(renderer, scene)
    mse = ((pred - gt) ** 2).reshape(len(gt), -1).mean(-1)
    np.testing.assert_allclose([v["psnr"] for v in ev["views"]], -10 * np.log10(mse), rtol=1e-5)
    ssim = [float(metrics.ssim(p, g)) for p, g in zip(pred, gt)]
    np.testing.assert_allclose([v["ssim"] for v in ev["views"]], ssim, rtol=1e-5)
    assert ev["num_views"] == 2 and np.isfinite(ev["ssim"])


def test_evaluate_small_images_reports_psnr_and_nan_ssim():
    size = SSIM_WINDOW - 3  # e.g. a scene evaluated at a heavy downscale
    scene, renderer, gt, pred = _scene_and_renders(size)
    with pytest.warns(RuntimeWarning, match="smaller than SSIM"):
        ev = evaluate(renderer, scene)
    mse = ((pred - gt) ** 2).reshape(len(gt), -1).mean(-1)
    np.testing.assert_allclose(ev["psnr"], np.mean(-10 * np.log10(mse)), rtol=1e-5)
    assert np.isnan(ev["ssim"]) and all(np.isnan(v["ssim"]) for v in ev["views"])


def test_evenly_spaced_views():
    assert evenly_spaced_views(200, 8) == [0, 28, 57, 85, 114, 142, 171, 199]
    assert evenly_spaced_views(5, 3) == [0, 2, 4]
    assert evenly_spaced_views(3, 10) == [0, 1, 2]  # no more views than there are
    assert evenly_spaced_views(7, 1) == [0]
