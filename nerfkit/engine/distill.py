"""Teacher to student distillation: ordinary training whose batches a trained run labels.

``nerfkit distill r2l --teacher runs/lego-ngp`` builds a :class:`~nerfkit.engine.config.TrainConfig`
for the student family (its ``data``/``downscale`` read from the teacher's ``scene.json``, its
``model.teacher`` set to the teacher's run directory) and calls the ordinary
:func:`~nerfkit.engine.trainer.train`: progress, checkpoints, ``--resume`` and the final evaluation
on the real test split are those of ``nerfkit train``.

The student's :meth:`~nerfkit.models.student.StudentConfig.data_source` returns a
:class:`TeacherSource`. Inside the jit'd train step it draws random pseudo rays around the training
cameras (:mod:`nerfkit.data.pseudo`), optionally mixed with real training pixels, renders them
with the teacher (any family: the teacher is merged from its graph and weights held in the
source's ``data`` and called through :meth:`~nerfkit.models.base.Model.render_rays`), and returns a
:class:`~nerfkit.core.rays.Batch` whose target is the teacher's colour and whose ``extras`` carry
the teacher's per-sample ``t_mid``, ``weights`` and ``density`` ``[B, S]`` when the teacher family
outputs them (vanilla NeRF does; NeRDF uses them). Teacher renders are made on the fly, never
cached.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nerfkit.core.rays import Batch, Rays
from nerfkit.data.pseudo import (PseudoCameraData, pseudo_camera_data, resolve_mode,
                                 sample_pseudo_rays)
from nerfkit.data.raysource import (PixelData, RayGeometry, background_colors, pixel_data,
                                    ray_geometry, sample_batch)
from nerfkit.data.scene import Scene
from nerfkit.engine.config import TrainConfig, read_json
from nerfkit.errors import ConfigError

#: Per-sample teacher outputs passed to students in ``Batch.extras`` when the teacher has them.
TEACHER_EXTRAS = ("t_mid", "weights", "density")


class TeacherData(NamedTuple):
    """The device-resident part of a :class:`TeacherSource` (passed into the train step)."""

    params: Any
    buffers: Any
    cameras: PseudoCameraData
    pixels: Optional[PixelData]


def _same_geometry(a: RayGeometry, b: RayGeometry) -> bool:
    if not (math.isclose(a.near, b.near, rel_tol=1e-5, abs_tol=1e-6)
            and math.isclose(a.far, b.far, rel_tol=1e-5, abs_tol=1e-6)):
        return False
    if (a.ndc is None) != (b.ndc is None):
        return False
    return a.ndc is None or np.allclose(np.asarray(a.ndc, np.float64),
                                        np.asarray(b.ndc, np.float64), rtol=1e-5)


class TeacherSource:
    """Training batches labelled by a trained teacher run (a *source*, see
    :class:`~nerfkit.data.raysource.PixelSource`).

    Args:
      teacher: the teacher's run directory.
      scene: the student's training split (same dataset as the teacher's).
      student: the student's config (:class:`~nerfkit.models.student.StudentConfig`):
        ``background``, ``pseudo_poses``, ``real_fraction``, ``teacher_chunk``.
    Attributes:
      extra_keys: which of :data:`TEACHER_EXTRAS` the teacher provides.
    """

    def __init__(self, teacher: str | Path, scene: Scene, student: Any):
        from nerfkit.engine.trainer import load_run
        run = load_run(teacher)
        self.geom = ray_geometry(scene)
        if not _same_geometry(run.geom, self.geom):
            raise ConfigError(f"{teacher}: the teacher was trained with ray geometry {run.geom}, "
                              f"the student's data gives {self.geom}; distil on the teacher's "
                              "dataset (leave --data unset)")
        self.teacher_dir = Path(teacher)
        self.teacher_family = run.cfg.model.family
        self.graphdef = run.graphdef
        self.mode = resolve_mode(student.pseudo_poses, self.geom.ndc is not None)
        self.background = student.background
        self.real_fraction = float(student.real_fraction)
        self.chunk = int(student.teacher_chunk)
        cams = scene.cameras
        intr = np.stack([cams.fx, cams.fy, cams.cx, cams.cy], axis=-1)
        self.data = TeacherData(
            params=run.params, buffers=run.buffers,
            cameras=pseudo_camera_data(cams.c2w, intr, cams.width, cams.height, scene.times),
            pixels=pixel_data(scene) if self.real_fraction > 0 else None)
        probe = jax.eval_shape(
            lambda d: self._teacher_render(d, sample_pseudo_rays(
                d.cameras, self.geom, jax.random.key(0), 2, self.mode), jnp.ones((2, 3))),
            self.data)
        self.extra_keys = tuple(k for k in TEACHER_EXTRAS if k in probe)

    def _teacher_render(self, data: TeacherData, rays: Rays, background: jax.Array
                        ) -> dict[str, jax.Array]:
        def render(r: Rays, bg: jax.Array) -> dict[str, jax.Array]:
            teacher = nnx.merge(self.graphdef, data.params, data.buffers)
            out = teacher.render_rays(r, None, train=False, background=bg)
            return {k: out[k] for k in ("rgb",) + TEACHER_EXTRAS if k in out}

        n = rays.origins.shape[0]
        c = self.chunk
        if c <= 0 or n <= c or n % c:
            out = render(rays, background)
        else:                                   # bounded memory: one chunk at a time
            split = lambda x: x.reshape(n // c, c, *x.shape[1:])
            out = jax.lax.map(lambda a: render(*a),
                              jax.tree_util.tree_map(split, (rays, background)))
            out = jax.tree_util.tree_map(lambda x: x.reshape(n, *x.shape[2:]), out)
        return jax.lax.stop_gradient(out)

    def sample(self, data: TeacherData, key: jax.Array, batch_size: int) -> Batch:
        """``batch_size`` rays (the first ``round(real_fraction * batch_size)`` real training
        pixels, the rest pseudo rays) with the teacher's colours (real pixels keep their ground
        truth) and the teacher's per-sample extras."""
        n_real = int(round(self.real_fraction * batch_size)) if data.pixels is not None else 0
        n_pseudo = batch_size - n_real
        k_real, k_pseudo, k_bg = jax.random.split(key, 3)
        parts: list[Rays] = []
        bgs: list[jax.Array] = []
        real = None
        if n_real:
            real = sample_batch(data.pixels, self.geom, k_real, n_real, self.background)
            parts.append(real.rays)
            bgs.append(real.background)
        if n_pseudo:
            parts.append(sample_pseudo_rays(data.cameras, self.geom, k_pseudo, n_pseudo,
                                            self.mode))
            bgs.append(background_colors(k_bg, self.background, n_pseudo))
        rays = parts[0] if len(parts) == 1 else jax.tree_util.tree_map(
            lambda *x: jnp.concatenate(x, axis=0), *parts)
        background = jnp.concatenate(bgs, axis=0)
        out = self._teacher_render(data, rays, background)
        rgb = out["rgb"]
        if real is not None:
            rgb = jnp.concatenate([real.rgb, rgb[n_real:]], axis=0)
        extras = {k: out[k] for k in TEACHER_EXTRAS if k in out}
        return Batch(rays, rgb, background, extras)


@dataclasses.dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """Distilling a trained radiance field (``--teacher RUN``) into a student family.

    Every option of ``nerfkit train`` applies to the student run. ``--data`` and ``--downscale``
    default to the teacher's (from its ``scene.json``); for scenes with a black background the
    student's ``white`` background becomes ``black``. Mix real training pixels into every batch
    with ``--model.real-fraction``.

    Attributes:
      teacher: run directory of the trained teacher (any radiance-field family).
    """

    teacher: Optional[Path] = None

    @classmethod
    def from_train(cls, cfg: TrainConfig, **changes: Any) -> "DistillConfig":
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
        values.update(changes)
        return cls(**values)


def student_train_config(cfg: DistillConfig) -> TrainConfig:
    """The :class:`TrainConfig` of the student run that ``cfg`` describes."""
    from nerfkit.models.student import StudentConfig
    if cfg.teacher is None:
        raise ConfigError("distill: --teacher RUN is required (a run directory written by "
                          "nerfkit train)")
    teacher = Path(cfg.teacher).absolute()
    if not (teacher / "config.json").exists():
        raise ConfigError(f"{cfg.teacher}: not a nerfkit run directory (no config.json)")
    sj = read_json(teacher / "scene.json", "teacher scene description")
    if not isinstance(cfg.model, StudentConfig):
        raise ConfigError(f"distill: family {cfg.model.family!r} does not learn from a teacher")
    model = cfg.model
    try:
        white = bool(sj["info"]["white_background"])
        data = cfg.data if cfg.data is not None else sj["data"]
        downscale = cfg.downscale if cfg.downscale is not None else sj["downscale"]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{teacher / 'scene.json'}: malformed ({e})") from e
    if not white and model.background == "white":
        model = dataclasses.replace(model, background="black")
    model = dataclasses.replace(model, teacher=str(teacher))
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
    values.update(model=model, data=data, downscale=downscale)
    return TrainConfig(**values)


def teacher_test_psnr(teacher: str | Path) -> Optional[float]:
    """The teacher's test PSNR from its ``eval/test.json``, if it was evaluated."""
    path = Path(teacher) / "eval" / "test.json"
    try:
        return float(json.loads(path.read_text())["psnr"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def distill(cfg: DistillConfig, console=None) -> dict[str, Any]:
    """Trains the student run described by ``cfg``; returns :func:`train`'s summary plus
    ``teacher`` and ``teacher_psnr`` (``None`` if the teacher has no test evaluation)."""
    from nerfkit.engine.trainer import train
    train_cfg = student_train_config(cfg)
    summary = train(train_cfg, console=console)
    summary["teacher"] = train_cfg.model.teacher
    summary["teacher_psnr"] = teacher_test_psnr(train_cfg.model.teacher)
    return summary
