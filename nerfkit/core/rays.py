"""The ray batch pytree shared by every sampler, model and renderer."""

from typing import Any, NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp


class Rays(NamedTuple):
    """A batch of rays; every field has the same leading batch shape ``[...]``.

    Attributes:
      origins: ``[..., 3]`` ray origins in world units.
      directions: ``[..., 3]`` ray directions, *not* normalised: a point at parameter ``t`` is
        ``origins + t * directions``. For pinhole cameras the direction has unit z-depth in camera
        space, so ``t`` is the depth along the optical axis (NeRF's convention).
      viewdirs: ``[..., 3]`` unit-length view directions (``directions / |directions|``).
      near: ``[..., 1]`` start of the integration interval, in units of ``t``.
      far: ``[..., 1]`` end of the integration interval.
      time: optional ``[..., 1]`` normalised time in ``[0, 1]`` for dynamic scenes.
      camera_index: optional ``[..., 1]`` int32 index of the training image each ray comes from
        (for per-image embeddings); ``None`` when unknown (test views, novel and pseudo views).
    """

    origins: jax.Array
    directions: jax.Array
    viewdirs: jax.Array
    near: jax.Array
    far: jax.Array
    time: Optional[jax.Array] = None
    camera_index: Optional[jax.Array] = None

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.origins.shape[:-1]

    def points_at(self, t: jax.Array) -> jax.Array:
        """Points ``o + t d`` ``[..., S, 3]`` at ray parameters ``t [..., S]`` (one batch of
        ``S`` depths per ray)."""
        return points_at(self.origins, self.directions, t)

    def reshape(self, *shape: int) -> "Rays":
        """Reshapes the batch dimensions of every field (the trailing feature dim is kept)."""
        return jax.tree_util.tree_map(lambda x: x.reshape(*shape, x.shape[-1]), self)


def points_at(origins: jax.Array, directions: jax.Array, t: jax.Array) -> jax.Array:
    """``origins [..., 3] + t [..., S] * directions [..., 3]`` -> points ``[..., S, 3]``."""
    return origins[..., None, :] + t[..., None] * directions[..., None, :]


def make_rays(
    origins: jax.Array,
    directions: jax.Array,
    near: float | jax.Array,
    far: float | jax.Array,
    time: Optional[jax.Array] = None,
    camera_index: Optional[jax.Array] = None,
) -> Rays:
    """Builds :class:`Rays` from origins ``[...,3]`` and directions ``[...,3]``.

    ``near``/``far`` may be scalars or ``[..., 1]`` arrays; ``time`` a scalar-per-ray ``[..., 1]``;
    ``camera_index`` one integer per ray (``[...]`` or ``[..., 1]``, stored as int32 ``[..., 1]``).
    """
    batch = origins.shape[:-1]
    norm = jnp.linalg.norm(directions, axis=-1, keepdims=True)
    viewdirs = directions / jnp.maximum(norm, 1e-12)
    near = jnp.broadcast_to(jnp.asarray(near, origins.dtype), (*batch, 1))
    far = jnp.broadcast_to(jnp.asarray(far, origins.dtype), (*batch, 1))
    if time is not None:
        time = jnp.broadcast_to(jnp.asarray(time, origins.dtype).reshape(*batch, 1), (*batch, 1))
    if camera_index is not None:
        camera_index = jnp.asarray(camera_index, jnp.int32)
        if camera_index.shape == batch:
            camera_index = camera_index[..., None]
        camera_index = jnp.broadcast_to(camera_index, (*batch, 1))
    return Rays(origins, directions, viewdirs, near, far, time, camera_index)


class Batch(NamedTuple):
    """A training batch: ``rays`` with batch shape ``[B]``, target ``rgb [B, 3]`` already composited
    onto ``background [B, 3]`` (the colour the model must composite onto as well), and optional
    family-specific ``extras`` (e.g. a teacher's sample weights for distillation)."""

    rays: Rays
    rgb: jax.Array
    background: jax.Array
    extras: Optional[dict] = None


def frame_rows(rays: Rays) -> bool:
    """Whether ``rays`` is a frame-stratified batch ``[K, P]`` with one frame (one time) per row
    (:class:`nerfkit.data.raysource.FrameSource`): a 2-D batch with per-ray times. Families read
    it to apply per-frame weights once per row."""
    return rays.time is not None and rays.origins.ndim == 3


class FrameBatching(NamedTuple):
    """What a family asks of the engine instead of a ready source
    (:meth:`nerfkit.models.base.ModelConfig.data_source`): frame-stratified batches of
    ``frames_per_batch`` frames (0: all) with ``holdout`` of each frame's pixels held out
    (drawn with ``holdout_seed``); the engine builds the
    :class:`~nerfkit.data.raysource.FrameSource`."""

    frames_per_batch: int = 0
    holdout: float = 0.0
    holdout_seed: int = 42


class DataSource(Protocol):
    """Where the train step draws its batches from (the protocol every source follows).

    ``data`` is a pytree of device arrays, passed into the jit'd step as an argument (never baked
    in as a constant); ``sample(data, key, batch_size)`` is a pure, jit-able function of it that
    returns a :class:`~nerfkit.core.rays.Batch` of ``batch_size`` rays. The object itself holds only
    static settings.
    """

    data: Any

    def sample(self, data: Any, key: jax.Array, batch_size: int) -> Batch:
        ...
