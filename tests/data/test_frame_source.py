"""Frame-stratified batches (FrameSource) for videos and dynamic scenes, and held-out pixels."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from nerfkit.core.rays import frame_rows
from nerfkit.data.raysource import FrameSource, holdout_mask
from nerfkit.data.signal import signal_scene


def _video(n=7, h=5, w=6):
    """Frames whose every pixel encodes (frame, row, col) in its colour, so that each drawn
    target says where it came from."""
    k, r, c = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    frames = np.stack([k / 100.0, r / 100.0, c / 100.0], -1).astype(np.float32)
    return signal_scene(frames, [f"{i}" for i in range(n)], __import__("pathlib").Path("v"),
                        "train", "video", timed=True)


@pytest.mark.parametrize("k", [0, 3, 7])
def test_batches_hold_exactly_k_frames_with_the_promised_pixels_each(k):
    scene = _video()
    src = FrameSource(scene, frames_per_batch=k, background="black")
    K = 7 if k == 0 else k
    batch = jax.jit(lambda d, key: src.sample(d, key, 64))(src.data, jax.random.key(3))
    P = 64 // K
    assert batch.rays.origins.shape == (K, P, 3) and batch.rgb.shape == (K, P, 3)
    assert frame_rows(batch.rays)
    rgb = np.asarray(batch.rgb)
    frame_of = np.rint(rgb[..., 0] * 100).astype(int)            # [K, P]
    assert (frame_of == frame_of[:, :1]).all()                     # one frame per row ...
    assert len(set(frame_of[:, 0].tolist())) == K                  # ... K distinct frames
    # The ray time is the row's frame time, and the ray direction the pixel's coordinate.
    t = np.asarray(batch.rays.time)[..., 0]
    np.testing.assert_allclose(t, frame_of / 6.0, atol=1e-6)
    row, col = np.rint(rgb[..., 1] * 100), np.rint(rgb[..., 2] * 100)
    d = np.asarray(batch.rays.directions)
    np.testing.assert_allclose(d[..., 0], (col + 0.5) / 3.0 - 1.0, atol=1e-5)
    np.testing.assert_allclose(d[..., 1], 1.0 - (row + 0.5) / 2.5, atol=1e-5)
    if K < 7:  # a random subset that changes between steps
        other = src.sample(src.data, jax.random.key(4), 64)
        assert len(set(np.rint(np.asarray(other.rgb)[:, 0, 0] * 100).astype(int))) == K


def test_holdout_is_per_frame_and_never_drawn():
    n, h, w = 7, 5, 6
    mask = holdout_mask(n, h, w, 0.1, seed=42)
    assert mask.shape == (n, h, w) and (mask.reshape(n, -1).sum(1) == int(0.1 * h * w)).all()
    assert not (mask[0] == mask[1]).all()                          # drawn per frame
    np.testing.assert_array_equal(mask, holdout_mask(n, h, w, 0.1, seed=42))
    src = FrameSource(_video(n, h, w), 0, mask, background="black")
    seen = np.zeros((n, h, w), bool)
    for i in range(20):
        rgb = np.asarray(src.sample(src.data, jax.random.key(i), 7 * 40).rgb)
        f, r, c = (np.rint(rgb[..., j] * 100).astype(int) for j in range(3))
        seen[f, r, c] = True
    assert not (seen & mask).any()
    assert seen[~mask].mean() > 0.95                               # the rest is drawn
    full = FrameSource(_video(n, h, w), 0, mask, background="black", all_pixels=True)
    b = full.sample(full.data, jax.random.key(0), 1)
    assert b.rgb.shape == (n, h * w - int(0.1 * h * w), 3)         # every trainable pixel
    with pytest.raises(ValueError, match="same"):
        bad = mask.copy()
        bad[0, 0, 0] = ~bad[0, 0, 0]
        FrameSource(_video(n, h, w), 0, bad)
