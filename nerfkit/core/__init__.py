"""The numerical core: pure JAX functions over arrays and small pytrees, no Flax state.

Cameras and rays (:mod:`~nerfkit.core.cameras`, :mod:`~nerfkit.core.rays`), samplers
(:mod:`~nerfkit.core.samplers`, occupancy-grid marching in :mod:`~nerfkit.core.occupancy`), volume
rendering (:mod:`~nerfkit.core.render`), encodings (:mod:`~nerfkit.core.encodings`, the hash grid
reference :mod:`~nerfkit.core.hashgrid`), losses and metrics. Every public function documents the
shapes it takes and returns; the most used ones are re-exported here::

    from nerfkit import core
    rays = core.image_rays(cameras, 0, near=2.0, far=6.0)            # Rays, batch [H, W]
    t = core.stratified_samples(key, rays.near, rays.far, 64, True)  # [H, W, 65] edges
    out = core.volume_render(sigma, rgb, t, rays.directions, bg)     # rgb, depth, acc, weights
"""

from nerfkit.core import (activations, cameras, encodings, hashgrid, losses, metrics, occupancy,
                          rays, render, samplers, sharding)
from nerfkit.core.activations import trunc_exp
from nerfkit.core.cameras import (Cameras, camera_rays, image_rays, make_cameras, ndc_rays,
                                  pixel_directions)
from nerfkit.core.encodings import (positional_encoding, positional_encoding_dim, ray_encoding,
                                    ray_points, spherical_harmonics, spherical_harmonics_dim)
from nerfkit.core.hashgrid import HashGridConfig, hash_encode, hash_encode_naive, init_hash_tables
from nerfkit.core.losses import huber, mse, s3im
from nerfkit.core.metrics import psnr, ssim
from nerfkit.core.occupancy import OccupancyGrid, init_occupancy, march_rays, update_occupancy
from nerfkit.core.rays import Batch, Rays, make_rays, points_at
from nerfkit.core.render import (alphas_from_density, composite, density_from_weights,
                                 interval_deltas, interval_midpoints, volume_render,
                                 weights_from_alphas, weights_from_density)
from nerfkit.core.samplers import merge_samples, sample_pdf, stratified_samples

__all__ = [
    "activations", "cameras", "encodings", "hashgrid", "losses", "metrics", "occupancy", "rays",
    "render", "samplers", "sharding",
    "trunc_exp", "Cameras", "camera_rays", "image_rays", "make_cameras", "ndc_rays",
    "pixel_directions", "positional_encoding", "positional_encoding_dim", "ray_encoding",
    "ray_points", "spherical_harmonics", "spherical_harmonics_dim", "HashGridConfig",
    "hash_encode", "hash_encode_naive", "init_hash_tables", "huber", "mse", "s3im", "psnr", "ssim",
    "OccupancyGrid", "init_occupancy", "march_rays", "update_occupancy", "Batch", "Rays",
    "make_rays", "points_at", "alphas_from_density", "composite", "density_from_weights",
    "interval_deltas", "interval_midpoints", "volume_render", "weights_from_alphas",
    "weights_from_density", "merge_samples", "sample_pdf", "stratified_samples",
]
