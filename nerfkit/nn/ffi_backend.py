"""The hash-grid encoding as a custom XLA kernel (``cuda_ext/``), called through ``jax.ffi``.

Instant-NGP's multiresolution hash encoding (Mueller et al., "Instant Neural Graphics Primitives
with a Multiresolution Hash Encoding", SIGGRAPH 2022; official code: NVlabs/tiny-cuda-nn's
``GridEncoding``), registered with XLA the way JAX's ``examples/ffi`` does.

The kernel is compiled by ``pip install`` (scikit-build-core + CMake, ``cuda_ext/CMakeLists.txt``)
into ``nerfkit/_ext/``: ``libnerfkit_hashgrid_cpu.so`` (C++ CPU handler, multithreaded on XLA's
intra-op pool) and, where nvcc was found, ``libnerfkit_hashgrid_cuda.so`` (used when JAX runs on
an NVIDIA GPU). It is loaded lazily, on the first model that asks for it. Searched, in order:
``$NERFKIT_FFI_LIB_DIR``, ``nerfkit/_ext/`` (wheels and editable installs), ``cuda_ext/build/``
of the checkout (``bash cuda_ext/build.sh``). ``NERFKIT_NO_KERNEL=1`` makes nerfkit behave as if
the kernel were not built.

Backends (``NGPConfig.backend``, CLI ``--model.backend``; :func:`resolve_backend`):

* ``auto`` (default): the kernel when it is built for the platform JAX runs on, else the pure-JAX
  :func:`nerfkit.core.hashgrid.hash_encode` (same values) with one warning per process;
* ``ffi``: the kernel, or a :class:`~nerfkit.errors.ConfigError` saying how to build it;
* ``jax`` / ``naive``: pure JAX (optimised / reference).

Semantics and layout are those of :mod:`nerfkit.core.hashgrid` (flat ``[total_entries, F]`` table,
points clamped to the unit cube, level-major ``[..., L*F]`` output). Three FFI targets:

* ``nerfkit_hg_fwd(tables [R, F], x [P, 3]) -> [P, L*F]``
* ``nerfkit_hg_bwd_tables(x [P, 3], g [P, L*F]) -> [R, F]`` (scatter-add; CUDA: atomicAdd)
* ``nerfkit_hg_bwd_x(tables, x [P, 3], g [P, L*F]) -> [P, 3]`` (derivative of the weights)

wrapped in one ``jax.custom_vjp`` that, like ``hash_encode``, only runs the backward kernels for
the inputs actually being differentiated (NGP training needs the tables' gradient only). The
clamp to the cube happens in JAX before the kernel, so the gradient wrt ``x`` outside the cube
(zero) and on its faces (``jnp.clip``'s) is exactly the oracle's. Second derivatives are not
supported (the backward kernels are not differentiable).

Batching: each kernel is a ``jax.custom_batching.custom_vmap``. Under ``vmap`` with shared tables
the batch is folded into the point axis (one kernel call); per-example tables, and the
per-example table gradients that ``vmap(grad(...))`` asks for, run one call per example
(``lax.map``). Under ``shard_map`` each device runs the kernel on its own points.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import warnings
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from nerfkit.core.hashgrid import HashGridConfig
from nerfkit.errors import ConfigError

_CPU_LIB = "libnerfkit_hashgrid_cpu.so"
_CUDA_LIB = "libnerfkit_hashgrid_cuda.so"
_TARGETS = {  # FFI target -> exported symbol stem (+ "Cpu" / "Cuda")
    "nerfkit_hg_fwd": "NerfkitHashGridFwd",
    "nerfkit_hg_bwd_tables": "NerfkitHashGridBwdTables",
    "nerfkit_hg_bwd_x": "NerfkitHashGridBwdX",
}
BACKENDS = ("auto", "ffi", "jax", "naive")
BUILD_HINT = ("it is compiled by `pip install` (needs g++ with C++20; `pip install -v -e .` shows "
              "why it failed), or by `bash cuda_ext/build.sh` in a checkout; "
              "NERFKIT_FFI_LIB_DIR can point at a folder holding " + _CPU_LIB)

_lock = threading.Lock()
_registered: Optional[dict[str, bool]] = None  # platform ("cpu", "cuda") -> handler registered
_load_errors: list[str] = []  # why a library that was found could not be registered
_warned = False


def lib_dirs() -> list[Path]:
    """Folders searched for the compiled extension, in order: ``$NERFKIT_FFI_LIB_DIR``, the
    package's ``nerfkit/_ext/`` (``pip install``), the checkout's ``cuda_ext/build/``
    (``bash cuda_ext/build.sh``)."""
    dirs = []
    if os.environ.get("NERFKIT_FFI_LIB_DIR"):
        dirs.append(Path(os.environ["NERFKIT_FFI_LIB_DIR"]))
    here = Path(__file__).resolve()
    dirs.append(here.parents[1] / "_ext")
    dirs.append(here.parents[2] / "cuda_ext" / "build")
    return dirs


def _disabled() -> bool:
    return os.environ.get("NERFKIT_NO_KERNEL", "").strip().lower() not in ("", "0", "false", "no")


def _find(name: str) -> Optional[Path]:
    for d in lib_dirs():
        if (d / name).is_file():
            return d / name
    return None


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


def _check_headers(lib: Path) -> None:
    """Raises if ``lib`` was compiled against a newer jaxlib's XLA FFI headers than the jaxlib
    running (``nerfkit_hashgrid_build.txt`` beside it, written by CMake; absent: not checked)."""
    info = lib.parent / "nerfkit_hashgrid_build.txt"
    if not info.is_file():
        return
    words = info.read_text().split()
    built = words[1] if len(words) > 1 and words[0] == "jaxlib" else "unknown"
    import jaxlib
    if built != "unknown" and _version(built) > _version(jaxlib.__version__):
        raise RuntimeError(f"compiled against jaxlib {built}'s XLA FFI headers, newer than the "
                           f"jaxlib {jaxlib.__version__} running; rebuild against it: "
                           "`pip install --no-build-isolation -e .` or `bash cuda_ext/build.sh`")


def _gpu_backend() -> bool:
    try:
        return jax.default_backend() == "gpu"
    except RuntimeError:
        return False


def _register() -> dict[str, bool]:
    """Loads the built libraries (once) and registers their handlers with XLA."""
    global _registered
    with _lock:
        if _registered is not None:
            return _registered
        done = {"cpu": False, "cuda": False}
        for platform, lib_name, xla_platform, suffix in (
                ("cpu", _CPU_LIB, "cpu", "Cpu"), ("cuda", _CUDA_LIB, "CUDA", "Cuda")):
            if platform == "cuda" and not _gpu_backend():
                continue  # CUDA handlers can only be registered where XLA runs on a GPU
            path = None if _disabled() else _find(lib_name)
            if path is None:
                continue
            try:  # a library built for another CPU, or against incompatible XLA FFI headers
                _check_headers(path)
                lib = ctypes.cdll.LoadLibrary(str(path))
                for target, stem in _TARGETS.items():
                    jax.ffi.register_ffi_target(
                        target, jax.ffi.pycapsule(getattr(lib, stem + suffix)),
                        platform=xla_platform)
            except Exception as e:  # noqa: BLE001 - reported by resolve_backend's message
                _load_errors.append(f"{path}: {type(e).__name__}: {e}")
                continue
            done[platform] = True
        _registered = done
        return done


def available(platform: Optional[str] = None) -> bool:
    """Whether the kernel is built and registered for ``platform`` ("cpu" or "cuda"; default:
    the platform JAX runs on)."""
    platform = platform or ("cuda" if _gpu_backend() else "cpu")
    return not _disabled() and _register().get(platform, False)


def _missing() -> str:
    """Why the kernel cannot be used on the platform JAX runs on (one sentence)."""
    plat = "an NVIDIA GPU" if _gpu_backend() else "the CPU"
    if _disabled():
        return f"the hash-grid kernel for {plat} is switched off (NERFKIT_NO_KERNEL is set)"
    why = (f"the hash-grid kernel for {plat} is not built (looked in "
           f"{', '.join(str(d) for d in lib_dirs())})")
    if _load_errors:
        why = f"the hash-grid kernel for {plat} could not be loaded ({'; '.join(_load_errors)})"
    return why


class KernelFallbackWarning(RuntimeWarning):
    """``--model.backend auto`` found no kernel and uses pure JAX (issued once per process)."""


def resolve_backend(backend: str) -> str:
    """The hash-encoding implementation a model asking for ``backend`` runs.

    Args:
      backend: ``auto``, ``ffi``, ``jax`` or ``naive`` (see the module docstring).
    Returns:
      ``"ffi"``, ``"jax"`` or ``"naive"``. ``auto`` gives ``"ffi"`` when the kernel is built for
      the platform JAX runs on, else ``"jax"`` and one :class:`KernelFallbackWarning` per process
      (none when ``NERFKIT_NO_KERNEL`` switched the kernel off on purpose).
    Raises:
      ConfigError: an unknown backend, or ``ffi`` without the kernel.
    """
    global _warned
    if backend not in BACKENDS:
        raise ConfigError(f"--model.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend in ("jax", "naive"):
        return backend
    if available():
        return "ffi"
    if backend == "ffi":
        raise ConfigError(f"--model.backend ffi: {_missing()}; {BUILD_HINT}. "
                          "--model.backend auto uses pure JAX instead (same results, slower).")
    if not _warned and not _disabled():
        _warned = True
        warnings.warn(f"nerfkit: {_missing()}; using the pure-JAX hash encoding (same results, "
                      f"slower). {BUILD_HINT[0].upper()}{BUILD_HINT[1:]}.",
                      KernelFallbackWarning, stacklevel=2)
    return "jax"


def _attrs(cfg: HashGridConfig) -> dict:
    return dict(resolutions=np.asarray(cfg.resolutions, np.int64),
                offsets=np.asarray(cfg.offsets, np.int64),
                table_sizes=np.asarray(cfg.table_sizes, np.int64),
                hashed=np.asarray(cfg.hashed, np.int64),
                log2_table_size=np.int64(cfg.log2_table_size))


# ---------------------------------------------------------------------------------------------
# The three kernels, each with a batching rule. Shapes: tables [R, F], x [P, 3], g [P, L*F].
# ---------------------------------------------------------------------------------------------

def _fold(a, batched, axis_size):
    """``[B, P, D] -> [B*P, D]`` (an unbatched ``[P, D]`` is broadcast first)."""
    if not batched:
        a = jnp.broadcast_to(a, (axis_size, *a.shape))
    return a.reshape(-1, a.shape[-1])


def _varying(a) -> frozenset:
    """Mesh axes along which ``a`` varies inside ``shard_map`` (empty outside)."""
    mat = getattr(jax.typeof(a), "manual_axis_type", None)
    return frozenset(getattr(mat, "varying", ()) or ())


def _match_varying(*args):
    """Casts the operands of one FFI call to the same varying mesh axes (inside ``shard_map``
    an FFI call needs them equal); the transpose of the cast is the psum of the gradient."""
    axes = frozenset().union(*(_varying(a) for a in args))
    return tuple(lax.pcast(a, tuple(sorted(axes - _varying(a))), to="varying")
                 if axes - _varying(a) else a for a in args)


def _result(shape, like):
    """Result type of an FFI call: float32, varying like its operands inside ``shard_map``."""
    aval = jax.typeof(like)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None and getattr(mat, "varying", None):
        mesh = aval.sharding.mesh
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding, manual_axis_type=mat)
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _ffi_fwd(tables, x, cfg):
    tables, x = _match_varying(tables, x)
    out = _result((x.shape[0], cfg.output_dim), x)
    return jax.ffi.ffi_call("nerfkit_hg_fwd", out)(tables, x, **_attrs(cfg))


def _ffi_bwd_tables(x, g, cfg):
    x, g = _match_varying(x, g)
    out = _result((cfg.total_entries, cfg.features_per_level), x)
    return jax.ffi.ffi_call("nerfkit_hg_bwd_tables", out)(x, g, **_attrs(cfg))


def _ffi_bwd_x(tables, x, g, cfg):
    tables, x, g = _match_varying(tables, x, g)
    out = _result(x.shape, x)
    return jax.ffi.ffi_call("nerfkit_hg_bwd_x", out)(tables, x, g, **_attrs(cfg))


@functools.lru_cache(maxsize=None)
def _kernels(cfg: HashGridConfig):
    """custom_vmap wrappers of the three FFI calls for one (hashable) grid config."""

    def batched(a, is_batched, axis_size):
        return a if is_batched else jnp.broadcast_to(a, (axis_size, *a.shape))

    @jax.custom_batching.custom_vmap
    def fwd(tables, x):
        return _ffi_fwd(tables, x, cfg)

    @fwd.def_vmap
    def _fwd_rule(axis_size, in_batched, tables, x):
        t_b, x_b = in_batched
        if t_b:  # one table set per example: one call each
            return lax.map(lambda a: fwd(*a), (tables, batched(x, x_b, axis_size))), True
        out = fwd(tables, _fold(x, x_b, axis_size))
        return out.reshape(axis_size, -1, out.shape[-1]), True

    @jax.custom_batching.custom_vmap
    def bwd_tables(x, g):
        return _ffi_bwd_tables(x, g, cfg)

    @bwd_tables.def_vmap
    def _bwd_tables_rule(axis_size, in_batched, x, g):
        # Per-example table gradients: one call per example.
        x_b, g_b = in_batched
        args = (batched(x, x_b, axis_size), batched(g, g_b, axis_size))
        return lax.map(lambda a: bwd_tables(*a), args), True

    @jax.custom_batching.custom_vmap
    def bwd_x(tables, x, g):
        return _ffi_bwd_x(tables, x, g, cfg)

    @bwd_x.def_vmap
    def _bwd_x_rule(axis_size, in_batched, tables, x, g):
        t_b, x_b, g_b = in_batched
        if t_b:
            args = (tables, batched(x, x_b, axis_size), batched(g, g_b, axis_size))
            return lax.map(lambda a: bwd_x(*a), args), True
        out = bwd_x(tables, _fold(x, x_b, axis_size), _fold(g, g_b, axis_size))
        return out.reshape(axis_size, -1, 3), True

    return fwd, bwd_tables, bwd_x


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _encode(tables, xf, cfg):
    return _kernels(cfg)[0](tables, xf)


def _encode_fwd(tables, xf, cfg):
    # symbolic_zeros=True: arguments arrive as CustomVJPPrimal(value, perturbed).
    out = _kernels(cfg)[0](tables.value, xf.value)
    res = (tables.value if xf.perturbed else None, xf.value, tables.perturbed)
    return out, res


def _encode_bwd(cfg, res, g):
    tables, xf, want_tables = res
    if isinstance(g, SymbolicZero):
        return None, None
    _, bwd_tables, bwd_x = _kernels(cfg)
    g = g.astype(jnp.float32)
    d_tables = bwd_tables(xf, g) if want_tables else None
    d_x = bwd_x(tables, xf, g) if tables is not None else None
    return d_tables, d_x


_encode.defvjp(_encode_fwd, _encode_bwd, symbolic_zeros=True)


def hash_encode_ffi(tables: jax.Array, x: jax.Array, cfg: HashGridConfig) -> jax.Array:
    """Multiresolution hash encoding by the ``cuda_ext`` kernel; same contract as
    :func:`nerfkit.core.hashgrid.hash_encode`.

    Args:
      tables: ``[cfg.total_entries, F]`` float32 feature tables.
      x: ``[..., 3]`` points, nominally in ``[0, 1]**3``; points outside are clamped to the cube.
    Returns:
      ``[..., L * F]`` float32 features, level-major. Differentiable wrt ``tables`` and ``x``
      (first order); works under ``jit``, ``vmap``, ``grad`` and ``shard_map``.

    Raises:
      ConfigError: the kernel is not built for the platform JAX runs on (see
        :func:`resolve_backend` for the choice that falls back to pure JAX).
    """
    if not available():
        raise ConfigError(f"hash_encode_ffi: {_missing()}; {BUILD_HINT}")
    if tables.dtype != jnp.float32:
        raise TypeError(f"the ffi hash-grid backend needs float32 tables, got {tables.dtype}")
    if tables.shape != (cfg.total_entries, cfg.features_per_level):
        raise ValueError(f"tables must be {(cfg.total_entries, cfg.features_per_level)} for this "
                         f"config, got {tables.shape}")
    batch = x.shape[:-1]
    xf = jnp.clip(x.reshape(-1, 3).astype(jnp.float32), 0.0, 1.0)
    # Inside shard_map with replicated tables and sharded points, make the tables "varying"
    # here, so that the gradient comes back as per-device partial sums that JAX psums.
    tables, xf = _match_varying(tables, xf)
    return _encode(tables, xf, cfg).reshape(*batch, cfg.output_dim)
