"""Training ray batches drawn on device from all training pixels.

The training images, alphas, poses, intrinsics and lens distortion live on the device as one pytree
(:class:`PixelData`); :func:`sample_batch` draws ``B`` random pixels across all images inside the
jit'd train step, builds their rays (undistorting the pixels of OpenCV / fisheye cameras, see
:mod:`nerfkit.core.distortion`; the camera model is static, in :class:`RayGeometry`) and composites
the targets onto the background. Each ray records the training image it comes from
(``Rays.camera_index``). Nothing is copied from the host per step.

:class:`FrameSource` draws frame-stratified batches for time-varying signals and dynamic scenes
instead: ``K`` frames (images) per step and the same number ``P`` of pixels from each, as a 2-D
ray batch ``[K, P]`` whose row ``k`` holds one frame (one time). That is how the official
ResFields video code batches (``dyrecon/datasets/video_dataset.py``: ``n_samples // T`` pixels
from every frame per step), and it lets a ResField layer form its weights once per frame
(:func:`nerfkit.nn.modulation.resfield_linear`). Pixels can be held out per frame (``holdout``,
see :func:`holdout_mask`); they are never drawn.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core import distortion as dist
from nerfkit.core.cameras import camera_rays, ndc_rays
from nerfkit.core.rays import DataSource  # noqa: F401 (the protocol PixelSource follows)
from nerfkit.core.rays import Batch, FrameBatching, Rays, frame_rows, make_rays  # noqa: F401
from nerfkit.data.scene import Scene


class PixelData(NamedTuple):
    """Device-resident training pixels.

    Attributes:
      rgb: ``[N, H, W, 3]`` straight colours. alpha: ``[N, H, W, 1]`` or ``None`` (opaque).
      c2w: ``[N, 3, 4]``; intrinsics: ``[N, 4]`` (fx, fy, cx, cy); times: ``[N]`` or ``None``.
      distortion: ``[N, 6]`` ``(k1, k2, k3, k4, p1, p2)``, or ``None`` for pinhole scenes (which
        then trace exactly the pinhole ray code).
    """

    rgb: jax.Array
    alpha: Optional[jax.Array]
    c2w: jax.Array
    intrinsics: jax.Array
    times: Optional[jax.Array]
    distortion: Optional[jax.Array] = None


class RayGeometry(NamedTuple):
    """Static (hashable) ray-generation settings of a scene."""

    near: float
    far: float
    ndc: Optional[tuple[float, int, int, float]] = None  # (focal, width, height, near_plane)
    camera_model: str = dist.PINHOLE  # PINHOLE, OPENCV or OPENCV_FISHEYE


class PixelSource:
    """The default training source: uniformly random pixels of all training images.

    A *source* is what the trainer draws batches from: ``data`` is a pytree of device arrays
    (passed into the jit'd step as an argument, never baked in as a constant) and
    ``sample(data, key, batch_size) -> Batch`` is a pure, jit-able function of it; the object
    itself only holds static settings. Families with other supervision (a distillation teacher,
    2D signals) provide their own source through
    :meth:`~nerfkit.models.base.ModelConfig.data_source`.
    """

    def __init__(self, scene: Scene, background: str = "white", jitter: bool = False):
        self.geom = ray_geometry(scene)
        self.background = background
        self.jitter = jitter
        self.data = pixel_data(scene)

    def sample(self, data: PixelData, key: jax.Array, batch_size: int) -> Batch:
        return sample_batch(data, self.geom, key, batch_size, self.background, self.jitter)


class FrameData(NamedTuple):
    """Device-resident pixels of a :class:`FrameSource`: ``pixels`` (:class:`PixelData`) and
    ``train_idx [N, M]`` int32, the flat (``row * W + col``) indices of each frame's ``M``
    trainable pixels (the same number per frame)."""

    pixels: PixelData
    train_idx: jax.Array


class FrameSource:
    """Frame-stratified training batches: ``K`` distinct frames per step (all of them when
    ``frames_per_batch`` is 0 or at least the number of frames, as the official ResFields video
    code; otherwise a random subset each step) and ``P = batch_size // K`` pixels drawn uniformly
    (with replacement) from the trainable pixels of each.

    ``sample(data, key, batch_size)`` returns a :class:`~nerfkit.core.rays.Batch` whose rays,
    targets and backgrounds have batch shape ``[K, P]`` (``K * P <= batch_size`` rays; row ``k``
    from one frame, hence one time): the contract a family reads as "one frame per row".
    ``holdout``: optional bool ``[N, H, W]``, ``True`` for pixels never drawn (the same count in
    every frame). ``all_pixels``: every trainable pixel of each drawn frame, in order, every
    step (full-batch training, as the official CAM image code; ``batch_size`` is then ignored).
    """

    def __init__(self, scene: Scene, frames_per_batch: int = 0,
                 holdout: Optional[np.ndarray] = None, background: str = "white",
                 jitter: bool = False, all_pixels: bool = False):
        n, h, w = scene.images.shape[:3]
        if frames_per_batch < 0:
            raise ValueError(f"frames_per_batch must be >= 0, got {frames_per_batch}")
        self.geom = ray_geometry(scene)
        self.background = background
        self.jitter = jitter
        self.num_frames = n
        self.frames_per_batch = n if frames_per_batch in (0,) or frames_per_batch > n \
            else int(frames_per_batch)
        self.width = w
        self.all_pixels = bool(all_pixels)
        if holdout is None:
            idx = np.broadcast_to(np.arange(h * w, dtype=np.int32), (n, h * w))
        else:
            keep = ~np.asarray(holdout, bool).reshape(n, h * w)
            counts = keep.sum(1)
            if counts.min() != counts.max() or counts.min() == 0:
                raise ValueError("holdout must leave the same, non-zero number of pixels in every "
                                 f"frame (got {counts.min()}..{counts.max()})")
            idx = np.stack([np.flatnonzero(k) for k in keep]).astype(np.int32)
        self.data = FrameData(pixel_data(scene), jnp.asarray(np.ascontiguousarray(idx)))

    def pixels_per_frame(self, batch_size: int) -> int:
        if self.all_pixels:
            return int(self.data.train_idx.shape[1])
        return max(batch_size // self.frames_per_batch, 1)

    def sample(self, data: FrameData, key: jax.Array, batch_size: int) -> Batch:
        k, p = self.frames_per_batch, self.pixels_per_frame(batch_size)
        px = data.pixels
        k_frames, k_idx, k_jit, k_bg = jax.random.split(key, 4)
        if k == self.num_frames:
            frames = jnp.arange(k)
        else:
            frames = jax.random.permutation(k_frames, self.num_frames)[:k]
        m = data.train_idx.shape[1]
        if self.all_pixels:
            flat = data.train_idx[frames]                                      # [K, M]
        else:
            pick = jax.random.randint(k_idx, (k, p), 0, m)
            flat = jnp.take_along_axis(data.train_idx[frames], pick, axis=1)   # [K, P]
        row, col = jnp.divmod(flat, self.width)
        img = jnp.broadcast_to(frames[:, None], (k, p))
        rgb = px.rgb[img, row, col]
        offset = (jax.random.uniform(k_jit, (k, p, 2)) if self.jitter
                  else jnp.full((k, p, 2), 0.5))
        u = col.astype(jnp.float32) + offset[..., 0]
        v = row.astype(jnp.float32) + offset[..., 1]
        time = None if px.times is None else px.times[img]
        rays = build_rays(self.geom, px.c2w[img], u, v, px.intrinsics[img], time)
        bg = background_colors(k_bg, self.background, k * p).reshape(k, p, 3)
        if px.alpha is not None:
            a = px.alpha[img, row, col]
            rgb = rgb * a + bg * (1.0 - a)
        return Batch(rays, rgb, bg)


def holdout_mask(num_frames: int, height: int, width: int, fraction: float,
                 seed: int = 42) -> np.ndarray:
    """Pixels held out of training, bool ``[N, H, W]`` (``True``: held out): in every frame
    ``int(fraction * H * W)`` pixels drawn without replacement, independently per frame, from a
    generator seeded with ``seed`` (the official ResFields split: ``test_fraction`` 0.1 of each
    frame's pixels, ``unseen_strategy='random'``, seed 42; the draws differ from NumPy's legacy
    generator there)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    n_held = int(fraction * height * width)
    rng = np.random.default_rng(seed)
    mask = np.zeros((num_frames, height * width), bool)
    for k in range(num_frames):
        mask[k, rng.choice(height * width, size=n_held, replace=False)] = True
    return mask.reshape(num_frames, height, width)


def ray_geometry(scene: Scene) -> RayGeometry:
    ndc = None
    if scene.ndc:
        m = scene.metadata["ndc"]
        ndc = (float(m["focal"]), int(m["width"]), int(m["height"]), float(m.get("near_plane", 1.0)))
    cams = scene.cameras
    model = dist.PINHOLE if cams.distortion is None else cams.camera_model
    return RayGeometry(float(scene.near), float(scene.far), ndc, dist.check_camera_model(model))


def pixel_data(scene: Scene) -> PixelData:
    """Moves a scene's training pixels to the default device."""
    cams = scene.cameras
    intr = np.stack([cams.fx, cams.fy, cams.cx, cams.cy], axis=-1).astype(np.float32)
    return PixelData(
        rgb=jnp.asarray(scene.images, jnp.float32),
        alpha=None if scene.alphas is None else jnp.asarray(scene.alphas, jnp.float32),
        c2w=jnp.asarray(cams.c2w, jnp.float32),
        intrinsics=jnp.asarray(intr),
        times=None if scene.times is None else jnp.asarray(scene.times, jnp.float32),
        distortion=(None if cams.distortion is None
                    else jnp.asarray(cams.distortion, jnp.float32)),
    )


def build_rays(geom: RayGeometry, c2w, u, v, intrinsics, time=None, distortion=None,
               camera_index=None) -> Rays:
    """Rays through pixel coordinates ``u, v [...]`` of cameras ``c2w [..., 3, 4]``,
    ``intrinsics [..., 4]`` (fx, fy, cx, cy in pixels) and optional ``distortion [..., 6]``
    (model ``geom.camera_model``; ``None``: pinhole); applies the NDC warp for forward-facing
    scenes. ``time`` and ``camera_index`` (``[...]``) are passed to the rays."""
    fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
    model = None if distortion is None else geom.camera_model
    rays = camera_rays(c2w, u, v, fx, fy, cx, cy, geom.near, geom.far, time, distortion, model,
                       camera_index)
    if geom.ndc is None:
        return rays
    focal, w, h, near_plane = geom.ndc
    o, d = ndc_rays(rays.origins, rays.directions, focal, w, h, near_plane)
    return make_rays(o, d, geom.near, geom.far, rays.time, rays.camera_index)


def sample_batch(data: PixelData, geom: RayGeometry, key: jax.Array, batch_size: int,
                 background: str = "white", jitter: bool = False) -> Batch:
    """Draws ``batch_size`` pixels uniformly over all training pixels (jit-friendly).

    ``background`` is ``"white"``, ``"black"`` or ``"random"`` (uniform colour per ray, as
    Instant-NGP does for RGBA scenes so that the model cannot paint the background into the
    volume). ``jitter`` samples a random position inside each pixel instead of its centre.
    The rays' ``camera_index`` is the index of the image each pixel was drawn from.
    """
    n, h, w, _ = data.rgb.shape
    k_idx, k_jit, k_bg = jax.random.split(key, 3)
    flat = jax.random.randint(k_idx, (batch_size,), 0, n * h * w)
    img, rem = jnp.divmod(flat, h * w)
    row, col = jnp.divmod(rem, w)
    rgb = data.rgb[img, row, col]
    offset = (jax.random.uniform(k_jit, (batch_size, 2)) if jitter
              else jnp.full((batch_size, 2), 0.5))
    u = col.astype(jnp.float32) + offset[:, 0]
    v = row.astype(jnp.float32) + offset[:, 1]
    time = None if data.times is None else data.times[img]
    distortion = None if data.distortion is None else data.distortion[img]
    rays = build_rays(geom, data.c2w[img], u, v, data.intrinsics[img], time, distortion, img)
    bg = background_colors(k_bg, background, batch_size)
    if data.alpha is not None:
        a = data.alpha[img, row, col]
        rgb = rgb * a + bg * (1.0 - a)
    return Batch(rays, rgb, bg)


def background_colors(key: jax.Array, kind: str, n: int) -> jax.Array:
    """``[n, 3]`` background colours: ``white``, ``black`` or ``random`` (uniform per ray)."""
    if kind == "white":
        return jnp.ones((n, 3), jnp.float32)
    if kind == "black":
        return jnp.zeros((n, 3), jnp.float32)
    if kind == "random":
        return jax.random.uniform(key, (n, 3))
    raise ValueError(f"unknown background {kind!r}: expected white, black or random")


def camera_image_rays(geom: RayGeometry, c2w, intrinsics, width: int, height: int,
                      time: Optional[float] = None, camera_index: Optional[int] = None,
                      distortion=None) -> Rays:
    """All pixel-centre rays of one camera (``c2w [3,4]``, ``intrinsics [4]``, optional
    ``distortion [6]`` of model ``geom.camera_model``), batch ``[H, W]``; ``camera_index`` is the
    training image they belong to, if any."""
    v, u = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5,
                        jnp.arange(width, dtype=jnp.float32) + 0.5, indexing="ij")
    c2w = jnp.broadcast_to(jnp.asarray(c2w, jnp.float32), (height, width, 3, 4))
    intr = jnp.broadcast_to(jnp.asarray(intrinsics, jnp.float32), (height, width, 4))
    t = None if time is None else jnp.full((height, width), time, jnp.float32)
    d = None
    if distortion is not None:
        d = jnp.broadcast_to(jnp.asarray(distortion, jnp.float32),
                             (height, width, dist.NUM_PARAMS))
    idx = None if camera_index is None else jnp.full((height, width), camera_index, jnp.int32)
    return build_rays(geom, c2w, u, v, intr, t, d, idx)
