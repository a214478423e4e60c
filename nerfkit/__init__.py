"""nerfkit: a JAX toolkit for neural fields and neural rendering.

The handful of things a research script needs, from a scene on disk to metrics and exports::

    import nerfkit

    lego = "../shared/datasets/nerf_synthetic/lego"
    scene = nerfkit.load_scene(lego, "train", downscale=4)      # Scene: images [N, H, W, 3], ...
    cfg = nerfkit.TrainConfig(model=nerfkit.models.NGPConfig(), data=lego, downscale=4,
                              max_minutes=5, output="runs/lego")
    summary = nerfkit.train(cfg)                     # checkpoints, metrics.jsonl, eval/test.json
    run = nerfkit.load_run("runs/lego")               # config, scene geometry, trained weights
    cams = scene.cameras                              # render training camera 0 again:
    out = run.renderer().render_camera(cams.c2w[0], (cams.fx[0], cams.fy[0], cams.cx[0],
                                       cams.cy[0]), cams.width, cams.height,
                                       background=scene.background)         # rgb [H, W, 3]
    metrics = nerfkit.evaluate(run.renderer(), run.load_split("test"))        # psnr, ssim
    nerfkit.render_camera_path(run, "orbit", "renders/orbit", frames=60)      # frames + MP4

Lower level: ``nerfkit.init_state(model_cfg, scene)`` gives a model's graph, initial
:class:`TrainState` and optimiser for a loop of your own (``examples/optax_loop.py`` uses only
:mod:`nerfkit.core`); a new family is one module registered with
:func:`nerfkit.models.register_family` (``examples/custom_family.py``).

Data flows one way through the packages: ``data`` (parsers -> ``Scene``) -> ``core`` (rays,
samplers, volume rendering, encodings, losses, metrics) -> ``nn`` (Flax NNX fields) -> ``models``
(one module per family) -> ``engine`` (train loop, checkpoints, runs) -> ``export`` -> ``cli``.
See ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported on first use, so that ``import nerfkit``
#: and ``nerfkit --help`` stay fast).
_EXPORTS = {
    "load_scene": "nerfkit.data",
    "Scene": "nerfkit.data.scene",
    "TrainConfig": "nerfkit.engine.config",
    "presets": "nerfkit.engine.config",
    "TrainState": "nerfkit.engine.run",
    "init_state": "nerfkit.engine.run",
    "build_model": "nerfkit.engine.run",
    "load_run": "nerfkit.engine.run",
    "LoadedRun": "nerfkit.engine.run",
    "train": "nerfkit.engine.trainer",
    "distill": "nerfkit.engine.trainer",
    "make_train_step": "nerfkit.engine.trainer",
    "Renderer": "nerfkit.engine.renderer",
    "evaluate": "nerfkit.engine.evaluate",
    "render_split": "nerfkit.export.frames",
    "render_camera_path": "nerfkit.export.frames",
    "export_web": "nerfkit.export.web",
    "extract_mesh": "nerfkit.export.geometry",
    "extract_pointcloud": "nerfkit.export.geometry",
    "register_family": "nerfkit.models.registry",
    "register_preset": "nerfkit.models.registry",
}
_SUBMODULES = ("core", "nn", "models", "data", "engine", "export")

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"nerfkit.{name}")
    raise AttributeError(f"module 'nerfkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
