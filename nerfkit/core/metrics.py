"""Image quality metrics: PSNR and SSIM.

SSIM: Wang, Bovik, Sheikh & Simoncelli, "Image Quality Assessment: From Error Visibility to
Structural Similarity" (IEEE TIP 2004), with the Gaussian window (11 taps, sigma 1.5) and the
population (not sample) covariance. With the defaults it reproduces
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0, channel_axis=-1)``: skimage filters the whole image
and then discards a ``(filter_size - 1) / 2`` border, which equals our ``'valid'`` filtering.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# PSNR is computed from max(mse, _MSE_FLOOR): identical images give 100 dB, not +inf (which
# would not survive a JSON metrics file).
_MSE_FLOOR = 1e-10


def psnr(mse: jax.Array, max_val: float = 1.0) -> jax.Array:
    """Peak signal-to-noise ratio in dB: ``10 log10(max_val^2 / mse)``.

    Args:
      mse: ``[...]`` mean squared errors (in squared intensity units); floored at ``1e-10``.
      max_val: the peak signal value (1 for images in ``[0, 1]``).
    Returns:
      ``[...]`` PSNR in dB.
    """
    mse = jnp.maximum(jnp.asarray(mse, jnp.float32), _MSE_FLOOR)
    return 10.0 * jnp.log10(max_val * max_val / mse)


def psnr_images(img0: jax.Array, img1: jax.Array, max_val: float = 1.0) -> jax.Array:
    """PSNR between images ``[..., H, W, C]`` -> ``[...]`` (MSE over each image's pixels)."""
    diff = jnp.asarray(img0, jnp.float32) - jnp.asarray(img1, jnp.float32)
    return psnr(jnp.mean(diff * diff, axis=(-3, -2, -1)), max_val)


def gaussian_kernel(size: int, sigma: float) -> jax.Array:
    """``[size]`` normalised 1D Gaussian taps centred on ``(size - 1) / 2``."""
    x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
    g = jnp.exp(-0.5 * (x / sigma) ** 2)
    return g / jnp.sum(g)


def _filter_valid(img: jax.Array, taps: jax.Array) -> jax.Array:
    """Separable 'valid' correlation of ``[..., H, W, C]`` with ``taps`` along H then W."""
    k = taps.shape[0]
    h, w = img.shape[-3], img.shape[-2]
    rows = sum(taps[i] * img[..., i:i + h - k + 1, :, :] for i in range(k))
    return sum(taps[i] * rows[..., :, i:i + w - k + 1, :] for i in range(k))


def ssim(img0: jax.Array, img1: jax.Array, max_val: float = 1.0, filter_size: int = 11,
         filter_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
    """Mean structural similarity with a Gaussian window and 'valid' filtering.

    Args:
      img0, img1: ``[..., H, W, C]`` images with values in ``[0, max_val]``; ``H, W >=
        filter_size``.
      max_val: dynamic range ``L`` (``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``).
      filter_size, filter_sigma: Gaussian window size in pixels and its standard deviation.
      k1, k2: the SSIM stabilising constants.
    Returns:
      ``[...]`` SSIM averaged over the valid pixels and the channels, in ``[-1, 1]``.
    """
    img0 = jnp.asarray(img0, jnp.float32)
    img1 = jnp.asarray(img1, jnp.float32)
    if min(img0.shape[-3], img0.shape[-2]) < filter_size:
        raise ValueError(f"ssim: images {img0.shape} are smaller than the {filter_size}-pixel window")
    taps = gaussian_kernel(filter_size, filter_sigma)
    filt = lambda z: _filter_valid(z, taps)
    mu0, mu1 = filt(img0), filt(img1)
    var0 = filt(img0 * img0) - mu0 * mu0
    var1 = filt(img1 * img1) - mu1 * mu1
    cov = filt(img0 * img1) - mu0 * mu1
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    num = (2.0 * mu0 * mu1 + c1) * (2.0 * cov + c2)
    den = (mu0 * mu0 + mu1 * mu1 + c1) * (var0 + var1 + c2)
    return jnp.mean(num / den, axis=(-3, -2, -1))
