"""Multi-layer perceptrons used by every field."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Activation = Callable[[jax.Array], jax.Array]

ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}


class MLP(nnx.Module):
    """A fully connected network ``in_dim -> [hidden]*num_layers -> out_dim``.

    ``skips`` lists hidden-layer indices whose *input* is concatenated with the network input
    (NeRF feeds the encoded position again into its fifth layer: ``skips=(4,)``). With
    ``out_dim=None`` the network ends at the last hidden layer (activation applied).

    Shapes: ``[..., in_dim] -> [..., out_dim or hidden]``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_layers: int,
        out_dim: Optional[int],
        *,
        rngs: nnx.Rngs,
        skips: Sequence[int] = (),
        activation: str = "relu",
        out_activation: str = "identity",
        use_bias: bool = True,
        kernel_init: Callable = nnx.initializers.glorot_uniform(),
    ):
        self.skips = tuple(skips)
        self.activation = activation
        self.out_activation = out_activation
        layers = []
        d = in_dim
        for i in range(num_layers):
            if i in self.skips:
                d += in_dim
            layers.append(nnx.Linear(d, hidden, use_bias=use_bias, kernel_init=kernel_init,
                                     rngs=rngs))
            d = hidden
        self.layers = nnx.List(layers)
        self.out = (None if out_dim is None else
                    nnx.Linear(d, out_dim, use_bias=use_bias, kernel_init=kernel_init, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        inputs = x
        for i, layer in enumerate(self.layers):
            if i in self.skips:
                x = jnp.concatenate([x, inputs], axis=-1)
            x = act(layer(x))
        if self.out is not None:
            x = ACTIVATIONS[self.out_activation](self.out(x))
        return x
