"""Multi-layer perceptrons used by every field, with the capacity options every field shares.

* ``activation="sine"``: SIREN, Sitzmann et al., "Implicit Neural Representations with Periodic
  Activation Functions", NeurIPS 2020: each hidden layer computes ``sin(w0 * (W x + b))`` with
  ``w0 = 30``; the first layer's weights are drawn from ``U(-1/in, 1/in)``, the later layers'
  from ``U(-sqrt(6/in)/w0, sqrt(6/in)/w0)`` (sec. 3.2 and its supplement), biases from
  ``U(-1/sqrt(in), 1/sqrt(in))``.
* ResField layers on chosen hidden layers (:class:`~nerfkit.nn.modulation.ResFieldsConfig`) and
  CAM after every hidden layer (:class:`~nerfkit.nn.modulation.CAMConfig`); see
  :mod:`nerfkit.nn.modulation`.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from nerfkit.errors import ConfigError
from nerfkit.nn.modulation import CAMConfig, CAMGrid, CAMSpec, ResFieldLinear, ResFieldsConfig

Activation = Callable[[jax.Array], jax.Array]

ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}

#: SIREN's frequency factor ``omega_0`` (first and hidden layers).
SIREN_W0 = 30.0


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def sine(h: jax.Array, w0: float) -> jax.Array:
    """``sin(w0 * h)``, SIREN's activation, with its derivative ``w0 * cos(w0 * h)`` formed next
    to the sine in the forward pass. Left to autodiff, XLA:CPU recomputes the cosine in the
    backward fusion, and where the gradient feeds two differently shaped consumers (a ResField
    layer's per-frame matmuls and a 2-D one) it recomputed it twice: on the bikes video the
    ResField step spent ~40 ms of ~200 on duplicate cosines. Forward mode and higher orders work
    as for ``jnp.sin``."""
    return jnp.sin(w0 * h)


@sine.defjvp
def _sine_jvp(w0, primals, tangents):
    s = w0 * primals[0]
    return jnp.sin(s), w0 * jnp.cos(s) * tangents[0]


def siren_init(first: bool, w0: float = SIREN_W0) -> Callable:
    """SIREN's weight initialiser for a ``[in, out]`` kernel (first layer or the others)."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = shape[-2]
        bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / w0
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


INITS = ("glorot", "torch")


def fan_in_bias_init(fan_in: int) -> Callable:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: PyTorch ``nn.Linear``'s default biases (which
    SIREN keeps), and its default weights too (``kaiming_uniform_(a=sqrt(5))`` has exactly this
    bound)."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                    bound)


class MLP(nnx.Module):
    """A fully connected network ``in_dim -> [hidden]*num_layers -> out_dim``.

    ``skips`` lists hidden-layer indices whose *input* is concatenated with the network input
    (NeRF feeds the encoded position again into its fifth layer: ``skips=(4,)``). With
    ``out_dim=None`` the network ends at the last hidden layer (activation applied).

    Options shared by every field:
      activation: ``relu``, ``softplus``, ``sigmoid``, ``identity`` or ``sine`` (SIREN, with its
        initialisation; ``w0`` its frequency factor).
      init: ``glorot`` (``kernel_init`` weights, zero biases) or ``torch`` (PyTorch
        ``nn.Linear``'s default, which official PyTorch code inherits: weights and biases
        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``). Sine networks always take SIREN's.
      resfields: hidden layers listed in ``resfields.layers`` become ResField layers with
        ``num_frames`` coefficient vectors (``__call__`` then needs ``time``).
      cam: a resolved :class:`~nerfkit.nn.modulation.CAMSpec` (or just its coordinate kind,
        ``time``, ``xy``, ``viewdir``, ``triplane``, with the official defaults and
        ``cam_resolution`` cells per axis) to modulate every hidden layer (``__call__`` then
        needs ``cam_coord``). Normalisation before a sine activation is a ``ConfigError``.

    Shapes: ``[..., in_dim] -> [..., out_dim or hidden]``; ``time`` ``[..., 1]`` (or one per
    leading row, ``[B, 1]`` for ``x [B, S, in]`` or ``[K, 1]`` for ``x [K, P, in]``: the
    per-row ResField path), ``cam_coord`` ``[..., D]`` likewise.
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
        init: str = "glorot",
        w0: float = SIREN_W0,
        resfields: Optional[ResFieldsConfig] = None,
        num_frames: int = 0,
        cam: Optional[CAMSpec | str] = None,
        cam_resolution: int = 0,
    ):
        if activation not in ACTIVATIONS and activation != "sine":
            raise ConfigError(f"unknown activation {activation!r}; known: "
                              f"{', '.join([*ACTIVATIONS, 'sine'])}")
        if init not in INITS:
            raise ConfigError(f"unknown init {init!r}; known: {', '.join(INITS)}")
        self.skips = tuple(skips)
        self.activation = activation
        self.out_activation = out_activation
        self.w0 = float(w0)
        sine = activation == "sine"
        if isinstance(cam, str):
            cam = CAMConfig(coord=cam, resolution=cam_resolution).resolved(cam, sine)
        elif cam is not None and sine and cam.norm != "none":
            CAMConfig(norm=cam.norm).resolved(cam.kind, sine=True)  # raises the clear error
        res_layers = set(resfields.layers) if resfields is not None and resfields.enabled else set()
        bad = sorted(i for i in res_layers if not 0 <= i < num_layers)
        if bad:
            raise ConfigError(f"--model.resfields.layers {bad}: this MLP has hidden layers "
                              f"0..{num_layers - 1}")
        if res_layers and num_frames < 1:
            raise ConfigError("ResFields need a time-varying signal (a video or a dynamic scene "
                              "with per-frame times)")
        self.res_layers = tuple(sorted(res_layers))
        layers, grids = [], []
        d = in_dim
        for i in range(num_layers):
            if i in self.skips:
                d += in_dim
            kinit, binit = self._inits(sine, init, kernel_init, d, i == 0)
            if i in res_layers:
                layers.append(ResFieldLinear(d, hidden, num_frames, resfields.rank, rngs=rngs,
                                             kernel_init=kinit, bias_init=binit))
            else:
                layers.append(nnx.Linear(d, hidden, use_bias=use_bias, kernel_init=kinit,
                                         bias_init=binit, rngs=rngs))
            if cam is not None:
                grids.append(CAMGrid(cam, hidden))
            d = hidden
        self.layers = nnx.List(layers)
        self.cam = nnx.List(grids) if cam is not None else None
        kinit, binit = self._inits(sine, init, kernel_init, d, False)
        self.out = (None if out_dim is None else
                    nnx.Linear(d, out_dim, use_bias=use_bias, kernel_init=kinit,
                               bias_init=binit, rngs=rngs))

    def _inits(self, sine: bool, init: str, kernel_init: Callable, fan_in: int,
               first: bool) -> tuple[Callable, Callable]:
        """(weight, bias) initialisers of a layer with ``fan_in`` inputs."""
        if sine:
            return siren_init(first, self.w0), fan_in_bias_init(fan_in)
        if init == "torch":
            return fan_in_bias_init(fan_in), fan_in_bias_init(fan_in)
        return kernel_init, nnx.initializers.zeros_init()

    def _act(self, h: jax.Array) -> jax.Array:
        if self.activation == "sine":
            return sine(h, self.w0)
        return ACTIVATIONS[self.activation](h)

    def __call__(self, x: jax.Array, time: Optional[jax.Array] = None,
                 cam_coord: Optional[jax.Array] = None) -> jax.Array:
        if self.res_layers and time is None:
            raise ValueError("this MLP has ResField layers: pass time [..., 1]")
        if self.cam is not None and cam_coord is None:
            raise ValueError("this MLP has CAM grids: pass cam_coord")
        lead = x.shape[:-1]
        # 2-D operands: XLA:CPU ran the NeRF MLP's fwd+bwd 1.3x faster than on [B, S, C]. Also
        # with per-sample times / CAM coordinates (they flatten alike), not with per-row ones
        # (the per-frame path) or a per-ray normalisation (it needs the sample axis).
        per_sample = lambda a: a is None or a.shape[:-1] == lead
        ray_norm = self.cam is not None and any(g.norm == "ray" for g in self.cam)
        if not self.res_layers and not ray_norm and cam_coord is not None \
                and not per_sample(cam_coord):
            # Without ResField layers a per-row coordinate is cheaper broadcast to every sample
            # (the lookups are small products) than 3-D operands (T-NeRF + time CAM, 20-step
            # smoke run: 1.8x -> 1.16x a plain step).
            extra = len(lead) - (cam_coord.ndim - 1)
            cam_coord = jnp.broadcast_to(
                cam_coord.reshape(*cam_coord.shape[:-1], *(1,) * extra, cam_coord.shape[-1]),
                (*lead, cam_coord.shape[-1]))
        plain = (per_sample(time) or not self.res_layers) and per_sample(cam_coord) \
            and not ray_norm
        rows = None
        if plain:
            x = x.reshape(-1, x.shape[-1])
            if time is not None and self.res_layers:
                time = time.reshape(-1, time.shape[-1])
            if cam_coord is not None:
                cam_coord = cam_coord.reshape(-1, cam_coord.shape[-1])
        elif not ray_norm and len({a.ndim for a in (time if self.res_layers else None,
                                               cam_coord)
                                   if a is not None and not per_sample(a)}) == 1:
            # Per-row times / coordinates (frames of a frame-stratified batch, or rays): 3-D
            # operands [rows, samples, C] (4-D [K, P, S, C] ran the T-NeRF trunk ~1.5x slower).
            row_args = [a for a in (time if self.res_layers else None, cam_coord)
                        if a is not None and not per_sample(a)]
            nrow = row_args[0].ndim - 1
            rows = x.shape[:nrow]
            n = math.prod(rows)

            def rowwise(a):
                if a is None:
                    return None
                return a.reshape(n, a.shape[-1]) if a.ndim - 1 == nrow else \
                    a.reshape(n, -1, a.shape[-1])
            # The activations stay 2-D [rows * samples, C]; only the ResField and CAM layers see
            # the 3-D view (a free reshape). 3-D operands everywhere made XLA:CPU transpose the
            # first and last layers' weight gradients (a 26 ms copy per bikes-video step).
            x = x.reshape(-1, x.shape[-1])
            time = rowwise(time) if self.res_layers else time
            cam_coord = rowwise(cam_coord)
        as_rows = (lambda a: a) if rows is None else (lambda a: a.reshape(n, -1, a.shape[-1]))
        flat = (lambda a: a) if rows is None else (lambda a: a.reshape(-1, a.shape[-1]))
        inputs = x
        for i, layer in enumerate(self.layers):
            if i in self.skips:
                x = jnp.concatenate([x, inputs], axis=-1)
            x = flat(layer(as_rows(x), time)) if i in self.res_layers else layer(x)
            if self.cam is not None:
                x = flat(self.cam[i](as_rows(x), cam_coord))
            x = self._act(x)
        if self.out is not None:
            x = ACTIVATIONS[self.out_activation](self.out(x))
        return x.reshape(*lead, x.shape[-1]) if plain or rows is not None else x
