"""The multiresolution hash encoding as a Flax NNX module, over the pure-JAX reference
(:mod:`nerfkit.core.hashgrid`) or the XLA FFI kernel that ``pip install`` compiles
(:mod:`nerfkit.nn.ffi_backend`; Mueller et al., Instant-NGP, SIGGRAPH 2022)."""

from __future__ import annotations

import jax
from flax import nnx

from nerfkit.core import hashgrid
from nerfkit.core.sharding import local_map


class HashEncoding(nnx.Module):
    """The hash-grid encoding as a module: ``x [..., 3]`` in ``[0, 1]^3`` -> ``[..., L*F]``.

    ``backend`` is ``auto`` (the kernel when it is built, else pure JAX with one warning per
    process), ``ffi`` (the kernel; a ConfigError without it), ``jax`` or ``naive``; the one that
    runs is ``self.backend`` (resolved here, by :func:`nerfkit.nn.ffi_backend.resolve_backend`).
    All give the same values; the tables ``[total_entries, F]`` do not depend on it.
    """

    def __init__(self, cfg: hashgrid.HashGridConfig, backend: str = "auto", *, rngs: nnx.Rngs):
        from nerfkit.nn.ffi_backend import resolve_backend
        self.cfg = cfg
        self.backend = resolve_backend(backend)
        self.tables = nnx.Param(hashgrid.init_hash_tables(rngs.params(), cfg))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.backend == "naive":
            return hashgrid.hash_encode_naive(self.tables[...], x, self.cfg)
        if self.backend == "ffi":
            from nerfkit.nn.ffi_backend import hash_encode_ffi
            # XLA cannot split a custom call: on a multi-device mesh each device runs the
            # kernel on its own points (replicated tables, summed table gradients).
            return local_map(lambda xs, t: hash_encode_ffi(t, xs, self.cfg), x,
                             self.tables[...])
        return hashgrid.hash_encode(self.tables[...], x, self.cfg)
