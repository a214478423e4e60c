"""Residual MLPs of the light-field families (R2L's deep residual network, NeRDF's MLP) and
PyTorch's default linear initialisation, which their official code uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

#: PyTorch's default ``nn.Linear`` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class ResidualMLP(nnx.Module):
    """``in -> Linear+ReLU -> num_blocks x (x + Linear(ReLU(Linear(x)))) -> + skip -> Linear ->
    sigmoid``: ``[..., in_dim] -> [..., out_dim]``, blocks run by ``lax.scan`` over stacked
    weights."""

    def __init__(self, in_dim: int, width: int, num_blocks: int, out_dim: int, *,
                 rngs: nnx.Rngs):
        self.num_blocks = num_blocks
        self.head = nnx.Linear(in_dim, width, kernel_init=torch_linear_init, rngs=rngs)
        shape = (num_blocks, width, width)
        stacked = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform",
                                                    batch_axis=(0,))
        self.w1 = nnx.Param(stacked(rngs.params(), shape))
        self.b1 = nnx.Param(jnp.zeros((num_blocks, width)))
        self.w2 = nnx.Param(stacked(rngs.params(), shape))
        self.b2 = nnx.Param(jnp.zeros((num_blocks, width)))
        self.tail = nnx.Linear(width, out_dim, kernel_init=torch_linear_init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch = x.shape[:-1]
        h0 = jax.nn.relu(self.head(x.reshape(-1, x.shape[-1])))

        def block(h, p):
            w1, b1, w2, b2 = p
            return h + jax.nn.relu(h @ w1 + b1) @ w2 + b2, None

        h = h0
        if self.num_blocks:
            h, _ = jax.lax.scan(block, h0, (self.w1[...], self.b1[...], self.w2[...],
                                            self.b2[...]))
        out = jax.nn.sigmoid(self.tail(h + h0))
        return out.reshape(*batch, -1)
