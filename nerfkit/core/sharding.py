"""Data-parallel sharding hints: where a batch of rays or points may be split across devices.

The engine traces the train step and the renderer under a one-axis device mesh (axis
:data:`DATA_AXIS`, see :mod:`nerfkit.engine.distributed`); parameters stay replicated and XLA's
SPMD partitioner splits the computation along the batches marked here. Outside such a mesh, or on
a mesh of one device, every function here returns its input unchanged, so single-device code traces
to exactly the same program.

* :func:`shard_batch` marks the leading (batch) axis of every leaf of a pytree as split along
  ``data`` (``jax.lax.with_sharding_constraint``): rays, sample points, packed sub-batches.
* :func:`local_map` runs a function that XLA cannot partition itself (an FFI custom call) inside
  ``jax.shard_map`` on each device's share of the batch; replicated operands stay whole.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

#: Name of the mesh axis that batches are split along.
DATA_AXIS = "data"


def data_shards() -> int:
    """Number of devices along :data:`DATA_AXIS` of the mesh in context (1 without one)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return 1
    return int(dict(mesh.shape)[DATA_AXIS])


def shard_batch(tree: Any) -> Any:
    """Constrains the leading axis of every array leaf of ``tree`` ``[B, ...]`` to be split along
    :data:`DATA_AXIS` (identity with one shard or no mesh; ``B`` need not divide evenly)."""
    if data_shards() == 1:
        return tree

    def constrain(x):
        if not hasattr(x, "ndim") or x.ndim == 0:
            return x
        return jax.lax.with_sharding_constraint(x, P(DATA_AXIS))

    return jax.tree_util.tree_map(constrain, tree)


def local_map(fn: Callable[..., jax.Array], batched: Any, *replicated: Any) -> jax.Array:
    """``fn(batched, *replicated)`` with ``batched [N, ...]`` split along :data:`DATA_AXIS`: each
    device calls ``fn`` on its ``ceil(N / shards)`` rows (the last padded with copies of row 0,
    dropped afterwards) and the replicated operands; the result ``[N, ...]`` is split likewise.

    ``fn`` must act row by row on ``batched`` (row ``i`` of the result depends on row ``i`` only),
    which is what makes the split exact. Gradients wrt the replicated operands come back summed
    over devices (``shard_map``'s transpose). Without a multi-device mesh: plain ``fn(...)``.
    """
    shards = data_shards()
    if shards == 1:
        return fn(batched, *replicated)
    n = batched.shape[0]
    pad = (-n) % shards
    if pad:
        batched = jnp.concatenate([batched, jnp.broadcast_to(batched[:1], (pad, *batched.shape[1:]))])
    out = jax.shard_map(lambda b, *r: fn(b, *r),
                        in_specs=(P(DATA_AXIS),) + (P(),) * len(replicated),
                        out_specs=P(DATA_AXIS))(batched, *replicated)
    return out[:n] if pad else out
