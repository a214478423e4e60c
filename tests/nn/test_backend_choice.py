"""The hash-encoding backend choice (``--model.backend auto | ffi | jax | naive``), with the
compiled kernel present and absent.

Absence is simulated through the real loader: an empty (or broken) library folder in place of
``ffi_backend.lib_dirs()`` and the registration cache reset, or ``NERFKIT_NO_KERNEL=1``. The
"present" cases that need the real library skip without it (CI builds it: ``pip install -e .``
and ``NERFKIT_REQUIRE_FFI=1``, see tests/cuda_ext).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nerfkit.core.hashgrid import HashGridConfig, hash_encode_naive
from nerfkit.errors import ConfigError
from nerfkit.nn import ffi_backend
from nerfkit.nn.ffi_backend import KernelFallbackWarning, resolve_backend
from nerfkit.nn.hashgrid import HashEncoding

CFG = HashGridConfig(num_levels=4, features_per_level=2, log2_table_size=10, base_resolution=4,
                     max_resolution=64)
REAL_KERNEL = ffi_backend.available()


@pytest.fixture
def no_kernel(monkeypatch, tmp_path):
    """The loader looks only in an empty folder, as after a failed build."""
    monkeypatch.delenv("NERFKIT_NO_KERNEL", raising=False)
    monkeypatch.setattr(ffi_backend, "lib_dirs", lambda: [tmp_path])
    monkeypatch.setattr(ffi_backend, "_registered", None)
    monkeypatch.setattr(ffi_backend, "_load_errors", [])
    monkeypatch.setattr(ffi_backend, "_warned", False)
    return tmp_path


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(ffi_backend, "_warned", False)


def _fallback_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, KernelFallbackWarning)]


def test_auto_without_kernel_uses_jax_with_exactly_one_warning(no_kernel):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto") == "jax"
        encs = [HashEncoding(CFG, "auto", rngs=nnx.Rngs(i)) for i in range(3)]
        assert resolve_backend("auto") == "jax"
    msgs = _fallback_warnings(caught)
    assert len(msgs) == 1, msgs
    assert "not built" in msgs[0] and str(no_kernel) in msgs[0] and "pip install" in msgs[0]
    assert all(e.backend == "jax" for e in encs)
    x = jax.random.uniform(jax.random.key(1), (50, 3))
    np.testing.assert_allclose(encs[0](x), hash_encode_naive(encs[0].tables[...], x, CFG),
                               rtol=1e-5, atol=1e-6)


def test_ffi_without_kernel_is_a_clear_error(no_kernel):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConfigError, match=r"--model.backend ffi: .*not built.*pip install"):
            HashEncoding(CFG, "ffi", rngs=nnx.Rngs(0))
    assert not _fallback_warnings(caught)


def test_jax_and_naive_never_look_for_the_kernel(no_kernel, monkeypatch):
    def boom():
        raise AssertionError("the kernel was looked for")
    monkeypatch.setattr(ffi_backend, "_register", boom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert HashEncoding(CFG, "jax", rngs=nnx.Rngs(0)).backend == "jax"
        assert HashEncoding(CFG, "naive", rngs=nnx.Rngs(0)).backend == "naive"
    assert not _fallback_warnings(caught)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="must be one of auto, ffi, jax, naive"):
        resolve_backend("cuda")


def test_broken_library_falls_back_and_says_why(no_kernel):
    """A library that does not load (here: not an ELF file) is reported, not a crash."""
    (no_kernel / "libnerfkit_hashgrid_cpu.so").write_bytes(b"not a shared library")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto") == "jax"
    msgs = _fallback_warnings(caught)
    assert len(msgs) == 1 and "could not be loaded" in msgs[0] and "OSError" in msgs[0], msgs
    with pytest.raises(ConfigError, match="could not be loaded"):
        resolve_backend("ffi")


def test_library_built_against_a_newer_jaxlib_is_refused(no_kernel):
    """The XLA FFI API keeps older handlers working, not newer ones: a library whose build
    record names a newer jaxlib than the running one is not loaded."""
    import jaxlib
    (no_kernel / "libnerfkit_hashgrid_cpu.so").write_bytes(b"never loaded")
    (no_kernel / "nerfkit_hashgrid_build.txt").write_text("jaxlib 99.0.0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto") == "jax"
    msgs = _fallback_warnings(caught)
    assert len(msgs) == 1 and "jaxlib 99.0.0" in msgs[0] and jaxlib.__version__ in msgs[0], msgs
    assert "OSError" not in msgs[0]  # refused before loading


def test_switched_off_by_environment_is_silent(monkeypatch, fresh_warning):
    monkeypatch.setenv("NERFKIT_NO_KERNEL", "1")
    assert not ffi_backend.available()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto") == "jax"
    assert not _fallback_warnings(caught)
    with pytest.raises(ConfigError, match="NERFKIT_NO_KERNEL"):
        resolve_backend("ffi")


def test_auto_with_kernel_picks_it_silently(monkeypatch, fresh_warning):
    """The choice alone (the registration faked): auto and ffi give ffi, no warning."""
    monkeypatch.delenv("NERFKIT_NO_KERNEL", raising=False)
    monkeypatch.setattr(ffi_backend, "_registered", {"cpu": True, "cuda": True})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto") == "ffi"
        assert resolve_backend("ffi") == "ffi"
        assert resolve_backend("jax") == "jax"
    assert not _fallback_warnings(caught)


@pytest.mark.skipif(not REAL_KERNEL, reason="kernel not built (`pip install -e .` builds it)")
def test_auto_with_real_kernel_runs_it_with_jax_values(fresh_warning):
    enc = HashEncoding(CFG, "auto", rngs=nnx.Rngs(0))
    assert enc.backend == "ffi"
    t = jax.random.normal(jax.random.key(0), enc.tables[...].shape)  # unit scale: errors show
    enc.tables[...] = t
    x = jax.random.uniform(jax.random.key(1), (300, 3), minval=-0.1, maxval=1.1)
    out = jax.jit(lambda m, x: m(x))(enc, x)
    np.testing.assert_allclose(out, hash_encode_naive(t, x, CFG), rtol=1e-5, atol=1e-5)
    hlo = jax.jit(lambda m, x: m(x)).lower(enc, x).as_text()
    assert "nerfkit_hg_fwd" in hlo  # the kernel, not the pure-JAX path


def test_ngp_defaults_to_auto():
    from nerfkit.models.ngp import NGPConfig
    assert NGPConfig().backend == "auto"


def _save_run(run_dir: Path, backend: str, **model_kw):
    from nerfkit.engine.config import TrainConfig, save_train_config
    from nerfkit.models.ngp import NGPConfig
    run_dir.mkdir()
    cfg = TrainConfig(model=NGPConfig(backend=backend, **model_kw), output=run_dir)
    save_train_config(run_dir, cfg)
    return cfg


def test_saved_runs_load_with_any_backend(no_kernel, tmp_path):
    """Runs saved with backend jax / ffi / auto load where the kernel is absent; a saved ffi
    becomes auto (pure JAX here), a saved jax stays jax."""
    from nerfkit.engine.config import load_train_config
    for backend, expect in (("jax", "jax"), ("ffi", "auto"), ("auto", "auto")):
        _save_run(tmp_path / backend, backend)
        assert load_train_config(tmp_path / backend).model.backend == expect


def test_resume_ignores_the_backend_only(tmp_path):
    from nerfkit.engine.trainer import _check_resume_config
    cfg = _save_run(tmp_path / "run", "jax")
    for backend in ("auto", "ffi", "naive"):  # same parameters: fine
        _check_resume_config(tmp_path / "run",
                             dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                                                backend=backend)))
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hidden=32))
    with pytest.raises(ConfigError, match="hidden"):
        _check_resume_config(tmp_path / "run", other)


def test_hash_encoding_values_do_not_depend_on_the_choice(no_kernel):
    """The tables are initialised the same whatever the backend (checkpoints are portable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelFallbackWarning)
        a = HashEncoding(CFG, "auto", rngs=nnx.Rngs(3))
    b = HashEncoding(CFG, "naive", rngs=nnx.Rngs(3))
    assert jnp.array_equal(a.tables[...], b.tables[...])
