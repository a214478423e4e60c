"""MLP initialisations: ``torch`` is PyTorch nn.Linear's default, U(+-1/sqrt(fan_in)) for weights
and biases (kaiming_uniform_(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in))."""

import dataclasses
import math

import numpy as np
import pytest
from flax import nnx

from nerfkit.errors import ConfigError
from nerfkit.nn.mlp import MLP


def _layers(mlp):
    return [*mlp.layers, mlp.out]


def test_torch_init_is_pytorch_linear_default():
    mlp = MLP(512, 256, 2, 3, rngs=nnx.Rngs(0), init="torch")
    for layer, fan_in in zip(_layers(mlp), (512, 256, 256)):
        # PyTorch's bound, written out from its definition (not from nerfkit's helper).
        gain = math.sqrt(2.0 / (1.0 + 5.0))
        bound = gain * math.sqrt(3.0 / fan_in)
        for p in (np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])):
            assert np.abs(p).max() <= bound + 1e-7
            if p.size >= 64:
                assert np.abs(p).max() > 0.9 * bound      # fills the interval
        w = np.asarray(layer.kernel[...])
        np.testing.assert_allclose(w.std(), bound / math.sqrt(3.0), rtol=0.05)


def test_glorot_default_has_zero_biases():
    mlp = MLP(512, 256, 2, 3, rngs=nnx.Rngs(0))
    for layer in _layers(mlp):
        assert not np.any(np.asarray(layer.bias[...]))
    w = np.asarray(mlp.layers[0].kernel[...])
    np.testing.assert_allclose(np.abs(w).max(), math.sqrt(6.0 / (512 + 256)), rtol=0.02)


def test_unknown_init_is_refused():
    with pytest.raises(ConfigError, match="unknown init 'xavier'"):
        MLP(4, 8, 1, 1, rngs=nnx.Rngs(0), init="xavier")


def test_signal_ffn_takes_the_torch_init():
    from nerfkit.models.base import SceneInfo
    from nerfkit.models.signal import SignalConfig
    cfg = SignalConfig(activation="relu", encoding="fourier", fourier_features=16, width=32,
                       depth=2, init="torch")
    scene = SceneInfo(aabb=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)), near=0.0, far=1.0)
    model = cfg.build(scene, nnx.Rngs(0))
    b = np.asarray(model.mlp.layers[0].bias[...])
    assert 0 < np.abs(b).max() <= 1.0 / math.sqrt(32)


def test_signal_init_auto_is_torch_with_cam_only():
    from nerfkit.models.signal import SignalConfig
    from nerfkit.nn.modulation import CAMConfig
    ffn = SignalConfig(activation="relu", encoding="fourier")
    assert ffn.resolved_init() == "glorot"
    assert dataclasses.replace(ffn, cam=CAMConfig(enabled=True)).resolved_init() == "torch"
    assert dataclasses.replace(ffn, cam=CAMConfig(enabled=True),
                               init="glorot").resolved_init() == "glorot"
    assert SignalConfig().resolved_init() == "glorot"     # SIREN: its own init anyway


def test_sine_activation_derivatives_match_the_closed_form():
    """``nerfkit.nn.mlp.sine`` carries its own derivative rule: first and second derivatives,
    reverse and forward mode, against d/dh sin(w0 h) = w0 cos(w0 h), d2 = -w0^2 sin(w0 h)."""
    import jax
    import jax.numpy as jnp
    from nerfkit.nn.mlp import sine
    w0 = 30.0
    h = jnp.linspace(-0.2, 0.2, 11)
    np.testing.assert_allclose(sine(h, w0), np.sin(w0 * np.asarray(h)), atol=1e-6)
    d1 = jax.vmap(jax.grad(lambda x: sine(x, w0)))(h)
    np.testing.assert_allclose(d1, w0 * np.cos(w0 * np.asarray(h)), rtol=1e-5, atol=1e-4)
    d2 = jax.vmap(jax.grad(jax.grad(lambda x: sine(x, w0))))(h)
    np.testing.assert_allclose(d2, -w0 ** 2 * np.sin(w0 * np.asarray(h)), rtol=1e-4, atol=1e-2)
    _, t = jax.jvp(lambda x: sine(x, w0), (h,), (jnp.ones_like(h),))
    np.testing.assert_allclose(t, d1, rtol=1e-6)
