"""Multiresolution hash-grid encoding, pure JAX.

Reference: T. Müller, A. Evans, C. Schied, A. Keller, "Instant Neural Graphics Primitives with a
Multiresolution Hash Encoding", ACM Trans. Graph. 41(4) (SIGGRAPH 2022), §3.

Conventions (the paper's, made explicit):

* ``L`` levels, ``F`` features per level, table size ``T`` (``2**log2_table_size``), coarsest
  resolution ``N_min``, finest ``N_max``. Growth factor ``b = exp((ln N_max - ln N_min) / (L - 1))``
  (eq. 3) and level resolution ``N_l = floor(N_min * b**l)`` (eq. 2).
* Level ``l`` is a grid of ``N_l`` cells per axis over the unit cube, i.e. ``(N_l + 1)**3``
  vertices at integer coordinates ``0 .. N_l`` of ``x * N_l``. A level whose vertices fit the
  table (``(N_l + 1)**3 <= T``) is indexed directly (``i + j (N+1) + k (N+1)**2``, a 1:1 map);
  the others are hashed with ``(i * 1) ^ (j * 2654435761) ^ (k * 805459861) mod T`` in uint32
  arithmetic (eq. 4).
* Inputs ``x`` are meant to lie in ``[0, 1]**3`` (the caller normalises by the scene AABB). Points
  outside are **clamped to the cube** (they get the features of the nearest point of the cube and
  no gradient along the clamped coordinates). On the upper faces (``x == 1``) the cell index is
  clamped to ``N_l - 1`` with interpolation weight 1 on the last vertex, so no index ever leaves
  the table.
* Tables are stored as **one flat array** ``[sum_l table_sizes[l], F]``; level ``l`` occupies rows
  ``offsets[l] : offsets[l] + table_sizes[l]`` (no padding: coarse direct levels are small).
* The output is ``[..., L * F]``, level-major (features of level ``l`` at ``l*F : (l+1)*F``).

Two implementations with the same values (up to float rounding; the tests compare both against a
loop-based numpy reference):

* :func:`hash_encode_naive`: the straightforward one (per level, 8 corner gathers, trilinear
  weights, weighted sum; gradients by autodiff, i.e. XLA scatter-adds). This is the reference.
* :func:`hash_encode`: the optimised one for XLA:CPU (see its docstring for what it does and why).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

# Spatial-hash primes (paper, eq. 4). pi_1 = 1 keeps x-neighbours in the same cache line.
PRIMES = (1, 2654435761, 805459861)


@dataclass(frozen=True)
class HashGridConfig:
    """Hyper-parameters of the multiresolution hash encoding (paper, Table 1 defaults)."""

    num_levels: int = 16  # L
    features_per_level: int = 2  # F
    log2_table_size: int = 19  # log2 T
    base_resolution: int = 16  # N_min
    max_resolution: int = 2048  # N_max

    def __post_init__(self):
        if self.num_levels < 1 or self.features_per_level < 1:
            raise ValueError("num_levels and features_per_level must be >= 1")
        if not 1 <= self.base_resolution <= self.max_resolution:
            raise ValueError("need 1 <= base_resolution <= max_resolution")
        if not 1 <= self.log2_table_size <= 30:
            raise ValueError("log2_table_size must be in [1, 30]")

    @property
    def table_size(self) -> int:
        """T, the maximum number of entries per level."""
        return 1 << self.log2_table_size

    @property
    def growth_factor(self) -> float:
        """b = exp((ln N_max - ln N_min) / (L - 1)) (paper eq. 3); 1 for a single level."""
        if self.num_levels == 1:
            return 1.0
        return math.exp(
            (math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.num_levels - 1)
        )

    @property
    def resolutions(self) -> tuple[int, ...]:
        """N_l = floor(N_min * b**l) (paper eq. 2), one per level.

        A relative guard of 1e-9 is added before flooring so that float rounding cannot turn
        e.g. 2048 into 2047 (``16 * b**15`` evaluates to 2048.000000000003 or 2047.99999...).
        """
        b = self.growth_factor
        return tuple(
            int(math.floor(self.base_resolution * b**l * (1.0 + 1e-9)))
            for l in range(self.num_levels)
        )

    @property
    def table_sizes(self) -> tuple[int, ...]:
        """Rows of level l: min(T, (N_l + 1)**3) (direct indexing when the vertices fit)."""
        return tuple(min(self.table_size, (n + 1) ** 3) for n in self.resolutions)

    @property
    def hashed(self) -> tuple[bool, ...]:
        """Whether level l is hashed (True) or directly indexed (False)."""
        return tuple((n + 1) ** 3 > self.table_size for n in self.resolutions)

    @property
    def offsets(self) -> tuple[int, ...]:
        """First row of level l in the flat table."""
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.table_sizes)[:-1]]))

    @property
    def total_entries(self) -> int:
        """Rows of the flat table, sum_l table_sizes[l]."""
        return int(sum(self.table_sizes))

    @property
    def output_dim(self) -> int:
        """L * F."""
        return self.num_levels * self.features_per_level


def init_hash_tables(key: jax.Array, cfg: HashGridConfig, dtype=jnp.float32) -> jax.Array:
    """Initial feature tables ``[cfg.total_entries, F]``, uniform in (-1e-4, 1e-4) (paper §4)."""
    return jax.random.uniform(
        key, (cfg.total_entries, cfg.features_per_level), dtype, minval=-1e-4, maxval=1e-4
    )


def _level_index(c: jax.Array, n: int, size: int, hashed: bool) -> jax.Array:
    """Row (within a level) of integer vertex coordinates ``c[..., 3]`` (int32, in [0, n])."""
    if not hashed:  # 1:1 map, (n+1)**3 <= T so it fits int32
        return c[..., 0] + c[..., 1] * (n + 1) + c[..., 2] * ((n + 1) * (n + 1))
    cu = c.astype(jnp.uint32)
    h = cu[..., 0] * jnp.uint32(PRIMES[0])
    h = h ^ (cu[..., 1] * jnp.uint32(PRIMES[1]))
    h = h ^ (cu[..., 2] * jnp.uint32(PRIMES[2]))
    h = h & jnp.uint32(size - 1) if size & (size - 1) == 0 else h % jnp.uint32(size)
    return h.astype(jnp.int32)


def hash_encode_naive(tables: jax.Array, x: jax.Array, cfg: HashGridConfig) -> jax.Array:
    """Straightforward multiresolution hash encoding (the reference implementation).

    Args:
      tables: ``[cfg.total_entries, F]`` flat feature tables (see :func:`init_hash_tables`).
      x: ``[..., 3]`` points, nominally in ``[0, 1]**3``; points outside are clamped to the cube.
    Returns:
      ``[..., L * F]`` features (dtype of ``tables``), level-major. Gradients (tables and x) come
      from JAX autodiff.
    """
    x = jnp.clip(x.astype(tables.dtype), 0.0, 1.0)
    outs = []
    for n, size, off, hashed in zip(cfg.resolutions, cfg.table_sizes, cfg.offsets, cfg.hashed):
        pos = x * n
        c0 = jnp.minimum(jnp.floor(pos), n - 1)  # x == 1 -> last cell, weight 1 on vertex n
        frac = pos - c0
        c0 = c0.astype(jnp.int32)
        feat = 0.0
        for corner in range(8):
            bits = np.array([(corner >> d) & 1 for d in range(3)], np.int32)
            w = jnp.prod(jnp.where(bits == 1, frac, 1.0 - frac), axis=-1)
            idx = _level_index(c0 + bits, n, size, hashed) + off
            feat = feat + w[..., None] * tables[idx]
        outs.append(feat)
    return jnp.concatenate(outs, axis=-1)


# ---------------------------------------------------------------------------------------------
# Optimised implementation for XLA:CPU.
# ---------------------------------------------------------------------------------------------

_MODE = lax.GatherScatterMode.PROMISE_IN_BOUNDS  # indices are in range by construction
# Row gather: operand [M, F], indices [N, 1] -> [N, F].
_GATHER_ROWS = lax.GatherDimensionNumbers(
    offset_dims=(1,), collapsed_slice_dims=(0,), start_index_map=(0,)
)
# Row scatter in XLA's canonical form (indices [N, 1], updates [N, 1, F]); other forms make XLA
# insert layout-changing copies of the (large) index and update arrays before the scatter.
_SCATTER_ROWS = lax.ScatterDimensionNumbers(
    update_window_dims=(1, 2), inserted_window_dims=(), scatter_dims_to_operand_dims=(0,)
)


def _level_runs(cfg: HashGridConfig) -> list[tuple[int, int, bool]]:
    """Maximal runs ``(l0, l1, hashed)`` of consecutive levels with the same indexing mode."""
    runs, l0, hashed = [], 0, cfg.hashed
    for l in range(1, cfg.num_levels + 1):
        if l == cfg.num_levels or hashed[l] != hashed[l0]:
            runs.append((l0, l, hashed[l0]))
            l0 = l
    return runs


def _level_constants(cfg: HashGridConfig):
    """Per-level constants as arrays, so one loop body serves all levels of a run."""
    mult = [PRIMES if h else (1, n + 1, (n + 1) ** 2) for n, h in zip(cfg.resolutions, cfg.hashed)]
    return (
        jnp.asarray(np.array(cfg.resolutions, np.float32)),  # [L] N_l
        jnp.asarray(np.array(mult, np.uint64).astype(np.uint32)),  # [L, 3] per-axis multipliers
        jnp.asarray(np.array(cfg.offsets, np.int32)),  # [L] first row of the level
    )


def _cell_base(xf, l, consts):
    """Per-point terms of level ``l`` (may be traced): ``lo [P, 3]`` uint32 = lower cell corner
    times the per-axis multiplier, ``frac [P, 3]`` position inside the cell.

    ``xf`` holds points already clamped to ``[0, 1]``; ``x == 1`` lands in the last cell with
    ``frac == 1`` so no vertex index exceeds ``N_l``.
    """
    res, mult, _ = consts
    n = res[l]
    pos = xf * n
    c0 = jnp.minimum(jnp.floor(pos), n - 1.0)
    return c0.astype(jnp.uint32) * mult[l], pos - c0


def _corner_rows(lo, frac, l, hashed: bool, consts, cfg: HashGridConfig):
    """Rows ``idx [P, 8]`` (int32, into the flat table) and trilinear weights ``w [P, 8]``.

    Corner ``c = bx + 2 by + 4 bz``. The corners come from broadcasting against an iota (no
    concatenation, which XLA would turn into per-element selects); the vertex term of axis ``d``
    is ``(c0_d + b_d) * m_d = lo_d + b_d * m_d`` in wrapping uint32 arithmetic, as in the paper.
    """
    _, mult, offs = consts
    m = mult[l]
    p = lo.shape[0]
    shapes = [(p, 1, 1, 2), (p, 1, 2, 1), (p, 2, 1, 1)]  # x varies fastest
    terms, ws = [], []
    for d in range(3):
        bit = lax.broadcasted_iota(jnp.uint32, shapes[d], 3 - d)
        terms.append(lo[:, d].reshape(p, 1, 1, 1) + bit * m[d])
        f = frac[:, d].reshape(p, 1, 1, 1)
        ws.append(jnp.where(bit == 1, f, 1.0 - f))
    if hashed:
        t = cfg.table_size
        h = terms[0] ^ terms[1] ^ terms[2]
        h = h & jnp.uint32(t - 1) if t & (t - 1) == 0 else h % jnp.uint32(t)
    else:
        h = terms[0] + terms[1] + terms[2]  # < (N+1)**3 <= T: fits
    idx = h.astype(jnp.int32).reshape(p, 8) + offs[l]
    w = (ws[0] * ws[1] * ws[2]).reshape(p, 8)
    return idx, w


def _gather_rows(tables, idx):
    """``tables[idx]`` for int32 ``idx [N]`` -> ``[N, F]``, without bounds handling."""
    return lax.gather(tables, idx[:, None], _GATHER_ROWS, (1, tables.shape[1]), mode=_MODE)


def _encode_levels(tables, xf, cfg: HashGridConfig):
    """Forward: ``[L, P, F]`` features, one level at a time (level-major)."""
    consts = _level_constants(cfg)
    p, f = xf.shape[0], cfg.features_per_level
    out = jnp.zeros((cfg.num_levels, p, f), tables.dtype)
    for l0, l1, hashed in _level_runs(cfg):

        def body(l, out, hashed=hashed):
            idx, w = _corner_rows(*_cell_base(xf, l, consts), l, hashed, consts, cfg)
            feat = 0.0
            for c in range(8):  # unrolled: XLA fuses the 8 gathers and the weighted sum
                feat = feat + w[:, c, None] * _gather_rows(tables, idx[:, c])
            return lax.dynamic_update_index_in_dim(out, feat.astype(out.dtype), l, 0)

        out = lax.fori_loop(l0, l1, body, out)
    return out


def _encode_flat(tables, xf, cfg):
    p = xf.shape[0]
    return jnp.transpose(_encode_levels(tables, xf, cfg), (1, 0, 2)).reshape(p, cfg.output_dim)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _hash_encode_core(tables, xf, cfg):
    return _encode_flat(tables, xf, cfg)


def _hash_encode_core_fwd(tables, xf, cfg):
    # symbolic_zeros=True: each argument arrives as CustomVJPPrimal(value, perturbed), so the
    # backward pass only does the work for the inputs that are actually differentiated (the
    # x-gradient costs another round of gathers; NeRF training only needs the tables').
    out = _encode_flat(tables.value, xf.value, cfg)
    want_tables = jnp.zeros((0,), tables.value.dtype) if tables.perturbed else None
    res = (tables.value if xf.perturbed else None, xf.value, want_tables)
    return out, res


def _hash_encode_core_bwd(cfg, res, g):
    tables, xf, want_tables = res
    if isinstance(g, SymbolicZero):
        return None, None
    consts = _level_constants(cfg)
    p, f, nl = xf.shape[0], cfg.features_per_level, cfg.num_levels
    d_tables = d_x = None
    if want_tables is not None:
        d_tables = jnp.zeros((cfg.total_entries, f), xf.dtype)
        for l0, l1, hashed in _level_runs(cfg):

            def body(l, carry, hashed=hashed):
                acc, lo, frac = carry
                g_l = lax.dynamic_slice_in_dim(g, l * f, f, axis=1)  # [P, F] (strided read)
                idx, w = _corner_rows(lo, frac, l, hashed, consts, cfg)
                upd = (w[:, :, None] * g_l[:, None, :]).reshape(p * 8, 1, f)
                acc = lax.scatter_add(acc, idx.reshape(p * 8, 1), upd, _SCATTER_ROWS, mode=_MODE)
                # The next level's per-point terms travel in the loop carry: that materialises
                # them once per point, instead of XLA re-deriving them inside the fused index and
                # update loops for each of the 8 corners (and F features): ~20% less CPU time.
                return (acc, *_cell_base(xf, jnp.minimum(l + 1, nl - 1), consts))

            carry = (d_tables, *_cell_base(xf, l0, consts))
            d_tables = lax.fori_loop(l0, l1, body, carry)[0]
    if tables is not None:
        d_x = jnp.zeros_like(xf)
        for l0, l1, hashed in _level_runs(cfg):

            def body(l, acc, hashed=hashed):
                lo, frac = _cell_base(xf, l, consts)
                idx, _ = _corner_rows(lo, frac, l, hashed, consts, cfg)
                g_l = lax.dynamic_slice_in_dim(g, l * f, f, axis=1)
                # gv[p, c] = <g_l[p], v_c[p]>: the cotangent reaching each corner's features.
                # One [P, 8, F] gather and a batched dot, so that the corner values are fetched
                # once (fused into the 3 derivative columns, XLA would gather them 3 times).
                vals = _gather_rows(tables, idx.reshape(-1)).reshape(p, 8, f)
                gv = jnp.einsum("pcf,pf->pc", vals, g_l)
                gv = [gv[:, c] for c in range(8)]
                one = [(1.0 - frac[:, d], frac[:, d]) for d in range(3)]
                cols = []
                for d in range(3):  # d w_c / d frac_d = +-1 times the other two axes' weights
                    col = 0.0
                    for c in range(8):
                        bits = [(c >> k) & 1 for k in range(3)]
                        wc = gv[c] if bits[d] else -gv[c]
                        for k in range(3):
                            if k != d:
                                wc = wc * one[k][bits[k]]
                        col = col + wc
                    cols.append(col)
                return acc + consts[0][l] * jnp.stack(cols, -1)  # d frac / d x = N_l

            d_x = lax.fori_loop(l0, l1, body, d_x)
    return d_tables, d_x


_hash_encode_core.defvjp(_hash_encode_core_fwd, _hash_encode_core_bwd, symbolic_zeros=True)


def hash_encode(tables: jax.Array, x: jax.Array, cfg: HashGridConfig) -> jax.Array:
    """Multiresolution hash encoding tuned for XLA:CPU; same values as :func:`hash_encode_naive`.

    Args:
      tables: ``[cfg.total_entries, F]`` flat feature tables (see :func:`init_hash_tables`).
      x: ``[..., 3]`` points, nominally in ``[0, 1]**3``; points outside are clamped to the cube
        (zero spatial gradient there; exactly on a face the clamp passes half the gradient, as
        ``jnp.clip`` does in the naive version).
    Returns:
      ``[..., L * F]`` features, level-major.

    What makes it fast on XLA:CPU (profiled with perf and XLA dumps on the 2-core Zen 5 box; see
    ``benchmarks/hashgrid.py`` for the numbers):

    * **Level-major order.** All points go through one level before the next, so the working
      set is one level's table (4 MiB at T = 2**19, L3-resident); the naive version's single
      fused point-major loop touches all 16 tables (48 MiB) for every point.
    * **A loop over levels** (one ``fori_loop`` per run of direct / hashed levels) instead of 16
      unrolled copies. With the unrolled form, XLA:CPU's scheduler hoists every level's index
      and update arrays to the start of the program; the resulting 416 MiB temp buffer is
      freshly mapped, hence page-faulted, on every call (over a third of the run time was
      kernel page-fault handling). The loop keeps one level's temporaries alive and compiles
      ~5x faster.
    * **Hand-written VJP** (``jax.custom_vjp``, symbolic zeros): the backward pass recomputes
      rows and weights from ``x`` (cheaper than storing 2 x 128 MiB of residuals) and adds each
      level into the flat gradient with one scatter-add of ``P * 8`` rows in XLA's canonical
      form, in place in the loop carry. The next level's per-point terms ride in the loop carry
      so they are computed once per point rather than per corner and feature inside the fused
      loops. The x-gradient (analytic derivative of the trilinear weights, one more round of
      gathers) is only computed when ``x`` is being differentiated.
    * No bounds handling (``PROMISE_IN_BOUNDS``: rows are in range by construction) and the 8
      corners generated by broadcasting instead of concatenation, so XLA's fused gather loop is
      ~100 scalar instructions per point and level with the hash computed once.

    What stays: random gathers (forward) and XLA:CPU's scatter-add, a serial loop at ~2.5 ns per
    row on one core (backward), and the 48 MiB gradient buffer, freshly page-faulted per call.

    Being a ``custom_vjp``, it supports reverse mode (``grad``, ``vjp``) and ``vmap`` but not
    forward mode (``jvp``, ``jacfwd``, ``hessian``); use :func:`hash_encode_naive` for those.
    """
    batch = x.shape[:-1]
    xf = jnp.clip(x.reshape(-1, 3).astype(tables.dtype), 0.0, 1.0)
    return _hash_encode_core(tables, xf, cfg).reshape(*batch, cfg.output_dim)
