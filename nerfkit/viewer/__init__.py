"""The live browser viewer (viser): ``nerfkit view RUN`` and ``nerfkit train ... --viewer``.

:mod:`nerfkit.viewer.app` is the viser app (live progressive render of the browser's camera,
training cameras, sparse points, time slider, camera-path keyframes saved as nerfstudio's
``camera_path.json``); :mod:`nerfkit.viewer.training` attaches it to a training run;
:mod:`nerfkit.viewer.cameras` converts between nerfkit's OpenGL cameras and viser's.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from nerfkit.viewer.app import Viewer, ViewerScene, scene_from_run


def run_render_fn(renderer, background):
    """A :data:`~nerfkit.viewer.app.RenderFn` over an engine
    :class:`~nerfkit.engine.renderer.Renderer` (RGB on ``background [3]``)."""
    bg = np.asarray(background, np.float32)

    def render(c2w, intrinsics, width, height, time=None):
        return renderer.render_camera(np.asarray(c2w, np.float32), intrinsics, width, height,
                                      bg, time)["rgb"]
    return render


def view_run(run_dir: os.PathLike, host: str = "127.0.0.1", port: int = 7007,
             resolution: int = 256, thumbnails: bool = True, chunk: Optional[int] = None,
             verbose: bool = False) -> Viewer:
    """Starts a :class:`~nerfkit.viewer.app.Viewer` of a trained run (returns once it serves;
    call :meth:`~nerfkit.viewer.app.Viewer.serve_forever` to render)."""
    from nerfkit.engine.run import load_run
    run = load_run(run_dir)
    renderer = run.renderer(chunk)
    signal = bool(run.scene_json.get("metadata", {}).get("signal"))
    images = None
    signal_fn = None
    if signal:  # an image/video fit: show its reconstruction, frame by frame
        test = run.load_split("test")
        signal_fn = lambda i: renderer.render_view(test, min(int(i), len(test) - 1))["rgb"]
    elif thumbnails:
        try:
            images = run.load_split("train").images
        except Exception as e:  # noqa: BLE001 (the data may have moved: frustums without images)
            print(f"viewer: no thumbnails ({type(e).__name__}: {e})")
    scene = scene_from_run(run.scene_json, images)
    if signal:
        scene.num_frames = len(test)
    bg = np.ones(3, np.float32) if run.info.white_background else np.zeros(3, np.float32)
    return Viewer(None if signal else run_render_fn(renderer, bg), scene, host, port,
                  run_dir=run.run_dir, signal_fn=signal_fn, resolution=resolution,
                  verbose=verbose)


__all__ = ["Viewer", "ViewerScene", "scene_from_run", "run_render_fn", "view_run"]
