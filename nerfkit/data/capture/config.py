"""Configs of ``nerfkit process-data images|video`` (frozen, tyro-friendly dataclasses)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

CameraModelName = Literal["OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL",
                          "OPENCV_FISHEYE"]
MatchingMethod = Literal["sequential", "exhaustive", "spatial"]


@dataclasses.dataclass(frozen=True)
class _CaptureConfig:
    input: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT")]
    """Input: a folder of photos (images) or a video file (video)."""
    output: Path
    """Output folder: transforms.json, images/, images_2/4/8/, colmap/, sparse_pc.ply,
    process_data.json."""
    camera_model: CameraModelName = "OPENCV"
    """COLMAP camera model: OPENCV (radial-tangential k1 k2 p1 p2; right for most phone and
    camera lenses), OPENCV_FISHEYE for fisheye lenses, PINHOLE/SIMPLE_* when distortion is
    negligible."""
    single_camera: bool = True
    """One camera (intrinsics) shared by every image, as for photos from one camera at one zoom;
    --no-single-camera gives each image its own."""
    matching: MatchingMethod = "sequential"
    """Pairs to match. sequential: images in file-name order, each with `overlap` later
    neighbours (the fast choice for photos or frames taken in order; 252 bonsai photos: ~2 min of
    matching on 2 cores). exhaustive: every pair (order-free captures; O(n^2): about an hour for
    252 photos on 2 cores). spatial: by EXIF GPS position (needs GPS tags). COLMAP's vocab-tree
    matching needs a downloaded vocabulary and is not offered."""
    overlap: int = 12
    """Sequential matching: neighbours matched with each image (COLMAP's SequentialMatching.overlap;
    raise it when few images register)."""
    quadratic_overlap: bool = True
    """Sequential matching: the neighbours are the images 1, 2, 4, ..., 2^(overlap-1) positions
    later (reaches across a whole 360-degree capture and closes its loop) instead of the next
    `overlap` images (COLMAP's SequentialMatching.quadratic_overlap)."""
    max_image_size: int = 3200
    """SIFT extraction: images larger than this (longest side, pixels) are downscaled for feature
    extraction only (COLMAP's default 3200)."""
    num_threads: int = -1
    """CPU threads for COLMAP (-1: all cores)."""
    undistort: bool = False
    """Undistort the images with the solved camera (COLMAP image_undistorter): images/ then holds
    pinhole images and transforms.json a camera with zero distortion; the distorted copies and
    their model stay in colmap/."""
    seed: int = 0
    """COLMAP random seed (mapping), for repeatable runs."""


@dataclasses.dataclass(frozen=True)
class ProcessImagesConfig(_CaptureConfig):
    """Poses for a folder of photos: copy them upright into OUTPUT/images, run structure from
    motion (pycolmap), write a nerfstudio-style transforms.json and downscaled copies."""


@dataclasses.dataclass(frozen=True)
class ProcessVideoConfig(_CaptureConfig):
    """Poses for a video: extract frames into OUTPUT/images, then the same pipeline as
    `process-data images`."""
    num_frames: int = 300
    """Frames to extract, evenly spaced over the whole video (fewer if the video is shorter)."""
    sharpest: bool = False
    """Take the sharpest frame (variance of the Laplacian) of each of the num_frames equal windows
    instead of the evenly spaced one (less motion blur; reads every frame)."""
