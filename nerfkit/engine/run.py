"""A run's model and state: build a model from a scene, initialise its train state, load a
trained run.

The layer between the families (:mod:`nerfkit.models`) and the train loop
(:mod:`nerfkit.engine.trainer`): everything here is what a research script needs to go from a
:class:`~nerfkit.data.scene.Scene` and a :class:`~nerfkit.models.base.ModelConfig` to parameters,
and from a run directory back to a renderer.

Example::

    import nerfkit
    scene = nerfkit.load_scene("../shared/datasets/nerf_synthetic/lego", "train", downscale=4)
    graphdef, state, tx = nerfkit.init_state(nerfkit.models.NGPConfig(), scene)
    run = nerfkit.load_run("runs/lego-ngp")           # a trained run
    out = run.renderer().render_view(run.load_split("test"), 0)   # rgb [H, W, 3], depth, acc
"""

import os
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nerfkit.core.distortion import PINHOLE, check_camera_model
from nerfkit.data import load_scene
from nerfkit.data.raysource import RayGeometry
from nerfkit.data.scene import Scene
from nerfkit.engine import distributed
from nerfkit.engine.checkpoint import Checkpointer
from nerfkit.engine.config import TrainConfig, load_train_config, read_json, to_dict
from nerfkit.engine.renderer import Renderer
from nerfkit.errors import CheckpointError, ConfigError
from nerfkit.fileio import write_json_atomic
from nerfkit.models.base import ModelConfig, SceneInfo


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree; donated to each step)."""

    params: Any
    buffers: Any
    opt_state: Any
    step: jax.Array


def scene_info(scene: Scene) -> SceneInfo:
    """What a model may know of ``scene`` (its training split): box, bounds, flags, image count."""
    aabb = np.asarray(scene.aabb, np.float64)
    return SceneInfo(
        aabb=(tuple(map(float, aabb[0])), tuple(map(float, aabb[1]))),
        near=float(scene.near), far=float(scene.far), ndc=bool(scene.ndc),
        white_background=bool(scene.white_background), has_time=scene.times is not None,
        num_frames=0 if scene.times is None else int(len(np.unique(scene.times))),
        unbounded=bool(getattr(scene, "unbounded", False)), num_images=len(scene))


def build_model(model_cfg: ModelConfig, info: SceneInfo, seed: int
                ) -> tuple[nnx.GraphDef, Any, Any]:
    """Builds a model and splits it into ``(graphdef, params, buffers)``."""
    model = model_cfg.build(info, nnx.Rngs(seed))
    graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
    return graphdef, params, buffers


def init_state(model_cfg: ModelConfig, scene: Scene | SceneInfo, seed: int = 0
               ) -> tuple[nnx.GraphDef, TrainState, optax.GradientTransformation]:
    """Builds ``model_cfg`` for ``scene`` and its initial train state.

    Returns:
      ``(graphdef, state, tx)``: the model's graph (``nnx.merge(graphdef, state.params,
      state.buffers)`` gives the module back), a :class:`TrainState` at step 0 and the family's
      optimiser (:meth:`ModelConfig.optimizer`).
    """
    info = scene if isinstance(scene, SceneInfo) else scene_info(scene)
    graphdef, params, buffers = build_model(model_cfg, info, seed)
    tx = model_cfg.optimizer()
    return graphdef, TrainState(params, buffers, tx.init(params), jnp.zeros((), jnp.int32)), tx


def save_scene_json(run_dir: Path, cfg: TrainConfig, scene: Scene, geom: RayGeometry) -> None:
    cams = scene.cameras
    write_json_atomic(run_dir / "scene.json", {
        "data": None if cfg.data is None else str(Path(cfg.data).absolute()),
        "downscale": cfg.downscale,
        "max_frames": cfg.max_frames,
        "info": to_dict(scene_info(scene)),
        "geometry": {"near": geom.near, "far": geom.far,
                     "ndc": None if geom.ndc is None else list(geom.ndc),
                     "camera_model": geom.camera_model},
        "train_cameras": {
            "width": cams.width, "height": cams.height,
            "c2w": np.asarray(cams.c2w).tolist(),
            "intrinsics": np.stack([cams.fx, cams.fy, cams.cx, cams.cy], -1).tolist(),
            "times": None if scene.times is None else np.asarray(scene.times).tolist(),
        },
        "metadata": {k: v for k, v in scene.metadata.items()
                     if isinstance(v, (str, int, float, bool)) or v is None},
        # Real captures: model = world_transform @ capture coordinates (scale included), so that
        # renders, camera paths and meshes can be mapped back to the capture's coordinates.
        "transforms": {k: np.asarray(scene.metadata[k], np.float64).tolist()
                       for k in ("world_transform", "file_transform", "applied_transform")
                       if scene.metadata.get(k) is not None},
    })


class LoadedRun(NamedTuple):
    """A trained run, ready to render."""

    run_dir: Path
    cfg: TrainConfig
    info: SceneInfo
    geom: RayGeometry
    scene_json: dict
    graphdef: nnx.GraphDef
    params: Any
    buffers: Any
    step: int

    def renderer(self, chunk: Optional[int] = None) -> Renderer:
        """A renderer over every device of this process (split chunks when there are several)."""
        mesh = distributed.data_mesh(jax.local_devices())
        return Renderer(self.graphdef, self.params, self.buffers, self.geom,
                        chunk or self.cfg.model.render_chunk, mesh)

    def load_split(self, split: str) -> Scene:
        """Loads ``split`` of the run's dataset (same downscale as training)."""
        mf = self.scene_json.get("max_frames")
        return load_scene(self.scene_json["data"], split, self.scene_json["downscale"],
                          as_video=self.cfg.model.family == "signal",
                          **({} if mf is None else {"max_frames": mf}))


def describe_run(run_dir: os.PathLike) -> tuple[TrainConfig, SceneInfo, RayGeometry, dict]:
    """``(config, scene info, ray geometry, scene.json)`` of a run directory, without its
    weights (what a viewer attached to a training run needs besides the live state)."""
    run_dir = Path(run_dir)
    cfg = load_train_config(run_dir)
    sj = read_json(run_dir / "scene.json", "scene description")
    try:
        info_d = dict(sj["info"])
        info_d["aabb"] = tuple(tuple(v) for v in info_d["aabb"])
        info = SceneInfo(**info_d)
        g = sj["geometry"]
        geom = RayGeometry(g["near"], g["far"], None if g["ndc"] is None else
                           (float(g["ndc"][0]), int(g["ndc"][1]), int(g["ndc"][2]),
                            float(g["ndc"][3])),
                           check_camera_model(g.get("camera_model", PINHOLE)))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ConfigError(f"{run_dir / 'scene.json'}: malformed ({type(e).__name__}: {e})") from e
    return cfg, info, geom, sj


def load_run(run_dir: os.PathLike, step: Optional[int] = None) -> LoadedRun:
    """Loads a run's config, model and latest (or given) checkpoint."""
    run_dir = Path(run_dir)
    cfg, info, geom, sj = describe_run(run_dir)
    graphdef, target, _ = init_state(cfg.model, info, cfg.seed)
    ckpt = Checkpointer(run_dir / "checkpoints", read_only=True)
    if ckpt.latest_step() is None:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no checkpoint found; has this run "
                              "trained for at least one step?")
    state = ckpt.restore(target, step)
    ckpt.close()
    return LoadedRun(run_dir, cfg, info, geom, sj, graphdef, state.params, state.buffers,
                     int(state.step))


def weights_from_run(run_dir: Path, model_cfg: ModelConfig, target: TrainState
                      ) -> tuple[Any, Any]:
    """``(params, buffers)`` of ``run_dir``'s latest checkpoint, restored into ``target`` (the
    freshly built state of ``model_cfg``): the checkpointer's own check names any array whose
    structure or shape differs."""
    run_dir = Path(run_dir)
    family = load_train_config(run_dir).model.family
    if family != model_cfg.family:
        raise ConfigError(f"{run_dir}: --init-from needs a run of the same family; it is a "
                          f"{family!r} run, this is {model_cfg.family!r}")
    ckpt = Checkpointer(run_dir / "checkpoints", read_only=True)
    if ckpt.latest_step() is None:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no checkpoint to --init-from")
    state = ckpt.restore(target)
    ckpt.close()
    return state.params, state.buffers
