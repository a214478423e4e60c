"""The generic train loop around one pure jit'd step of ``(state, data, key)``.

Nothing here knows about a particular family: the model renders rays and returns its loss
(:class:`nerfkit.models.base.Model`). A run directory holds everything about a run::

    RUN/config.json      resolved config (plain JSON)      RUN/metrics.jsonl  one line per log
    RUN/scene.json       what the model knows of the scene  RUN/checkpoints/   orbax, last N kept
    RUN/eval/<split>.json                                   evaluations

Devices and processes (:mod:`nerfkit.engine.distributed`): the step runs on a ``('data',)`` mesh
over every device (one device: the single-device program); each device draws and renders its
share of the global batch, parameters and optimiser state are replicated. In a multi-process run
every process runs this same loop; only process 0 writes files other than checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nerfkit.core import losses as losses_lib
from nerfkit.core import metrics as metrics_lib
from nerfkit.core.distortion import PINHOLE, check_camera_model
from nerfkit.core.sharding import shard_batch
from nerfkit.data import load_scene
from nerfkit.data.raysource import PixelSource, RayGeometry, ray_geometry
from nerfkit.data.scene import Scene
from nerfkit.engine import distributed, faults
from nerfkit.engine import progress as progress_lib
from nerfkit.engine.checkpoint import Checkpointer
from nerfkit.engine.config import (TrainConfig, load_train_config, read_json, save_train_config,
                                   to_dict, write_json_atomic)
from nerfkit.engine.render import Renderer, evaluate
from nerfkit.errors import CheckpointError, ConfigError, DataError, DivergenceError
from nerfkit.models.base import ModelConfig, SceneInfo


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree; donated to each step)."""

    params: Any
    buffers: Any
    opt_state: Any
    step: jax.Array


def scene_info(scene: Scene) -> SceneInfo:
    aabb = np.asarray(scene.aabb, np.float64)
    return SceneInfo(
        aabb=(tuple(map(float, aabb[0])), tuple(map(float, aabb[1]))),
        near=float(scene.near), far=float(scene.far), ndc=bool(scene.ndc),
        white_background=bool(scene.white_background), has_time=scene.times is not None,
        num_frames=0 if scene.times is None else int(len(np.unique(scene.times))))


def build_model(model_cfg: ModelConfig, info: SceneInfo, seed: int
                ) -> tuple[nnx.GraphDef, Any, Any]:
    """Builds a model and splits it into ``(graphdef, params, buffers)``."""
    model = model_cfg.build(info, nnx.Rngs(seed))
    graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
    return graphdef, params, buffers


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, source: Any,
                    batch_size: int, skip_nonfinite: bool, mesh: Optional[jax.sharding.Mesh] = None,
                    microbatch: Optional[int] = None):
    """Returns the jit'd ``step(state, data, key, lr) -> (state, metrics)`` drawing batches of
    ``batch_size`` from ``source`` (see :class:`~nerfkit.data.raysource.PixelSource`).

    With a device ``mesh`` (:func:`~nerfkit.engine.distributed.data_mesh`) every argument and
    result is replicated on it, and the batch is split along its ``data`` axis: each device draws
    its share (the random draws of an unsplit batch, so the batch does not depend on the number
    of devices) and renders it; XLA sums the gradients across devices.

    With ``microbatch`` (a divisor of ``batch_size``), the batch is split into
    ``batch_size // microbatch`` micro-batches whose gradients are averaged inside the one jit'd
    step: the same gradient as the whole batch for per-ray mean losses (a masked mean, as with
    ``ray_mask``, becomes a mean of per-micro-batch means), with activations bounded by the
    micro-batch.
    """
    if microbatch is not None and (microbatch <= 0 or batch_size % microbatch):
        raise ValueError(f"microbatch {microbatch} must divide batch_size {batch_size}")
    chunks = 1 if microbatch is None else batch_size // microbatch

    def step_fn(state: TrainState, data: Any, key: jax.Array, lr: jax.Array):
        k_batch, k_pre, k_render, k_loss = jax.random.split(key, 4)
        batch = shard_batch(source.sample(data, k_batch, batch_size))
        model = nnx.merge(graphdef, state.params, state.buffers)
        model.pre_step(state.step, k_pre)
        _, _, buffers = nnx.split(model, nnx.Param, ...)

        def loss_fn(params, buffers, batch, k_render, k_loss):
            m = nnx.merge(graphdef, params, buffers, copy=True)  # copy: loss may update buffers
            out = m.render_rays(batch.rays, k_render, train=True, background=batch.background)
            loss, aux = m.loss(out, batch, k_loss)
            aux = dict(aux)
            aux["mse"] = losses_lib.mse(out["rgb"], batch.rgb, out.get("ray_mask"))
            # Model.loss may update non-parameter state (e.g. R2L's hard-ray pool); keep it.
            return loss, (aux, nnx.split(m, nnx.Param, ...)[2])

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        if chunks == 1:
            (loss, (aux, buffers)), grads = grad_fn(state.params, buffers, batch, k_render, k_loss)
        else:
            # Micro-batch i holds rays i, i + chunks, i + 2 chunks, ...: with the batch split over
            # devices, every micro-batch spans all of them. A Python loop (unrolled): XLA:CPU runs
            # the MLPs of a rolled loop body 2-3x slower (measured on the NeRF field), unrolled
            # copies at the speed of separate calls.
            micro = jax.tree_util.tree_map(
                lambda x: x.reshape(x.shape[0] // chunks, chunks, *x.shape[1:]), batch)
            acc = None
            for i in range(chunks):
                b = jax.tree_util.tree_map(lambda x: x[:, i], micro)
                (loss_i, (aux_i, buffers)), grads_i = grad_fn(
                    state.params, buffers, b, jax.random.fold_in(k_render, i),
                    jax.random.fold_in(k_loss, i))
                part = jax.tree_util.tree_map(lambda g: g / chunks, (loss_i, aux_i, grads_i))
                acc = part if acc is None else jax.tree_util.tree_map(jnp.add, acc, part)
            loss, aux, grads = acc
        aux["psnr"] = metrics_lib.psnr(aux.pop("mse"))
        buffers = jax.lax.stop_gradient(buffers)
        opt_state = state.opt_state
        opt_state.hyperparams["learning_rate"] = lr
        updates, opt_state = tx.update(grads, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite_grads = jnp.all(jnp.asarray(
            [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
        finite_params = jnp.all(jnp.asarray(  # a finite gradient can still overflow a parameter
            [jnp.all(jnp.isfinite(p)) for p in jax.tree_util.tree_leaves(params)]))
        finite = jnp.isfinite(loss) & finite_grads & finite_params
        new = TrainState(params, buffers, opt_state, state.step + 1)
        if skip_nonfinite:
            old = TrainState(state.params, buffers, state.opt_state, state.step + 1)
            new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
        aux["loss"] = loss
        aux["finite"] = finite
        aux["finite_grads"], aux["finite_params"] = finite_grads, finite_params
        return new, aux

    if mesh is None:
        return jax.jit(step_fn, donate_argnums=(0,))

    def sharded_step(state, data, key, lr):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return step_fn(state, data, key, lr)

    rep = distributed.replicated(mesh)
    return jax.jit(sharded_step, in_shardings=(rep, rep, rep, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,))


def _prepare_run_dir(cfg: TrainConfig) -> tuple[Path, bool]:
    """Checks ``cfg.output`` against ``--resume``/``--overwrite`` and creates (or empties) it;
    returns it and whether an earlier run is resumed. Every process checks (so that a user error
    ends all of them alike) before process 0 changes anything."""
    out = Path(cfg.output)
    action = "create"
    if out.exists() and any(out.iterdir()):
        if cfg.resume:
            action = "keep"
        elif cfg.overwrite:
            if not (out / "config.json").exists():
                raise ConfigError(f"{out}: refusing to --overwrite a directory that is not a "
                                  "nerfkit run (no config.json)")
            action = "replace"
        else:
            raise ConfigError(f"{out}: run directory already exists; pass --resume to continue "
                              "it or --overwrite to replace it")
    elif cfg.resume:
        raise ConfigError(f"{out}: nothing to resume (no such run)")
    resuming = action == "keep" and (out / "config.json").exists()
    distributed.barrier("nerfkit: run directory checked")
    error = None
    if distributed.is_main() and action != "keep":
        try:
            if action == "replace":
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            error = ConfigError(f"{out}: cannot create the run directory: {e.strerror or e}")
    if distributed.from_main(float(error is None)) != 1.0:
        raise error or ConfigError(f"{out}: process 0 could not create the run directory")
    return out, resuming


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
                          **({} if mf is None else {"max_frames": mf}))


def load_run(run_dir: os.PathLike, step: Optional[int] = None) -> LoadedRun:
    """Loads a run's config, model and latest (or given) checkpoint."""
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
    graphdef, params, buffers = build_model(cfg.model, info, cfg.seed)
    tx = cfg.model.optimizer()
    target = TrainState(params, buffers, tx.init(params), jnp.zeros((), jnp.int32))
    ckpt = Checkpointer(run_dir / "checkpoints", read_only=True)
    if ckpt.latest_step() is None:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no checkpoint found; has this run "
                              "trained for at least one step?")
    state = ckpt.restore(target, step)
    ckpt.close()
    return LoadedRun(run_dir, cfg, info, geom, sj, graphdef, state.params, state.buffers,
                     int(state.step))


def _progress_fraction(cfg: TrainConfig, max_steps: Optional[int], step: int,
                       elapsed: float) -> float:
    fr = 0.0
    if max_steps:
        fr = max(fr, step / max_steps)
    if cfg.max_minutes:
        fr = max(fr, elapsed / (60.0 * cfg.max_minutes))
    return min(fr, 1.0)


def periodic_eval_views(num_views: int, eval_views: int) -> list[int]:
    """Indices of the ``eval_views`` evenly spaced test views of the periodic evaluations
    (``--eval-every``)."""
    return np.linspace(0, num_views - 1, eval_views).round().astype(int).tolist()


def train(cfg: TrainConfig, console=None) -> dict[str, Any]:
    """Trains ``cfg.model`` on ``cfg.data``; returns a summary (final step, metrics, eval)."""
    run_dir, resuming = _prepare_run_dir(cfg)
    main = distributed.is_main()
    if resuming:
        old = load_train_config(run_dir)
        if to_dict(old.model) != to_dict(cfg.model):
            was, now = to_dict(old.model), to_dict(cfg.model)
            diff = ", ".join(f"--model.{k.replace('_', '-')} {was.get(k)!r} in the run, "
                             f"{now.get(k)!r} now" for k in sorted(set(was) | set(now))
                             if was.get(k) != now.get(k))
            raise ConfigError(f"{run_dir / 'config.json'}: --resume with a different model "
                              f"config than the run was trained with ({diff})")
    model_cfg = cfg.model
    scene = cfg.load_split("train")
    test_scene = None
    if cfg.final_eval or cfg.eval_minutes or (cfg.eval_every and cfg.eval_views > 0):
        try:
            test_scene = cfg.load_split("test")
        except DataError as e:  # no test split: train without evaluation; a broken one: error
            if "unknown split" not in e.problem:
                raise
    geom = ray_geometry(scene)
    info = scene_info(scene)
    if main:
        save_train_config(run_dir, cfg)
        save_scene_json(run_dir, cfg, scene, geom)

    mesh = distributed.data_mesh()
    replicated = distributed.replicated(mesh)
    graphdef, params, buffers = build_model(model_cfg, info, cfg.seed)
    ckpt = Checkpointer(run_dir / "checkpoints", keep=cfg.keep_checkpoints)
    restoring = resuming and ckpt.latest_step() is not None
    tx = model_cfg.optimizer()
    if cfg.init_from is not None and not restoring:
        params, buffers = _weights_from_run(cfg.init_from, model_cfg, TrainState(
            params, buffers, tx.init(params), jnp.zeros((), jnp.int32)))
    # Fresh and restored states alike are replicated on the mesh, so that a resumed run executes
    # exactly the same compiled step as an uninterrupted one (bit-identical results), and a
    # checkpoint written with any number of devices or processes restores onto this mesh.
    state = distributed.put(TrainState(params, buffers, tx.init(params),
                                       jnp.zeros((), jnp.int32)), replicated)
    if restoring:
        state = ckpt.restore(state)
    start_step = int(state.step)

    max_steps = cfg.max_steps
    if max_steps is None and cfg.max_minutes is None:
        max_steps = model_cfg.default_steps
    source = model_cfg.data_source(scene, cfg) or PixelSource(scene, model_cfg.background)
    data = distributed.put(source.data, replicated)
    step_fn = make_train_step(graphdef, tx, source, model_cfg.batch_size,
                              cfg.on_nonfinite == "skip", mesh, model_cfg.microbatch)
    renderer = lambda state: Renderer(graphdef, state.params, state.buffers, geom,
                                      model_cfg.render_chunk, mesh)
    base_key = jax.random.key(cfg.seed)
    metrics_path = run_dir / "metrics.jsonl"
    eval_idx = (periodic_eval_views(len(test_scene), cfg.eval_views)
                if test_scene is not None and cfg.eval_views > 0 else [])

    if not main:  # only process 0 reports progress and writes metrics
        from rich.console import Console
        console = Console(quiet=True)
    prog = progress_lib.TrainProgress(total_steps=max_steps, max_minutes=cfg.max_minutes,
                                      start_step=start_step, console=console)
    step = start_step
    train_time = _rewind_metrics(metrics_path, start_step) if resuming and main else 0.0
    # Time limits and time marks must end every process at the same step: process 0's clock rules.
    timed = cfg.max_minutes is not None or bool(cfg.eval_minutes)
    train_time = distributed.from_main(train_time)
    if resuming and start_step:
        prog.log(f"resuming from checkpoint {start_step} ({ckpt.directory / str(start_step)})")
    t_resume = train_time
    rays_per_s = 0.0
    last: dict[str, float] = {}
    last_saved = start_step
    pending_marks = sorted(m for m in cfg.eval_minutes if 60.0 * m > train_time)
    mark_eval: Optional[dict] = None
    metrics_file = open(metrics_path, "a") if main else contextlib.nullcontext(_NullFile())
    with prog, metrics_file as mf:
        while True:
            if max_steps is not None and step >= max_steps:
                break
            if cfg.max_minutes is not None and train_time >= 60.0 * cfg.max_minutes:
                break
            lr = model_cfg.learning_rate(
                _progress_fraction(cfg, max_steps, step, train_time), step)
            t0 = time.perf_counter()
            data_k, lr_k = faults.poison(step + 1, data, lr)  # tests only; else (data, lr)
            state, aux = step_fn(state, data_k, jax.random.fold_in(base_key, step),
                                 jnp.float32(lr_k))
            faults.kill_if("kill-step", step + 1)
            loss = float(aux["loss"])
            dt = time.perf_counter() - t0
            train_time += dt
            if timed:
                train_time = distributed.from_main(train_time)
            step += 1
            if not bool(aux["finite"]):
                what = ("loss" if not math.isfinite(loss) else
                        "gradients" if not bool(aux.get("finite_grads", True)) else
                        "parameters after the update")
                msg = f"non-finite {what} at step {step} (loss {loss}, learning rate {lr:.3g}); "
                if cfg.on_nonfinite == "stop":
                    good = ckpt.latest_step()
                    raise DivergenceError(
                        msg + (f"stopped; the last good checkpoint (step {good}) is kept in "
                               f"{ckpt.directory}" if good is not None else
                               "stopped before the first checkpoint") +
                        ". Lower the learning rate, or pass --on-nonfinite skip to skip such "
                        "steps.")
                prog.log(msg + "update skipped")
            rays_per_s = 0.9 * rays_per_s + 0.1 * (model_cfg.batch_size / dt) if step - start_step > 2 \
                else model_cfg.batch_size / dt
            last = {"loss": loss, "psnr": float(aux["psnr"]), "lr": lr, "rays_per_s": rays_per_s}
            prog.update(step, train_time - t_resume, last)
            if step % cfg.log_every == 0 or step == max_steps:
                mf.write(json.dumps({"step": step, "time": train_time, **last}) + "\n")
                mf.flush()
            if cfg.eval_every and eval_idx and step % cfg.eval_every == 0:
                ev = evaluate(renderer(state), test_scene, eval_idx)
                mf.write(json.dumps({"step": step, "time": train_time, "eval_psnr": ev["psnr"],
                                     "eval_ssim": ev["ssim"]}) + "\n")
                prog.log(f"step {step}: test PSNR {ev['psnr']:.2f} dB on {len(eval_idx)} views")
            while pending_marks and train_time >= 60.0 * pending_marks[0] and test_scene:
                mark = pending_marks.pop(0)
                mark_eval = _eval_at_mark(run_dir, mark, step, train_time, renderer(state),
                                          test_scene, mf, prog)
            if step % cfg.checkpoint_every == 0:
                ckpt.save(step, state)
                last_saved = step
        if step != last_saved or ckpt.latest_step() is None:
            ckpt.save(step, state)
        mf.write(json.dumps({"step": step, "time": train_time, "final": True, **last}) + "\n")
    ckpt.close()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "step": step,
                               "train_seconds": train_time, **last}
    if cfg.final_eval and test_scene is not None:
        if mark_eval is not None and mark_eval["step"] == step:
            ev = dict(mark_eval)  # the last time mark evaluated this very state already
        else:
            ev = evaluate(renderer(state), test_scene)
        ev["step"] = step
        if main:
            write_json_atomic(run_dir / "eval" / "test.json", ev)
        for mark in pending_marks:  # marks the time limit reached: the final state is theirs
            if main and cfg.max_minutes is not None and mark >= cfg.max_minutes:
                write_json_atomic(run_dir / "eval" / f"test_{mark:g}min.json",
                                  {**ev, "minutes": mark, "train_seconds": train_time})
        summary["test_psnr"] = ev["psnr"]
        summary["test_ssim"] = ev["ssim"]
    return summary


def _weights_from_run(run_dir: Path, model_cfg: ModelConfig, target: TrainState
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


class _NullFile:
    """Where the metrics of processes other than 0 go."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _eval_at_mark(run_dir, mark, step, train_time, renderer, test_scene, mf, prog) -> dict:
    """Evaluates every test view at a training-time mark (``--eval-minutes``)."""
    ev = evaluate(renderer, test_scene)
    ev.update(step=step, minutes=mark, train_seconds=train_time)
    if distributed.is_main():
        write_json_atomic(run_dir / "eval" / f"test_{mark:g}min.json", ev)
    mf.write(json.dumps({"step": step, "time": train_time, "eval_minutes": mark,
                         "eval_psnr": ev["psnr"], "eval_ssim": ev["ssim"]}) + "\n")
    mf.flush()
    prog.log(f"{mark:g} min (step {step}): test PSNR {ev['psnr']:.2f} dB, SSIM {ev['ssim']:.4f} "
             f"on {ev['num_views']} views")
    return ev


def _rewind_metrics(metrics_path: Path, step: int) -> float:
    """Makes a resumed run's metrics log consistent with the checkpoint it resumes from.

    Drops the lines of steps after ``step`` (logged before a crash, they are trained again) and any
    line cut short by one; rewrites the file atomically. Returns the training seconds already spent
    at ``step``.
    """
    if not metrics_path.exists():
        return 0.0
    kept, t = [], 0.0
    lines = metrics_path.read_text().splitlines()
    for line in lines:
        try:
            rec = json.loads(line)
            if int(rec["step"]) > step:
                continue
            t = max(t, float(rec.get("time", 0.0)))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        kept.append(line)
    if kept != lines:
        tmp = metrics_path.with_name(metrics_path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, metrics_path)
    return t
