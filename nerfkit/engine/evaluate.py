"""Evaluation of a trained model on a dataset split: PSNR, SSIM and (optionally) AlexNet LPIPS
(:mod:`nerfkit.core.lpips`) per view and their means."""

from __future__ import annotations

import time as _time
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core import metrics
from nerfkit.data.scene import Scene
from nerfkit.engine.progress import RenderProgress
from nerfkit.engine.renderer import Renderer


def evenly_spaced_views(num_views: int, count: int) -> list[int]:
    """Up to ``count`` distinct view indices evenly spaced over ``range(num_views)``, sorted."""
    n = min(count, num_views)
    return sorted(set(np.linspace(0, num_views - 1, n).round().astype(int).tolist()))


SSIM_WINDOW = 11  # pixels: the Gaussian window of the SSIM that evaluation reports


@jax.jit
def _image_metrics(pred: jax.Array, gt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """PSNR and SSIM of one image; SSIM is NaN for images smaller than its window."""
    psnr = metrics.psnr_images(pred, gt)
    if min(pred.shape[-3], pred.shape[-2]) < SSIM_WINDOW:
        return psnr, jnp.float32(jnp.nan)
    return psnr, metrics.ssim(pred, gt, filter_size=SSIM_WINDOW)


def _renders(renderer, scene: Scene, views: list[int]):
    """Yields ``(i, render)`` per view: several small views per call where the renderer can
    pack them (:meth:`Renderer.render_views`), one at a time otherwise."""
    if not hasattr(renderer, "render_views"):
        yield from ((i, renderer.render_view(scene, i)) for i in views)
        return
    group = renderer.views_per_call(scene)
    for g in range(0, len(views), group):
        yield from zip(views[g:g + group], renderer.render_views(scene, views[g:g + group]))


def evaluate(renderer: Renderer, scene: Scene, views: Optional[Sequence[int]] = None,
             on_view: Optional[Callable[[int, dict[str, np.ndarray]], None]] = None,
             lpips: bool = False, progress: Optional[RenderProgress] = None
             ) -> dict[str, Any]:
    """PSNR, SSIM and optionally LPIPS of renders against ``scene``'s images (composited on its
    background).

    Returns ``{"psnr", "ssim", "num_views", "seconds", "views": [{"name", "psnr", "ssim"}]}``;
    with ``lpips`` also ``"lpips"`` (mean AlexNet LPIPS v0.1, lower is better),
    ``"lpips_seconds"`` (its share of ``seconds``) and a per-view ``"lpips"``.
    ``on_view(i, out)`` is called with each render (e.g. to save it). SSIM is NaN (with a
    warning) for images smaller than its 11-pixel window, LPIPS for images smaller than
    AlexNet's 31 pixels; PSNR is computed at any size. Views smaller than the renderer's chunk
    are rendered several at a time (:meth:`Renderer.render_views`); ``progress``
    (:class:`RenderProgress`) advances per view.
    """
    views = list(range(len(scene)) if views is None else views)
    h, w = scene.cameras.height, scene.cameras.width
    if min(h, w) < SSIM_WINDOW:
        warnings.warn(f"evaluation: {w}x{h} images are smaller than SSIM's {SSIM_WINDOW}-pixel "
                      f"window; SSIM is reported as NaN (PSNR is computed)", RuntimeWarning,
                      stacklevel=2)
    lpips_fn = None
    if lpips:
        from nerfkit.core.lpips import LPIPS, MIN_SIZE
        if min(h, w) < MIN_SIZE:
            warnings.warn(f"evaluation: {w}x{h} images are smaller than LPIPS's {MIN_SIZE} "
                          f"pixels; LPIPS is reported as NaN", RuntimeWarning, stacklevel=2)
        else:
            lpips_fn = LPIPS()
    gt_all = scene.composited()
    per_view = []
    t0 = _time.perf_counter()
    lpips_seconds = 0.0
    for i, out in _renders(renderer, scene, views):
        pred = np.clip(out["rgb"], 0.0, 1.0)
        gt = gt_all[i]
        p, s = (float(v) for v in _image_metrics(pred, gt))
        view = {"name": scene.names[i], "psnr": p, "ssim": s}
        if lpips:
            t1 = _time.perf_counter()
            # pred and gt go through AlexNet as one batch of two (one compilation per size).
            view["lpips"] = float(lpips_fn(pred, gt)) if lpips_fn else float("nan")
            lpips_seconds += _time.perf_counter() - t1
        per_view.append(view)
        if on_view is not None:
            on_view(i, out)
        if progress is not None:
            progress.advance()
    seconds = _time.perf_counter() - t0
    result = {
        "psnr": float(np.mean([v["psnr"] for v in per_view])),
        "ssim": float(np.mean([v["ssim"] for v in per_view])),
        "num_views": len(per_view),
        "seconds": seconds,
        "views": per_view,
    }
    if lpips:
        result["lpips"] = float(np.mean([v["lpips"] for v in per_view]))
        result["lpips_seconds"] = lpips_seconds
    return result
