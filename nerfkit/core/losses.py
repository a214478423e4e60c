"""Losses on ray batches: MSE, Huber and S3IM (photometric), and mip-NeRF 360's distortion loss
(a regulariser of the weights along each ray, see :func:`distortion_loss_intervals`).

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


def random_permutations(key: jax.Array, count: int, n: int) -> jax.Array:
    """``count`` independent random permutations of ``range(n)``, ``[count, n]`` int32.

    One sort of ``uint32`` words per row, each a random key in the high bits and the index in the
    low ``ceil(log2 n)`` bits: ~8x faster on the CPU than ``jax.random.permutation`` (several
    rounds of a key-value sort; 20 ms for 9 x 6,144 on the 2-core machine, 2.3 ms this way). Equal
    random keys (probability ``2^-(32 - index bits)`` per pair) keep their index order, a
    negligible bias for a loss's shuffles; above 2^20 elements (fewer than 12 random bits) it
    falls back to ``jax.random.permutation``.
    """
    index_bits = max(1, int(n - 1).bit_length())
    if index_bits > 20:
        keys = jax.random.split(key, count)
        return jax.vmap(lambda k: jax.random.permutation(k, n))(keys).astype(jnp.int32)
    bits = jax.random.bits(key, (count, n), jnp.uint32)
    words = (bits << index_bits) | jnp.arange(n, dtype=jnp.uint32)
    mask = jnp.uint32((1 << index_bits) - 1)
    return (jnp.sort(words, axis=-1) & mask).astype(jnp.int32)


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
        order.append(random_permutations(key, repeats - 1, num_rays).reshape(-1))
    order = jnp.concatenate(order)
    img0 = s3im_pseudo_image(pred, order, patch_height)
    img1 = s3im_pseudo_image(target, order, patch_height)
    return 1.0 - strided_ssim(img0, img1, kernel_size, stride)


def distortion_loss_intervals(starts: jax.Array, ends: jax.Array,
                              weights: jax.Array) -> jax.Array:
    """Mip-NeRF 360's distortion loss (eq. 15) of disjoint sorted intervals, in O(n).

    Barron et al., "Mip-NeRF 360: Unbounded Anti-Aliased Neural Radiance Fields" (CVPR 2022):
    for a step function of weights ``w_i`` on intervals ``[a_i, b_i]`` with midpoints
    ``m_i = (a_i + b_i) / 2``,

        L = sum_{i,j} w_i w_j |m_i - m_j|  +  1/3 sum_i w_i^2 (b_i - a_i),

    the closed form of ``int int w(u) w(v) |u - v| du dv`` (eq. 14) for the piecewise-constant
    ``w(u) = w_i / (b_i - a_i)``. It pulls each ray's weight together into as small a region as
    possible (no floaters, no spread-out "fog"). With the intervals sorted along the ray the
    double sum is ``2 sum_i w_i (m_i W_i - M_i)``, where ``W_i = sum_{j<i} w_j`` and
    ``M_i = sum_{j<i} w_j m_j`` are exclusive cumulative sums (as in multinerf's
    ``stepfun.lossfun_distortion``), so the cost is linear in the number of intervals.

    The formula holds for intervals with gaps between them (the weight density is 0 in a gap),
    such as the occupied steps of :func:`nerfkit.core.occupancy.march_rays`; zero-length padding
    slots with zero weight add nothing. The paper measures distance in normalised s-space
    (:func:`nerfkit.core.contraction.t_to_s`), which keeps far-away intervals from dominating.

    Args:
      starts, ends: ``[..., S]`` interval bounds, sorted and non-overlapping along the last axis
        (``starts <= ends <= next start``), in ``s`` or ``t``.
      weights: ``[..., S]`` rendering weights (non-negative, sum <= 1).
    Returns:
      ``[...]`` loss per ray (average it over the batch; the paper weights it by 0.01).
    """
    mids = 0.5 * (starts + ends)
    wm = weights * mids
    w_before = jnp.cumsum(weights, axis=-1) - weights        # exclusive sums
    wm_before = jnp.cumsum(wm, axis=-1) - wm
    inter = 2.0 * jnp.sum(weights * (mids * w_before - wm_before), axis=-1)
    intra = jnp.sum(jnp.square(weights) * (ends - starts), axis=-1) / 3.0
    return inter + intra


def distortion_loss(edges: jax.Array, weights: jax.Array) -> jax.Array:
    """Mip-NeRF 360's distortion loss (eq. 15) of contiguous intervals given by their edges.

    Args:
      edges: ``[..., S+1]`` sorted interval edges (``s`` or ``t``); interval ``i`` is
        ``[edges_i, edges_{i+1}]``.
      weights: ``[..., S]`` rendering weights.
    Returns:
      ``[...]`` loss per ray; see :func:`distortion_loss_intervals`.
    """
    return distortion_loss_intervals(edges[..., :-1], edges[..., 1:], weights)
