"""Input encodings: Fourier features (positional encoding) and real spherical harmonics.

* Positional encoding: Mildenhall et al., "NeRF" (ECCV 2020), eq. (4), gamma(p) = (sin(2^k pi p),
  cos(2^k pi p))_k. Like NeRF's official code (and multinerf), we omit the ``pi``: the features are
  ``sin(2^k x)``, ``cos(2^k x)``. With inputs in ``[-1, 1]`` this only rescales the frequency
  ladder by ``1/pi``; keep it in mind when comparing ``num_freqs`` with the paper.
* Random Fourier features: Tancik et al., "Fourier Features Let Networks Learn High Frequency
  Functions in Low Dimensional Domains" (NeurIPS 2020): ``[sin(2 pi x B), cos(2 pi x B)]`` with a
  fixed Gaussian ``B`` (the "FFN" image baseline of CAM's ``CAM_image.py``: 256 frequencies,
  ``sigma = 10``, coordinates in ``[0, 1]``).
* Spherical harmonics: the real, orthonormal SH basis used for view directions by Müller et al.,
  "Instant Neural Graphics Primitives" (SIGGRAPH 2022) / tiny-cuda-nn and by Plenoxels
  (Fridovich-Keil et al., CVPR 2022). See :func:`spherical_harmonics` for the exact convention.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from nerfkit.core import samplers as _samplers
from nerfkit.core.rays import Rays
from nerfkit.errors import ConfigError


def positional_encoding_dim(dim: int, num_freqs: int, include_input: bool = True) -> int:
    """Output width of :func:`positional_encoding`: ``dim * (2 * num_freqs + include_input)``."""
    return dim * (2 * num_freqs + int(include_input))


def positional_encoding(x: jax.Array, num_freqs: int, include_input: bool = True,
                        min_deg: int = 0) -> jax.Array:
    """NeRF's Fourier feature encoding (without the paper's ``pi``, see the module docstring).

    Args:
      x: ``[..., D]`` inputs (e.g. positions in scene units, or unit view directions).
      num_freqs: number ``L`` of octaves; frequencies are ``2^k`` for
        ``k = min_deg, ..., min_deg + L - 1`` (static).
      include_input: prepend ``x`` itself.
      min_deg: exponent of the lowest frequency.
    Returns:
      ``[..., D * (2L + include_input)]`` in the order
      ``[x, sin(f_0 x), cos(f_0 x), sin(f_1 x), cos(f_1 x), ...]``, each block holding all ``D``
      dimensions (``f_k = 2^(min_deg + k)``).
    """
    parts = [x] if include_input else []
    if num_freqs > 0:
        scales = 2.0 ** jnp.arange(min_deg, min_deg + num_freqs, dtype=x.dtype)
        xb = x[..., None, :] * scales[:, None]                        # [..., L, D]
        feats = jnp.stack([jnp.sin(xb), jnp.cos(xb)], axis=-2)         # [..., L, 2, D]
        parts.append(feats.reshape(*x.shape[:-1], 2 * num_freqs * x.shape[-1]))
    if not parts:
        return jnp.zeros((*x.shape[:-1], 0), x.dtype)
    return jnp.concatenate(parts, axis=-1)


# Normalisation constants of the real SH, written as closed forms.
_PI = math.pi
_C0 = 0.5 * math.sqrt(1.0 / _PI)
_C1 = math.sqrt(3.0 / (4.0 * _PI))
_C2 = (0.5 * math.sqrt(15.0 / _PI), 0.25 * math.sqrt(5.0 / _PI), 0.25 * math.sqrt(15.0 / _PI))
_C3 = (0.25 * math.sqrt(35.0 / (2.0 * _PI)), 0.5 * math.sqrt(105.0 / _PI),
       0.25 * math.sqrt(21.0 / (2.0 * _PI)), 0.25 * math.sqrt(7.0 / _PI),
       0.25 * math.sqrt(105.0 / _PI))
_C4 = (0.75 * math.sqrt(35.0 / _PI), 0.75 * math.sqrt(35.0 / (2.0 * _PI)),
       0.75 * math.sqrt(5.0 / _PI), 0.75 * math.sqrt(5.0 / (2.0 * _PI)),
       (3.0 / 16.0) * math.sqrt(1.0 / _PI), 0.375 * math.sqrt(5.0 / _PI),
       (3.0 / 16.0) * math.sqrt(35.0 / _PI))

MAX_SH_DEGREE = 5


def fourier_projection(key: jax.Array, dim: int, num_features: int, sigma: float) -> jax.Array:
    """The fixed Gaussian projection ``B [dim, num_features]`` of :func:`random_fourier_features`:
    entries ``sigma * N(0, 1)`` (frequencies in cycles per unit of the input)."""
    return sigma * jax.random.normal(key, (dim, num_features), jnp.float32)


def random_fourier_features(x: jax.Array, proj: jax.Array) -> jax.Array:
    """``[sin(2 pi x B), cos(2 pi x B)]``: ``x [..., D]``, ``proj`` ``B [D, F]`` ->
    ``[..., 2F]`` (all sines, then all cosines)."""
    z = 2.0 * math.pi * (x @ proj)
    return jnp.concatenate([jnp.sin(z), jnp.cos(z)], axis=-1)


def spherical_harmonics_dim(degree: int) -> int:
    """Output width of :func:`spherical_harmonics`: ``degree ** 2``."""
    return degree * degree


def spherical_harmonics(dirs: jax.Array, degree: int) -> jax.Array:
    """Real spherical harmonics of bands ``l = 0 .. degree-1`` evaluated at unit directions.

    Convention (the one of tiny-cuda-nn / Instant-NGP; "degree 4" means 16 coefficients):
    with ``(x, y, z) = (sin th cos ph, sin th sin ph, cos th)`` and the complex orthonormal
    ``Y_l^m`` *including* the Condon-Shortley phase ``(-1)^m`` (as in ``scipy.special``),

        Y_{l,m} = sqrt(2) Im Y_l^{|m|}   (m < 0),
        Y_{l,0} = Y_l^0,
        Y_{l,m} = sqrt(2) Re Y_l^m       (m > 0),

    ordered ``l = 0, 1, ...`` and ``m = -l .. l`` within a band (index ``l^2 + l + m``). E.g. band 1
    is ``sqrt(3 / 4pi) * (-y, z, -x)``. These are the "sign-free" textbook real SH times
    ``(-1)^m``. The basis is orthonormal on the unit sphere.

    Args:
      dirs: ``[..., 3]`` unit vectors (not normalised here; tiny-cuda-nn's ``[0, 1]`` input
        remapping is *not* applied).
      degree: number of bands, 1 to 5 (static).
    Returns:
      ``[..., degree**2]`` basis values.
    """
    if not 1 <= degree <= MAX_SH_DEGREE:
        raise ConfigError(f"spherical harmonics degree must be in [1, {MAX_SH_DEGREE}], "
                          f"got {degree}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = [jnp.full_like(x, _C0)]
    if degree > 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            -_C2[0] * y * z,
            _C2[1] * (3.0 * zz - 1.0),
            -_C2[0] * x * z,
            _C2[2] * (xx - yy),
        ]
    if degree > 3:
        out += [
            -_C3[0] * y * (3.0 * xx - yy),
            _C3[1] * x * y * z,
            -_C3[2] * y * (5.0 * zz - 1.0),
            _C3[3] * z * (5.0 * zz - 3.0),
            -_C3[2] * x * (5.0 * zz - 1.0),
            _C3[4] * z * (xx - yy),
            -_C3[0] * x * (xx - 3.0 * yy),
        ]
    if degree > 4:
        out += [
            _C4[0] * x * y * (xx - yy),
            -_C4[1] * y * z * (3.0 * xx - yy),
            _C4[2] * x * y * (7.0 * zz - 1.0),
            -_C4[3] * y * z * (7.0 * zz - 3.0),
            _C4[4] * (35.0 * zz * zz - 30.0 * zz + 3.0),
            -_C4[3] * x * z * (7.0 * zz - 3.0),
            _C4[5] * (xx - yy) * (7.0 * zz - 1.0),
            -_C4[1] * x * z * (xx - 3.0 * yy),
            _C4[6] * (xx * (xx - 3.0 * yy) - yy * (3.0 * xx - yy)),
        ]
    return jnp.stack(out, axis=-1)


def ray_points(rays: Rays, num_points: int, key: Optional[jax.Array],
               randomized: bool) -> jax.Array:
    """``[..., K, 3]`` points ``o + t_k d`` at ``K`` depths evenly spaced from ``near`` to ``far``
    (inclusive); randomized: each ``t_k`` uniform in its stratum (between the midpoints to its
    neighbours, clipped to ``[near, far]``)."""
    t = _samplers.stratified_samples(key, rays.near, rays.far, num_points - 1, randomized)
    return rays.points_at(t)


def ray_encoding(points: jax.Array, num_freqs: int) -> jax.Array:
    """R2L's ray input: positional encoding of all the points' coordinates.

    Args:
      points: ``[..., K, 3]``.
      num_freqs: octaves ``L``.
    Returns:
      ``[..., 3K (2L + 1)]`` laid out as ``[p, sin(p), cos(p), sin(2p), cos(2p), ...,
      sin(2^(L-1) p), cos(2^(L-1) p)]`` where ``p = (x_0, y_0, z_0, x_1, ..., z_{K-1})`` is the
      flattened ``3K`` vector (point-major); see :func:`~nerfkit.core.encodings.positional_encoding`.
    """
    flat = points.reshape(*points.shape[:-2], points.shape[-2] * 3)
    return positional_encoding(flat, num_freqs, True)
