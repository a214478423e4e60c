"""Photometric losses on ray batches: MSE, Huber and S3IM.

S3IM: Xie, Zhou, Wang, Zhang, Chen & Ding, "S3IM: Stochastic Structural SIMilarity and Its
Unreasonable Effectiveness for Neural Fields" (ICCV 2023). A batch of ``R`` rays carries no image
structure, so S3IM builds one: the batch is repeated ``M`` times (the first copy in its original
order, the others randomly permuted), the ``M * R`` colours are laid out row-major into a
pseudo-image of ``patch_height`` rows, and the loss is ``1 - SSIM`` of the rendered and target
pseudo-images, computed with a small Gaussian kernel (``kernel_size``, sigma 1.5) applied with a
``stride``. To reproduce the authors' released implementation, the window has its peak at tap
``kernel_size // 2`` and the images are zero-padded by ``(kernel_size - 1) // 2`` on each side.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax


def mse(pred: jax.Array, target: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Mean squared error, optionally over the entries where ``mask`` is set.

    Args:
      pred, target: ``[..., C]`` predictions and targets.
      mask: optional weights broadcastable to ``pred`` (e.g. ``[..., 1]`` in ``{0, 1}``); the
        result is ``sum(mask * err^2) / sum(mask)`` over the broadcast shape, 0 for an empty mask.
    Returns:
      scalar loss.
    """
    err = jnp.square(pred - target)
    if mask is None:
        return jnp.mean(err)
    mask = jnp.broadcast_to(jnp.asarray(mask, err.dtype), err.shape)
    return jnp.sum(mask * err) / jnp.maximum(jnp.sum(mask), 1e-12)


def huber(pred: jax.Array, target: jax.Array, delta: float = 1.0) -> jax.Array:
    """Mean Huber loss: ``0.5 e^2`` for ``|e| <= delta``, ``delta (|e| - delta / 2)`` beyond.

    Args:
      pred, target: ``[...]`` arrays of the same shape.
      delta: the switch point between the quadratic and the linear branch.
    Returns:
      scalar loss.
    """
    return jnp.mean(optax.losses.huber_loss(pred, target, delta=delta))


def s3im_window(kernel_size: int, sigma: float = 1.5) -> jax.Array:
    """``[kernel_size, kernel_size]`` normalised Gaussian window peaking at tap ``kernel_size // 2``."""
    x = jnp.arange(kernel_size, dtype=jnp.float32) - (kernel_size // 2)
    g = jnp.exp(-(x * x) / (2.0 * sigma * sigma))
    g = g / jnp.sum(g)
    return jnp.outer(g, g)


def strided_ssim(img0: jax.Array, img1: jax.Array, kernel_size: int, stride: int,
                 max_val: float = 1.0) -> jax.Array:
    """Mean SSIM of ``[C, H, W]`` images with the S3IM window, zero padding and a stride.

    Returns a scalar: the SSIM map averaged over its (strided) positions and the channels.
    """
    window = s3im_window(kernel_size)[None, None]                   # [O=1, I=1, k, k]
    pad = (kernel_size - 1) // 2

    def filt(z):
        out = jax.lax.conv_general_dilated(
            z[:, None].astype(jnp.float32), window, window_strides=(stride, stride),
            padding=((pad, pad), (pad, pad)), dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return out[:, 0]

    c1 = (0.01 * max_val) ** 2
    c2 = (0.03 * max_val) ** 2
    mu0, mu1 = filt(img0), filt(img1)
    var0 = filt(img0 * img0) - mu0 * mu0
    var1 = filt(img1 * img1) - mu1 * mu1
    cov = filt(img0 * img1) - mu0 * mu1
    ssim_map = ((2.0 * mu0 * mu1 + c1) * (2.0 * cov + c2)) / (
        (mu0 * mu0 + mu1 * mu1 + c1) * (var0 + var1 + c2))
    return jnp.mean(ssim_map)


def s3im_pseudo_image(values: jax.Array, order: jax.Array, patch_height: int) -> jax.Array:
    """Lays ``values [R, C]`` gathered in ``order [M * R]`` out as a ``[C, patch_height, W]`` image.

    The gathered sequence fills the image row-major (``W = M * R / patch_height``).
    """
    seq = values[order]                                             # [M*R, C]
    return seq.T.reshape(values.shape[-1], patch_height, -1)


def s3im(key: Optional[jax.Array], pred: jax.Array, target: jax.Array, kernel_size: int = 4,
         stride: int = 4, repeats: int = 10, patch_height: int = 64) -> jax.Array:
    """Stochastic structural similarity loss ``1 - SSIM`` over random pseudo-patches.

    Args:
      key: PRNG key for the ``repeats - 1`` permutations (may be ``None`` if ``repeats == 1``).
      pred, target: ``[R, 3]`` rendered and ground-truth colours of one ray batch (in ``[0, 1]``);
        ``R`` must be a multiple of ``patch_height``.
      kernel_size, stride: the SSIM window size and stride, in pseudo-image pixels.
      repeats: ``M``, how many copies of the batch the pseudo-image holds (the first unshuffled).
      patch_height: rows of the pseudo-image.
    Returns:
      scalar loss in ``[0, 2]`` (0 when ``pred == target``).
    """
    num_rays = pred.shape[0]
    if num_rays % patch_height:
        raise ValueError(f"s3im: the batch of {num_rays} rays is not a multiple of "
                         f"patch_height={patch_height}")
    order = [jnp.arange(num_rays)]
    if repeats > 1:
        if key is None:
            raise ValueError("s3im with repeats > 1 needs a PRNG key")
        keys = jax.random.split(key, repeats - 1)
        perms = jax.vmap(lambda k: jax.random.permutation(k, num_rays))(keys)
        order.append(perms.reshape(-1))
    order = jnp.concatenate(order)
    img0 = s3im_pseudo_image(pred, order, patch_height)
    img1 = s3im_pseudo_image(target, order, patch_height)
    return 1.0 - strided_ssim(img0, img1, kernel_size, stride)
