"""Numerically guarded activations shared by fields."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_jvp
def trunc_exp(x: jax.Array) -> jax.Array:
    """``exp(x)`` whose derivative is clamped at ``exp(15)`` (Instant-NGP's density activation)."""
    return jnp.exp(x)


@trunc_exp.defjvp
def _trunc_exp_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jnp.exp(x), dx * jnp.exp(jnp.minimum(x, 15.0))
