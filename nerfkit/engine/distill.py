"""Teacher to student distillation: ordinary training whose batches a trained run labels.

``nerfkit distill r2l --teacher runs/lego-ngp`` builds a :class:`~nerfkit.engine.config.TrainConfig`
for the student family (its ``data``/``downscale`` read from the teacher's ``scene.json``, its
``model.teacher`` set to the teacher's run directory) and calls the ordinary
:func:`~nerfkit.engine.trainer.train`: progress, checkpoints, ``--resume`` and the final evaluation
on the real test split are those of ``nerfkit train``.

For a student whose ``teacher`` is set, the engine loads the teacher run and trains from a
:class:`TeacherSource` (:func:`nerfkit.engine.trainer.make_source`). Inside the jit'd train step it draws random pseudo rays around the training
cameras (:mod:`nerfkit.data.pseudo`), optionally mixed with real training pixels, renders them
with the teacher (any family: the teacher is merged from its graph and weights held in the
source's ``data`` and called through :meth:`~nerfkit.models.base.Model.render_rays`), and returns a
:class:`~nerfkit.core.rays.Batch` whose target is the teacher's colour and whose ``extras`` carry
the teacher's per-sample ``t_mid``, ``weights`` and ``density`` ``[B, S]`` when the teacher family
outputs them (vanilla NeRF does; NeRDF uses them).

Teacher renders are made on the fly by default (every batch is new pseudo data). With
``--model.teacher-cache-rays N`` the teacher renders ``N`` pseudo rays once, before training, in
chunks written to ``RUN/teacher_cache/`` (``.npz`` files, atomically; a crash or ``--resume``
reuses the complete chunks), and batches are drawn from that cache: R2L's recipe of a fixed
pseudo dataset, which leaves every training step to the student. Cached colours are stored on a
black background with the teacher's opacity, so random backgrounds still work.
"""

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
from nerfkit.engine.config import OptPath, TrainConfig, read_json
from nerfkit.engine.run import LoadedRun, load_run
from nerfkit.errors import ConfigError
from nerfkit.fileio import atomic_path

#: Per-sample teacher outputs passed to students in ``Batch.extras`` when the teacher has them.
TEACHER_EXTRAS = ("t_mid", "weights", "density")


class TeacherCache(NamedTuple):
    """Pseudo rays the teacher rendered once (``[N]`` leading dims): colour on black ``rgb
    [N, 3]``, opacity ``acc [N]`` and the per-sample ``extras`` (``[N, S]`` each)."""

    rays: Rays
    rgb: jax.Array
    acc: jax.Array
    extras: dict


class TeacherData(NamedTuple):
    """The device-resident part of a :class:`TeacherSource` (passed into the train step)."""

    params: Any
    buffers: Any
    cameras: PseudoCameraData
    pixels: Optional[PixelData]
    cache: Optional[TeacherCache] = None


def _same_geometry(a: RayGeometry, b: RayGeometry) -> bool:
    if not (math.isclose(a.near, b.near, rel_tol=1e-5, abs_tol=1e-6)
            and math.isclose(a.far, b.far, rel_tol=1e-5, abs_tol=1e-6)):
        return False
    if (a.ndc is None) != (b.ndc is None) or a.camera_model != b.camera_model:
        return False
    return a.ndc is None or np.allclose(np.asarray(a.ndc, np.float64),
                                        np.asarray(b.ndc, np.float64), rtol=1e-5)


class TeacherSource:
    """Training batches labelled by a trained teacher run (a *source*, see
    :class:`~nerfkit.data.raysource.PixelSource`).

    Args:
      teacher: the teacher run (:class:`~nerfkit.engine.run.LoadedRun`) or its directory.
      scene: the student's training split (same dataset as the teacher's).
      student: the student's config (:class:`~nerfkit.models.student.StudentConfig`):
        ``background``, ``pseudo_poses``, ``real_fraction``, ``teacher_chunk``,
        ``teacher_cache_rays``.
      cache_dir: where the teacher cache lives (needed when ``teacher_cache_rays > 0``).
      seed: seeds the cached pseudo rays.
    Attributes:
      extra_keys: which of :data:`TEACHER_EXTRAS` the teacher provides.
    """

    def __init__(self, teacher: "str | Path | LoadedRun", scene: Scene, student: Any,
                 cache_dir: Optional[Path] = None, seed: int = 0):
        run = teacher if isinstance(teacher, LoadedRun) else load_run(teacher)
        teacher = run.run_dir
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
        cache_rays = int(getattr(student, "teacher_cache_rays", 0))
        if cache_rays > 0:
            if cache_dir is None:
                raise ConfigError("teacher_cache_rays > 0 needs a cache directory")
            self.data = self.data._replace(
                cache=build_teacher_cache(self, Path(cache_dir), cache_rays, seed))

    def _teacher_render(self, data: TeacherData, rays: Rays, background: jax.Array
                        ) -> dict[str, jax.Array]:
        def render(r: Rays, bg: jax.Array) -> dict[str, jax.Array]:
            teacher = nnx.merge(self.graphdef, data.params, data.buffers)
            out = teacher.render_rays(r, None, train=False, background=bg)
            return {k: out[k] for k in ("rgb", "acc") + TEACHER_EXTRAS if k in out}

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
            # Pseudo and cached rays come from no training image: drop the real rays' index so
            # that every batch has one pytree structure (concatenated below).
            real = real._replace(rays=real.rays._replace(camera_index=None))
            parts.append(real.rays)
            bgs.append(real.background)
        if data.cache is not None:
            return self._sample_cached(data, real, k_pseudo, k_bg, n_pseudo)
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

    def _sample_cached(self, data: TeacherData, real: Optional[Batch], key: jax.Array,
                       k_bg: jax.Array, n: int) -> Batch:
        """``n`` rays drawn uniformly from the cache (after the real pixels of ``real``, whose
        extras the teacher renders on the fly)."""
        cache = data.cache
        idx = jax.random.randint(key, (n,), 0, cache.acc.shape[0])
        take = lambda x: x[idx]
        rays = jax.tree_util.tree_map(take, cache.rays)
        bg = background_colors(k_bg, self.background, n)
        rgb = cache.rgb[idx] + (1.0 - cache.acc[idx])[:, None] * bg
        extras = {k: v[idx] for k, v in cache.extras.items()}
        if real is None:
            return Batch(rays, rgb, bg, extras)
        out = self._teacher_render(data, real.rays, real.background)
        cat = lambda a, b: jnp.concatenate([a, b], axis=0)
        return Batch(jax.tree_util.tree_map(cat, real.rays, rays), cat(real.rgb, rgb),
                     cat(real.background, bg), {k: cat(out[k], extras[k]) for k in extras})


def build_teacher_cache(source: TeacherSource, directory: Path, num_rays: int, seed: int,
                        chunk_rays: int = 1 << 16) -> TeacherCache:
    """Renders ``num_rays`` pseudo rays with ``source``'s teacher into ``directory`` (one
    ``chunk_XXXXX.npz`` per ``chunk_rays``, written atomically; chunks already there from the
    same teacher and settings are reused, others are replaced) and loads them.

    Chunk ``i`` is drawn with ``fold_in(key(seed), i)``, so an interrupted cache completes to the
    same rays. Colours are rendered on black and stored with the opacity ``acc``.
    """
    from nerfkit.fileio import write_json_atomic
    chunks = -(-num_rays // chunk_rays)
    meta = {"teacher": str(source.teacher_dir.absolute()), "mode": source.mode,
            "num_rays": num_rays, "chunk_rays": chunk_rays, "seed": seed, "version": 1}
    meta_path = directory / "cache.json"
    if meta_path.exists():
        try:
            same = json.loads(meta_path.read_text()) == meta
        except (OSError, ValueError):
            same = False
        if not same:                          # derived data of another setting: rebuild
            for f in directory.glob("chunk_*.npz"):
                f.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(meta_path, meta)

    @jax.jit
    def render_chunk(data: TeacherData, key: jax.Array) -> dict[str, jax.Array]:
        rays = sample_pseudo_rays(data.cameras, source.geom, key, chunk_rays, source.mode)
        out = source._teacher_render(data, rays, jnp.zeros((chunk_rays, 3), jnp.float32))
        fields = {f"rays.{k}": v for k, v in rays._asdict().items() if v is not None}
        return {**fields, "rgb": out["rgb"], "acc": out["acc"].reshape(chunk_rays),
                **{f"extras.{k}": out[k] for k in source.extra_keys}}

    parts: list[dict[str, np.ndarray]] = []
    base = jax.random.key(seed)
    for i in range(chunks):
        path = directory / f"chunk_{i:05d}.npz"
        arrays = None
        if path.exists():
            try:
                with np.load(path) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError, EOFError):
                arrays = None                 # a damaged chunk is rendered again
        if arrays is None:
            print(f"teacher cache: rendering chunk {i + 1}/{chunks} ({chunk_rays} rays) "
                  f"-> {path}", flush=True)
            arrays = {k: np.asarray(v) for k, v in
                      render_chunk(source.data, jax.random.fold_in(base, i)).items()}
            # A unique temporary name per writer: in a multi-process run every process renders
            # the same (deterministic) chunk, and the atomic rename makes the last one win.
            with atomic_path(path) as tmp:
                np.savez(tmp, **arrays)
        parts.append(arrays)
    cat = {k: np.concatenate([p[k] for p in parts])[:num_rays] for k in parts[0]}
    rays = Rays(**{k[5:]: jnp.asarray(v) for k, v in cat.items() if k.startswith("rays.")})
    extras = {k[7:]: jnp.asarray(v) for k, v in cat.items() if k.startswith("extras.")}
    return TeacherCache(rays, jnp.asarray(cat["rgb"]), jnp.asarray(cat["acc"]), extras)


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

    teacher: OptPath = None

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
