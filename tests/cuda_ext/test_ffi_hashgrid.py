"""The cuda_ext hash-grid kernel (XLA FFI) against the pure-JAX oracle.

The kernel tests run the handler of the platform JAX runs on: the CPU handler here and in CI, the
CUDA handler on a GPU machine (where the oracle runs on the GPU too). They need the extension
built (``pip install -e .`` compiles it; or ``bash cuda_ext/build.sh``) and skip without it,
unless ``NERFKIT_REQUIRE_FFI=1`` (CI), which turns a missing build into a failure. Without a GPU the CUDA handler is only compiled
(nvcc, no GPU needed); that check skips when nvcc is absent.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nerfkit.core.hashgrid import HashGridConfig, hash_encode, hash_encode_naive
from nerfkit.nn import ffi_backend
from nerfkit.nn.ffi_backend import hash_encode_ffi

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = "cuda" if jax.default_backend() == "gpu" else "cpu"  # the handler under test
BUILT = ffi_backend.available(PLATFORM)
if not BUILT and os.environ.get("NERFKIT_REQUIRE_FFI"):
    raise RuntimeError(f"NERFKIT_REQUIRE_FFI is set but the cuda_ext {PLATFORM} kernel is not "
                       f"available: {ffi_backend._missing()}; {ffi_backend.BUILD_HINT}")
needs_kernel = pytest.mark.skipif(
    not BUILT, reason=f"cuda_ext {PLATFORM} kernel not built (`pip install -e .` builds it)")
needs_cpu_kernel = pytest.mark.skipif(
    not ffi_backend.available("cpu"),
    reason="cuda_ext CPU kernel not built (`pip install -e .` builds it)")

# Direct and hashed levels (and a run of each); F = 2 (the NGP default), 4 and an odd width
# (the generic path); a single level; F = 2 with a multiple of 8 levels and tables larger than
# L2 (the CPU handler's AVX-512 transposes and table warm-up / prefetch paths).
CONFIGS = [
    HashGridConfig(num_levels=6, features_per_level=2, log2_table_size=12, base_resolution=4,
                   max_resolution=64),
    HashGridConfig(num_levels=8, features_per_level=2, log2_table_size=16, base_resolution=8,
                   max_resolution=256),
    HashGridConfig(num_levels=4, features_per_level=4, log2_table_size=10, base_resolution=2,
                   max_resolution=40),
    HashGridConfig(num_levels=3, features_per_level=3, log2_table_size=9, base_resolution=5,
                   max_resolution=30),
    HashGridConfig(num_levels=1, features_per_level=1, log2_table_size=8, base_resolution=7,
                   max_resolution=7),
]
IDS = [f"L{c.num_levels}F{c.features_per_level}T{c.log2_table_size}" for c in CONFIGS]
TOL = dict(rtol=1e-5, atol=1e-5)


def _tables(cfg, seed=0):
    # Unit-scale values (not the 1e-4 init) so that a wrong corner or weight shows.
    return jax.random.normal(jax.random.key(seed), (cfg.total_entries, cfg.features_per_level))


def _points(n=517, seed=1):
    """Random points inside, on the faces and edges, at the corners and outside the unit cube
    (n not a multiple of the kernel's block sizes)."""
    rng = np.random.default_rng(seed)
    inside = rng.uniform(0.0, 1.0, (n, 3))
    faces = rng.uniform(0.0, 1.0, (60, 3))
    faces[np.arange(60), np.arange(60) % 3] = np.arange(60) % 2  # x, y or z in {0, 1}
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    outside = rng.uniform(-0.5, 1.5, (80, 3))
    return jnp.asarray(np.concatenate([inside, faces, corners, outside]), jnp.float32)


def test_cfgs_cover_direct_and_hashed_levels():
    assert any(not h for h in CONFIGS[0].hashed) and any(CONFIGS[0].hashed)
    assert any(not h for h in CONFIGS[1].hashed) and any(CONFIGS[1].hashed)
    assert any(CONFIGS[2].hashed) and any(CONFIGS[3].hashed)


@needs_kernel
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_forward_matches_oracle(cfg):
    t, x = _tables(cfg), _points()
    ref = hash_encode_naive(t, x, cfg)
    out = jax.jit(hash_encode_ffi, static_argnums=2)(t, x, cfg)
    assert out.shape == (x.shape[0], cfg.output_dim) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, **TOL)
    # Outside the cube: the features of the nearest point of the cube.
    np.testing.assert_allclose(out, hash_encode_naive(t, jnp.clip(x, 0, 1), cfg), **TOL)


@needs_kernel
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_gradients_match_oracle(cfg):
    t, x = _tables(cfg), _points()
    cot = jax.random.normal(jax.random.key(3), (x.shape[0], cfg.output_dim))
    loss = lambda enc: (lambda t, x: jnp.vdot(enc(t, x, cfg), cot))
    gt_ref, gx_ref = jax.grad(loss(hash_encode_naive), (0, 1))(t, x)
    gt, gx = jax.jit(jax.grad(loss(hash_encode_ffi), (0, 1)))(t, x)
    np.testing.assert_allclose(gt, gt_ref, rtol=1e-5, atol=1e-4)
    # d/dx scales with N_l (up to 64 here): compare relative to the gradient's size.
    scale = float(jnp.max(jnp.abs(gx_ref)))
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5 * scale)
    outside = (np.asarray(x) < 0) | (np.asarray(x) > 1)  # per axis: clamped, zero gradient
    assert outside.any() and np.all(np.asarray(gx)[outside] == 0.0)
    # Only the tables (what NeRF training asks for) and only x.
    np.testing.assert_allclose(jax.jit(jax.grad(loss(hash_encode_ffi)))(t, x), gt_ref,
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(jax.jit(jax.grad(loss(hash_encode_ffi), 1))(t, x), gx, rtol=1e-6)


@needs_kernel
def test_same_values_as_optimised_jax_and_leading_dims():
    cfg = CONFIGS[0]
    t = _tables(cfg)
    x = jax.random.uniform(jax.random.key(5), (3, 7, 11, 3))
    out = hash_encode_ffi(t, x, cfg)
    assert out.shape == (3, 7, 11, cfg.output_dim)
    np.testing.assert_allclose(out, hash_encode(t, x, cfg), **TOL)
    assert hash_encode_ffi(t, jnp.zeros((0, 3)), cfg).shape == (0, cfg.output_dim)


@needs_kernel
def test_vmap_and_grad_compositions():
    cfg = CONFIGS[0]
    t = _tables(cfg)
    xs = jax.random.uniform(jax.random.key(6), (4, 33, 3), minval=-0.1, maxval=1.1)
    # Reference: the optimised pure-JAX encoding (checked against the naive oracle in
    # tests/core/test_hashgrid.py, and above for this kernel); it compiles 5x faster.
    ref = lambda t, x: hash_encode(t, x, cfg)
    ffi = lambda t, x: hash_encode_ffi(t, x, cfg)

    def check(transform, *args):
        np.testing.assert_allclose(jax.jit(transform(ffi))(*args), jax.jit(transform(ref))(*args),
                                   **TOL)

    check(lambda f: jax.vmap(f, (None, 0)), t, xs)  # shared tables: one kernel call
    ts = jnp.stack([t, 2.0 * t, -t, t + 1.0])  # per-example tables: one call each
    check(lambda f: jax.vmap(f, (0, None)), ts, xs[0])
    check(jax.vmap, ts, xs)
    check(lambda f: jax.vmap(jax.vmap(f, (None, 0)), (None, 0)), t, xs[:, :, None])
    # grad of vmap, and per-example gradients (vmap of grad), wrt tables and points.
    loss = lambda enc: (lambda t, x: jnp.sum(jnp.sin(enc(t, x))))
    g_of_v = lambda enc: jax.jit(jax.grad(
        lambda t, x: jnp.sum(jax.vmap(loss(enc), (None, 0))(t, x)), (0, 1)))
    v_of_g = lambda enc: jax.jit(jax.vmap(jax.grad(loss(enc), (0, 1)), (None, 0)))
    for make in (g_of_v, v_of_g):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
                     make(ffi)(t, xs), make(ref)(t, xs))


@needs_kernel
def test_bad_inputs_raise():
    cfg = CONFIGS[0]
    with pytest.raises(ValueError, match="tables must be"):
        hash_encode_ffi(jnp.zeros((10, 2)), jnp.zeros((4, 3)), cfg)
    with pytest.raises(TypeError, match="float32"):
        hash_encode_ffi(_tables(cfg).astype(jnp.bfloat16), jnp.zeros((4, 3)), cfg)


@needs_cpu_kernel
def test_inside_shard_map_two_devices():
    """Sharded points, replicated tables: each device runs the kernel on its own points (two
    host-platform CPU devices, also on a GPU machine, which has one GPU)."""
    code = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, PartitionSpec as P
        from nerfkit.core.hashgrid import HashGridConfig, hash_encode_naive
        from nerfkit.nn.ffi_backend import hash_encode_ffi, available
        assert available("cpu") and len(jax.devices()) == 2
        cfg = HashGridConfig(num_levels=5, log2_table_size=11, base_resolution=4, max_resolution=64)
        t = jax.random.normal(jax.random.key(0), (cfg.total_entries, 2))
        x = jax.random.uniform(jax.random.key(1), (256, 3), minval=-0.1, maxval=1.1)
        mesh = Mesh(np.array(jax.devices()), ("d",))
        def loss(enc):
            def local(t, x):
                return jax.lax.psum(jnp.sum(jnp.sin(enc(t, x, cfg))), "d")
            return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("d")), out_specs=P())
        f = jax.jit(jax.value_and_grad(loss(hash_encode_ffi), (0, 1)))
        (v, (gt, gx)) = f(t, x)
        v_ref, (gt_ref, gx_ref) = jax.jit(jax.value_and_grad(loss(hash_encode_naive), (0, 1)))(t, x)
        np.testing.assert_allclose(v, v_ref, rtol=1e-5)
        np.testing.assert_allclose(gt, gt_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-3)
        hlo = f.lower(t, x).compile().as_text()
        assert "nerfkit_hg_fwd" in hlo and "all-gather" not in hlo, "points were gathered"
        print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


@needs_kernel
def test_ngp_training_same_loss_curve_with_kernel():
    """A few NGP train steps (small config, tiny generated scene): the kernel's loss curve is the
    pure-JAX one within float32 tolerance (full float32 matmuls, so that a GPU's TF32 rounding
    does not blur the comparison)."""
    from nerfkit.core.cameras import make_cameras
    from nerfkit.data import synthetic
    from nerfkit.data.raysource import PixelSource
    from nerfkit.data.scene import Scene
    from nerfkit.engine.trainer import make_train_step
    from nerfkit.engine.run import init_state
    from nerfkit.models.ngp import NGPConfig

    res, n_views = 20, 3
    c2w, _ = synthetic.camera_poses(n_views, 0)
    rgba = np.stack([synthetic.render_view(c, res, supersample=1) for c in c2w])
    focal = 0.5 * res / math.tan(0.5 * synthetic.CAMERA_ANGLE_X)
    scene = Scene(images=rgba[..., :3], alphas=rgba[..., 3:], names=[str(i) for i in range(n_views)],
                  cameras=make_cameras(c2w, focal, focal, res, res), near=2.0, far=6.0)
    losses = {}
    for backend in ("jax", "ffi"):
        cfg = NGPConfig(levels=4, log2_table_size=10, max_resolution=64, hidden=16,
                        occupancy_resolution=8, march_steps=32, num_samples=8, eval_samples=8,
                        batch_size=256, occupancy_every=2, occupancy_warmup=2, backend=backend)
        graphdef, state, tx = init_state(cfg, scene, seed=0)
        source = PixelSource(scene, cfg.background)
        step = make_train_step(graphdef, tx, source, cfg.batch_size, skip_nonfinite=False)
        curve = []
        with jax.default_matmul_precision("float32"):
            for i in range(6):
                state, aux = step(state, source.data, jax.random.fold_in(jax.random.key(0), i),
                                  jnp.float32(cfg.lr_init))
                curve.append(float(aux["loss"]))
        losses[backend] = np.array(curve)
    assert np.all(np.isfinite(losses["ffi"]))
    assert losses["jax"][-1] < losses["jax"][0]  # it learns
    np.testing.assert_allclose(losses["ffi"], losses["jax"], rtol=2e-3, atol=1e-5)


def test_without_kernel_hash_encode_ffi_raises(monkeypatch):
    """Without a built kernel, calling it directly is a clear error saying how to build it (the
    ``auto`` backend's fallback is tested in tests/nn/test_backend_choice.py)."""
    from nerfkit.errors import ConfigError
    monkeypatch.setattr(ffi_backend, "_registered", {"cpu": False, "cuda": False})
    cfg = CONFIGS[0]
    with pytest.raises(ConfigError, match="not built.*pip install"):
        hash_encode_ffi(_tables(cfg), _points(), cfg)


def test_library_search_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NERFKIT_FFI_LIB_DIR", str(tmp_path))
    dirs = ffi_backend.lib_dirs()
    assert dirs == [tmp_path, ROOT / "nerfkit" / "_ext", ROOT / "cuda_ext" / "build"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found: CUDA handler not checked")
def test_cuda_handler_compiles(tmp_path):
    """Compile-only check of the CUDA handler (one architecture, to keep it short)."""
    src = ROOT / "cuda_ext" / "src" / "hashgrid_cuda.cu"
    cmd = ["nvcc", "-std=c++17", "-O3", "-arch=sm_90", "-Xcompiler", "-fPIC",
           "-isystem", jax.ffi.include_dir(), "-c", str(src), "-o", str(tmp_path / "hg.o")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    syms = subprocess.run(["nm", str(tmp_path / "hg.o")], capture_output=True, text=True).stdout
    for name in ("NerfkitHashGridFwdCuda", "NerfkitHashGridBwdTablesCuda", "NerfkitHashGridBwdXCuda"):
        assert f" T {name}" in syms, f"{name} not exported"
