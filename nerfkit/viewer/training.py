"""``nerfkit train ... --viewer``: the live viewer as a train-loop callback.

Renders happen on the training thread between steps (the state is donated to the next step,
so the parameters a render reads are only valid until then; and on a CPU a render thread would
take the same cores from training anyway). A render is done only when one is due (the camera
moved, or a still camera's refresh every ``refresh_s`` seconds) and only if the time spent
rendering stays below ``max_fraction`` of the wall time: after a render of ``r`` seconds the
next one waits ``r (1 - f) / f``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from nerfkit.engine.trainer import Callback


class ViewerCallback(Callback):
    """Serves a :class:`~nerfkit.viewer.app.Viewer` of the run while it trains.

    Args:
      host, port: where to serve (the URL is printed).
      max_fraction: largest share of wall time spent rendering (0.10: the renders take at most
        10% of training's time; the issue's limit for the whole viewer is 20%).
      refresh_s: re-render a still camera this often, seconds.
      resolution: initial longer side of the refined render, pixels.
      keep_open: after training, keep serving until Ctrl-C (``False``: close).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 7007, max_fraction: float = 0.10,
                 refresh_s: float = 3.0, resolution: int = 256, keep_open: bool = False):
        self.host, self.port = host, port
        self.max_fraction, self.refresh_s, self.resolution = max_fraction, refresh_s, resolution
        self.keep_open = keep_open
        self.viewer = None
        self.renderer = None
        self.render_seconds = 0.0
        self.renders = 0
        self._next = 0.0
        self._state = None

    def on_train_start(self, run_dir: Path, state: Any, start_step: int) -> None:
        from flax import nnx

        from nerfkit.engine import distributed
        from nerfkit.engine.renderer import Renderer
        from nerfkit.engine.run import describe_run
        from nerfkit.viewer import run_render_fn
        from nerfkit.viewer.app import Viewer, scene_from_run
        if not distributed.is_main():
            return
        cfg, info, geom, sj = describe_run(run_dir)
        abstract = nnx.eval_shape(lambda: cfg.model.build(info, nnx.Rngs(cfg.seed)))
        graphdef = nnx.split(abstract, nnx.Param, ...)[0]
        self.renderer = Renderer(graphdef, state.params, state.buffers, geom,
                                 cfg.model.render_chunk, distributed.data_mesh())
        bg = np.ones(3, np.float32) if info.white_background else np.zeros(3, np.float32)
        scene = scene_from_run(sj)
        if scene.signal:
            print("viewer: image/video fits are shown by `nerfkit view RUN` after training")
            return
        self.viewer = Viewer(run_render_fn(self.renderer, bg), scene, self.host, self.port,
                             run_dir=run_dir, resolution=self.resolution,
                             refresh_s=self.refresh_s)
        print(f"viewer: {self.viewer.url} (renders between steps, at most "
              f"{100 * self.max_fraction:.0f}% of the time)", flush=True)
        threading.Thread(target=self._load_thumbnails, args=(cfg,), daemon=True).start()

    def _load_thumbnails(self, cfg) -> None:
        """Adds the training images to the frustums (loaded again, off the training thread)."""
        from nerfkit.viewer.app import thumbnails
        try:
            images = cfg.load_split("train").images
        except Exception:  # noqa: BLE001 (thumbnails are a nicety)
            return
        v = self.viewer
        for h, im in zip(getattr(v, "_frustums", []), thumbnails(images)):
            h.image = im

    def after_step(self, step: int, state: Any, metrics: dict[str, float]) -> None:
        v = self.viewer
        if v is None:
            return
        # Only a reference to the state each step; the renderer takes it (placing it on the
        # mesh, if any) when it renders. The last step's state stays valid after training.
        self._state = state
        now = time.monotonic()
        if now < self._next or not v.pending():
            return
        self.renderer.set_params(state.params, state.buffers)
        v.set_status(f"step {step} · PSNR {metrics.get('psnr', float('nan')):.2f} dB · "
                     f"{metrics.get('rays_per_s', 0.0) / 1e3:.0f}k rays/s")
        spent = v.update()
        if spent > 0:
            self.render_seconds += spent
            self.renders += 1
            f = self.max_fraction
            self._next = time.monotonic() + spent * (1.0 - f) / f

    def on_train_end(self, summary: dict[str, Any]) -> None:
        if self.viewer is None:
            return
        if self.keep_open:
            if self._state is not None:  # the final parameters, whatever was last rendered
                self.renderer.set_params(self._state.params, self._state.buffers)
            print(f"viewer: training done; still serving {self.viewer.url} (Ctrl-C to stop)",
                  flush=True)
            try:
                self.viewer.serve_forever()
            except KeyboardInterrupt:
                pass
        self.viewer.close()
        self.viewer = None

    def close(self) -> None:
        if self.viewer is not None:
            self.viewer.close()
            self.viewer = None


def make_callback(cfg) -> Optional[ViewerCallback]:
    """The viewer callback a :class:`~nerfkit.engine.config.TrainConfig` asks for (``viewer``)."""
    if not getattr(cfg, "viewer", False):
        return None
    return ViewerCallback(cfg.viewer_host, cfg.viewer_port)
