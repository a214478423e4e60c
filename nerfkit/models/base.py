"""The small interface every model family implements, and what it is built from.

A family is a :class:`ModelConfig` (a frozen dataclass of plain values, saved as JSON with each run)
whose :meth:`ModelConfig.build` returns a :class:`Model` (a Flax NNX module). The trainer only ever
calls the four methods of :class:`Model`; adding a family never touches the trainer.
"""

import dataclasses
import math
from typing import Annotated, Any, ClassVar, Optional

import jax
import optax
import tyro
from flax import nnx

from nerfkit.core import losses
from nerfkit.core.render import RenderOutput
from nerfkit.core.rays import Batch, DataSource, Rays
from nerfkit.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SceneInfo:
    """What a model may know about the scene it is built for (saved as ``scene.json``).

    ``aabb`` is ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` in model coordinates; ``near``/``far``
    bound ``t``; ``ndc`` marks forward-facing scenes in normalised device coordinates.
    ``unbounded`` marks real captures whose content reaches far beyond ``aabb`` (the cameras and
    the foreground lie inside it; a model contracts the space beyond); ``num_images`` is the
    number of training images (the rows of per-image tables such as appearance embeddings; 0
    when unknown, as in runs saved before it existed).
    """

    aabb: tuple[tuple[float, float, float], tuple[float, float, float]]
    near: float
    far: float
    ndc: bool = False
    white_background: bool = True
    has_time: bool = False
    num_frames: int = 0
    unbounded: bool = False
    num_images: int = 0


class Model(nnx.Module):
    """Base class of every family: rays in, colours out.

    Subclasses implement :meth:`render_rays`; the others have sensible defaults.
    """

    def render_rays(self, rays: Rays, key: Optional[jax.Array], *, train: bool,
                    background: jax.Array) -> RenderOutput:
        """Renders rays with batch shape ``[B]``.

        Args:
          rays: the rays; key: randomness for training-time sampling (``None`` at test time).
          train: training mode (jittered sampling, noise); background: ``[B, 3]`` colours.
        Returns:
          at least ``rgb [B, 3]``, ``depth [B, 1]`` and ``acc [B, 1]``; families may add keys
          (e.g. ``rgb_coarse``) that their :meth:`loss` uses, and ``ray_mask [B, 1]`` when some
          rays of a training batch were not rendered (they are left out of the loss).
        """
        raise NotImplementedError

    def loss(self, outputs: RenderOutput, batch: "Batch",
             key: Optional[jax.Array] = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar loss and metrics for ``outputs`` of :meth:`render_rays` on ``batch``
        (:class:`~nerfkit.core.rays.Batch`); default: MSE of ``rgb`` against ``batch.rgb``
        (plus ``rgb_coarse`` if present). It runs inside the gradient; updates it makes to
        non-parameter state (``nnx.Variable`` that are not ``Param``, e.g. R2L's hard-ray pool)
        are kept, outside the gradient."""
        target = batch.rgb
        mse = losses.mse(outputs["rgb"], target, outputs.get("ray_mask"))
        total = mse
        metrics = {"mse": mse}
        if "rgb_coarse" in outputs:
            mse_c = losses.mse(outputs["rgb_coarse"], target)
            total = total + mse_c
            metrics["mse_coarse"] = mse_c
        return total, metrics

    def density(self, x: jax.Array, time: Optional[jax.Array] = None) -> jax.Array:
        """Volume density ``[...]`` at world (model-space) points ``x [..., 3]`` (radiance-field
        families only; used by mesh export and occupancy grids)."""
        raise NotImplementedError(f"{type(self).__name__} has no density field")

    def radiance(self, x: jax.Array, d: jax.Array, time: Optional[jax.Array] = None
                 ) -> tuple[jax.Array, jax.Array]:
        """Density ``[...]`` and colour ``[..., 3]`` at points ``x [..., 3]`` seen along unit
        directions ``d [..., 3]`` (radiance-field families; used by mesh export)."""
        raise NotImplementedError(f"{type(self).__name__} has no radiance field")

    def active_rays(self, rays: Rays) -> jax.Array:
        """Optional: ``[B]`` bool, False for rays that certainly meet nothing (renderers skip
        them and give them the background). Families without such knowledge don't override it."""
        raise NotImplementedError

    def eval_samples(self, rays: Rays) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Optional (early ray termination, :class:`~nerfkit.engine.renderer.Renderer`): the
        samples ``render_rays(train=False)`` composites for rays ``[B]``: ``t_mid [B, S]`` sorted
        near to far (units of ``t``), ``deltas [B, S]`` interval lengths in world units and
        ``valid [B, S]`` bool (invalid samples have zero density). Families that override it
        also override :meth:`eval_density` and :meth:`eval_color`; the others are rendered by
        ``render_rays`` alone."""
        raise NotImplementedError

    def eval_density(self, rays: Rays, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Optional, with :meth:`eval_samples`: density ``[B, K]`` (per world unit) at ray
        parameters ``t [B, K]`` of rays ``[B]``, and the features ``[B, K, F]`` that
        :meth:`eval_color` turns into colours (as ``render_rays`` sees them at evaluation)."""
        raise NotImplementedError

    def eval_color(self, rays: Rays, features: jax.Array) -> jax.Array:
        """Optional, with :meth:`eval_samples`: colour ``[P, 3]`` of ``P`` samples from their
        :meth:`eval_density` features ``[P, F]``, each seen along its ray of ``rays [P]``."""
        raise NotImplementedError

    def pre_step(self, step: jax.Array, key: jax.Array) -> None:
        """Called inside the jit'd train step before the loss, outside the gradient: update
        non-parameter state such as occupancy grids (``nnx.Variable`` that are not ``Param``)."""
        del step, key


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of every family's config: a frozen dataclass of plain values.

    Attributes (shared by all families):
      lr_init, lr_final: learning rate decayed log-linearly from ``lr_init`` to ``lr_final``
        over training progress (steps or minutes); ``lr_warmup``: fraction of progress spent
        ramping up from ``lr_init / 100``; ``lr_warmup_steps``: a warm-up counted in steps
        instead (independent of the time budget), linear from ``lr_warmup_start`` times the
        scheduled rate to the scheduled rate.
      batch_size: rays per training step.
      microbatch: rays per gradient micro-batch (a divisor of ``batch_size``; ``None``: the whole
        batch at once). The step averages the micro-batches' gradients: the same update for
        per-ray mean losses, with activation memory bounded by the micro-batch.
      background: training background for RGBA scenes: ``white``, ``black`` or ``random``.
      render_chunk: rays per render call when rendering full images.
    """

    family: ClassVar[str] = "base"

    lr_init: float = 5e-4
    lr_final: float = 5e-5
    lr_warmup: float = 0.0
    lr_warmup_steps: int = 0
    lr_warmup_start: float = 0.01
    batch_size: int = 1024
    microbatch: Annotated[Optional[int], tyro.conf.arg(metavar="INT")] = None
    background: str = "white"
    render_chunk: int = 4096
    default_steps: int = 200_000

    def build(self, scene: SceneInfo, rngs: nnx.Rngs) -> Model:
        raise NotImplementedError

    def learning_rate(self, progress: float, step: Optional[int] = None) -> float:
        """Learning rate at ``progress`` in ``[0, 1]`` of training (and at ``step``, for
        ``lr_warmup_steps``)."""
        p = min(max(progress, 0.0), 1.0)
        lr = math.exp(math.log(self.lr_init) * (1 - p) + math.log(self.lr_final) * p)
        if self.lr_warmup > 0 and p < self.lr_warmup:
            lr *= 0.01 + 0.99 * math.sin(0.5 * math.pi * p / self.lr_warmup)
        if self.lr_warmup_steps > 0 and step is not None and step < self.lr_warmup_steps:
            a = self.lr_warmup_start
            lr *= a + (1.0 - a) * step / self.lr_warmup_steps
        return lr

    def data_source(self, scene: Any, train_cfg: Any) -> Optional[DataSource]:
        """Where training batches come from (a :class:`~nerfkit.core.rays.DataSource`);
        ``None`` (the default) means random pixels of the training images
        (:class:`~nerfkit.data.raysource.PixelSource`)."""
        return None

    def optimizer(self) -> optax.GradientTransformation:
        """The optimiser; its learning rate is injected each step (``optax.inject_hyperparams``)."""
        return optax.inject_hyperparams(optax.adam)(learning_rate=self.lr_init)


def check_batching(batching: str, frames_per_batch: int) -> None:
    """Validates the ``batching`` / ``frames_per_batch`` options of families that can train on
    frame-stratified batches (:class:`~nerfkit.core.rays.FrameBatching`)."""
    if batching not in ("pixels", "frames"):
        raise ConfigError(f"--model.batching must be 'pixels' or 'frames', got {batching!r}")
    if frames_per_batch < 0:
        raise ConfigError(f"--model.frames-per-batch must be >= 0 (0: all frames), "
                          f"got {frames_per_batch}")


def grid_labels(params: Any) -> Any:
    """``"grid"`` for the leaves of CAM grids (:class:`~nerfkit.nn.modulation.CAMGrid`'s
    ``cam_gamma`` / ``cam_beta``), ``"field"`` for every other parameter (same tree structure)."""

    def label(path, _):
        keys = {getattr(k, "key", getattr(k, "name", None)) for k in path}
        return "grid" if keys & {"cam_gamma", "cam_beta"} else "field"

    return jax.tree_util.tree_map_with_path(label, params)


def adam_with_grid_lr(lr_init: float, grid_lr: float) -> optax.GradientTransformation:
    """Adam with CAM grids at their own learning rate.

    The injected ``learning_rate`` (the model's schedule) drives the field's parameters; the grids
    get it times ``grid_lr / lr_init``, i.e. ``grid_lr`` at the start, decayed on the same
    schedule. Labels come from :func:`grid_labels`.
    """
    ratio = grid_lr / lr_init

    def make(learning_rate):
        return optax.multi_transform({"field": optax.adam(learning_rate),
                                      "grid": optax.adam(learning_rate * ratio)}, grid_labels)

    return optax.inject_hyperparams(make)(learning_rate=lr_init)
