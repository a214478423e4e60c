"""Losses and metrics against closed forms, naive loops, and scikit-image."""

import math

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from skimage.metrics import structural_similarity

from conftest import requires_shared, shared_datasets
from nerfkit.core import losses, metrics


def _skimage_ssim(a, b):
    return structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=-1)


# ----------------------------------------------------------------------------------- losses

def test_mse_plain_and_masked():
    pred = jnp.array([[0.0, 0.5, 1.0], [1.0, 1.0, 1.0]])
    target = jnp.array([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    np.testing.assert_allclose(losses.mse(pred, target), (0.25 + 1 + 1) / 6)
    np.testing.assert_allclose(losses.mse(pred, target, jnp.array([[1.0], [0.0]])), 1.25 / 3)
    assert float(losses.mse(pred, target, jnp.zeros((2, 1)))) == 0.0


def test_huber_piecewise():
    pred = jnp.array([0.0, 0.5, 3.0, -2.0])
    target = jnp.zeros(4)
    delta = 1.0
    ref = np.mean([0.0, 0.5 * 0.25, delta * (3.0 - 0.5), delta * (2.0 - 0.5)])
    np.testing.assert_allclose(losses.huber(pred, target, delta), ref, rtol=1e-6)
    np.testing.assert_allclose(losses.huber(pred, target, 0.1),
                               np.mean([0.0, 0.1 * 0.45, 0.1 * 2.95, 0.1 * 1.95]), rtol=1e-6)


def _naive_strided_ssim(img0, img1, k, stride):
    """Loop reference: Gaussian window peaking at tap k//2 (sigma 1.5), zero padding (k-1)//2."""
    g = np.exp(-((np.arange(k) - k // 2) ** 2) / (2 * 1.5**2))
    win = np.outer(g, g) / g.sum() ** 2
    pad = (k - 1) // 2
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for a, b in zip(img0, img1):                                       # channels
        a = np.pad(a, pad)
        b = np.pad(b, pad)
        for i in range(0, a.shape[0] - k + 1, stride):
            for j in range(0, a.shape[1] - k + 1, stride):
                pa, pb = a[i:i + k, j:j + k], b[i:i + k, j:j + k]
                ma, mb = np.sum(win * pa), np.sum(win * pb)
                va = np.sum(win * pa * pa) - ma * ma
                vb = np.sum(win * pb * pb) - mb * mb
                cov = np.sum(win * pa * pb) - ma * mb
                vals.append((2 * ma * mb + c1) * (2 * cov + c2)
                            / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
    return np.mean(vals)


def test_s3im_single_repeat_matches_loop_reference():
    rng = np.random.default_rng(0)
    pred = rng.uniform(size=(256, 3))
    target = np.clip(pred + rng.normal(scale=0.1, size=(256, 3)), 0, 1)
    got = losses.s3im(None, jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32),
                      kernel_size=4, stride=4, repeats=1, patch_height=16)
    # Row-major pseudo-image [C, 16, 16] of the unshuffled batch.
    img0 = pred.T.reshape(3, 16, 16)
    img1 = target.T.reshape(3, 16, 16)
    np.testing.assert_allclose(got, 1 - _naive_strided_ssim(img0, img1, 4, 4), atol=1e-5)


def test_s3im_repeats_first_unshuffled_then_permutations():
    rng = np.random.default_rng(1)
    # Encode the ray index in the colour so the pseudo-image reveals the order.
    idx = np.arange(128, dtype=np.float32)
    vals = jnp.asarray(np.stack([idx, idx, idx], -1))
    img = np.asarray(losses.s3im_pseudo_image(vals, jnp.concatenate(
        [jnp.arange(128), jax.random.permutation(jax.random.PRNGKey(0), 128)]), 32))
    assert img.shape == (3, 32, 8)
    seq = img[0].reshape(-1)
    np.testing.assert_array_equal(seq[:128], idx)
    np.testing.assert_array_equal(np.sort(seq[128:]), idx)
    # Full loss with repeats: reproducible per key, varies across keys, 0 for a perfect match.
    pred = jnp.asarray(rng.uniform(size=(128, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(128, 3)), jnp.float32)
    a = losses.s3im(jax.random.PRNGKey(0), pred, target, repeats=4, patch_height=32)
    b = losses.s3im(jax.random.PRNGKey(0), pred, target, repeats=4, patch_height=32)
    c = losses.s3im(jax.random.PRNGKey(1), pred, target, repeats=4, patch_height=32)
    assert float(a) == float(b) and float(a) != float(c)
    assert 0.5 < float(a) < 1.5                                        # unrelated colours
    np.testing.assert_allclose(losses.s3im(jax.random.PRNGKey(0), pred, pred, repeats=4,
                                           patch_height=32), 0.0, atol=1e-6)


def test_s3im_grad_jit_and_shape_check():
    rng = np.random.default_rng(2)
    pred = jnp.asarray(rng.uniform(size=(128, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(128, 3)), jnp.float32)
    f = jax.jit(lambda k, p: losses.s3im(k, p, target, repeats=3, patch_height=32))
    g = jax.grad(f, argnums=1)(jax.random.PRNGKey(0), pred)
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    with pytest.raises(ValueError):
        losses.s3im(jax.random.PRNGKey(0), pred[:100], target[:100], patch_height=32)


# ---------------------------------------------------------------------------------- metrics

def test_psnr_closed_form():
    np.testing.assert_allclose(metrics.psnr(0.01), 20.0, rtol=1e-6)
    np.testing.assert_allclose(metrics.psnr(jnp.array([1.0, 1e-4])), [0.0, 40.0], rtol=1e-6)
    np.testing.assert_allclose(metrics.psnr(100.0, max_val=255.0),
                               20 * math.log10(255.0) - 20.0, rtol=1e-6)
    assert np.isfinite(metrics.psnr(0.0))
    a = jnp.zeros((2, 8, 8, 3))
    b = a.at[0].add(0.1).at[1].add(0.5)
    np.testing.assert_allclose(metrics.psnr_images(a, b), [20.0, -20 * math.log10(0.5)], rtol=1e-5)


def test_ssim_matches_skimage_random_images():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(40, 33, 3))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    got = metrics.ssim(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(got, _skimage_ssim(a, b), atol=1e-5)
    np.testing.assert_allclose(metrics.ssim(jnp.asarray(a), jnp.asarray(a)), 1.0, atol=1e-6)
    batch = metrics.ssim(jnp.stack([jnp.asarray(a), jnp.asarray(b)]),
                         jnp.stack([jnp.asarray(b), jnp.asarray(b)]))
    assert batch.shape == (2,)
    np.testing.assert_allclose(batch, [_skimage_ssim(a, b), 1.0], atol=1e-5)


@requires_shared
def test_ssim_matches_skimage_on_kodak():
    import imageio.v3 as iio
    from scipy import ndimage

    path = shared_datasets() / "images" / "kodak" / "kodim01.png"
    img = iio.imread(path).astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    blurred = ndimage.gaussian_filter(img, sigma=(1.0, 1.0, 0))
    noisy = np.clip(blurred + rng.normal(scale=0.03, size=img.shape), 0, 1)
    for other in (blurred, noisy):
        ref = _skimage_ssim(img, other)
        got = float(jax.jit(metrics.ssim)(jnp.asarray(img, jnp.float32),
                                          jnp.asarray(other, jnp.float32)))
        assert abs(got - ref) < 1e-4, (got, ref)
    assert _skimage_ssim(img, noisy) < 0.95                            # the test is not trivial


@pytest.mark.parametrize("n", [1, 2, 7, 128, 6144])
def test_random_permutations_are_permutations_and_uniform(n):
    perms = np.asarray(losses.random_permutations(jax.random.PRNGKey(3), 50, n))
    assert perms.shape == (50, n) and perms.dtype == np.int32
    np.testing.assert_array_equal(np.sort(perms, axis=1), np.tile(np.arange(n), (50, 1)))
    if n >= 128:
        assert len({p.tobytes() for p in perms}) == 50            # independent rows
    # Uniformity: where element 0 lands, over many permutations of 8 (chi-squared, 7 dof;
    # 24.3 is the 0.999 quantile).
    many = np.asarray(losses.random_permutations(jax.random.PRNGKey(4), 8000, 8))
    counts = np.bincount(np.argmax(many == 0, axis=1), minlength=8)
    assert ((counts - 1000.0) ** 2 / 1000.0).sum() < 24.3
