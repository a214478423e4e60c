"""The generic train loop around one pure jit'd step of ``(state, data, key)``.

Nothing here knows about a particular family: the model renders rays and returns its loss
(:class:`nerfkit.models.base.Model`). A run directory holds everything about a run::

    RUN/config.json      resolved config (plain JSON)      RUN/metrics.jsonl  one line per log
    RUN/scene.json       what the model knows of the scene  RUN/checkpoints/   orbax, last N kept
    RUN/eval/<split>.json                                   evaluations
    RUN/tensorboard/     with --logger tensorboard (:mod:`nerfkit.engine.logger`)

Devices and processes (:mod:`nerfkit.engine.distributed`): the step runs on a ``('data',)`` mesh
over every device (one device: the single-device program); each device draws and renders its
share of the global batch, parameters and optimiser state are replicated. In a multi-process run
every process runs this same loop; only process 0 writes files other than checkpoints.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nerfkit.core import losses as losses_lib
from nerfkit.core import metrics as metrics_lib
from nerfkit.core.sharding import shard_batch
from nerfkit.core.rays import FrameBatching
from nerfkit.data.raysource import FrameSource, PixelSource, holdout_mask, ray_geometry
from nerfkit.data.scene import Scene
from nerfkit.engine import distributed, faults
from nerfkit.engine import progress as progress_lib
from nerfkit.engine.checkpoint import Checkpointer
from nerfkit.engine.distill import DistillConfig, TeacherSource, student_train_config, teacher_test_psnr
from nerfkit.engine.config import (TrainConfig, load_train_config, save_train_config,
                                   to_dict, write_json_atomic)
from nerfkit.engine.renderer import Renderer
from nerfkit.engine.evaluate import evaluate
from nerfkit.engine.logger import RunLogger, side_by_side
from nerfkit.errors import ConfigError, DataError, DivergenceError
from nerfkit.fileio import write_text_atomic
from nerfkit.engine.run import (TrainState, build_model, load_run, save_scene_json, scene_info,
                                weights_from_run)
from nerfkit.models.base import ModelConfig
from nerfkit.models.student import StudentConfig


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


def make_source(model_cfg: ModelConfig, scene: Scene, cfg: TrainConfig) -> Any:
    """Where training batches come from: a student with a teacher learns from the teacher's
    renders (the engine loads the teacher run and hands it to a
    :class:`~nerfkit.engine.distill.TeacherSource`); other families from their
    :meth:`~nerfkit.models.base.ModelConfig.data_source`, by default random training pixels
    (:class:`~nerfkit.data.raysource.PixelSource`); a family that asks for
    :class:`~nerfkit.core.rays.FrameBatching` gets a
    :class:`~nerfkit.data.raysource.FrameSource`."""
    if isinstance(model_cfg, StudentConfig) and model_cfg.teacher:
        source = TeacherSource(load_run(model_cfg.teacher), scene, model_cfg,
                               cache_dir=Path(cfg.output) / "teacher_cache", seed=int(cfg.seed))
        model_cfg.check_teacher(source)
        return source
    source = model_cfg.data_source(scene, cfg)
    if isinstance(source, FrameBatching):
        return frame_source(source, scene, model_cfg)
    return source or PixelSource(scene, model_cfg.background)


def frame_source(spec: FrameBatching, scene: Scene, model_cfg: ModelConfig) -> FrameSource:
    """The :class:`~nerfkit.data.raysource.FrameSource` a family's ``spec`` asks for."""
    n, h, w = scene.images.shape[:3]
    if scene.times is None:
        raise ConfigError("frame-stratified batches need a time-varying signal or dynamic scene "
                          "(per-frame times)")
    held = holdout_mask(n, h, w, spec.holdout, spec.holdout_seed) if spec.holdout > 0 else None
    source = FrameSource(scene, spec.frames_per_batch, held, model_cfg.background)
    if model_cfg.microbatch is not None:
        chunks = model_cfg.batch_size // model_cfg.microbatch
        if source.frames_per_batch % chunks:
            raise ConfigError(f"--model.microbatch {model_cfg.microbatch}: frame-stratified "
                              f"batches split by frames, and {source.frames_per_batch} frames "
                              f"per step do not split into {chunks} micro-batches")
    return source


def _prepare_run_dir(cfg: TrainConfig) -> tuple[Path, bool]:
    """Checks ``cfg.output`` against ``--resume``/``--overwrite`` and creates (or empties) it;
    returns it and whether an earlier run is resumed. Every process checks (so that a user error
    ends all of them alike) before process 0 changes anything."""
    out = Path(cfg.output)
    action = "create"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; choose another --output")
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


def _progress_fraction(cfg: TrainConfig, max_steps: Optional[int], step: int,
                       elapsed: float) -> float:
    fr = 0.0
    if max_steps:
        fr = max(fr, step / max_steps)
    if cfg.max_minutes:
        fr = max(fr, elapsed / (60.0 * cfg.max_minutes))
    return min(fr, 1.0)


#: Largest share of the training time the periodic (``--eval-every``) evaluations may take: an
#: evaluation is skipped while those so far cost more than this fraction of the time trained.
PERIODIC_EVAL_BUDGET = 0.1


def periodic_eval_views(num_views: int, eval_views: int) -> list[int]:
    """Indices of the ``eval_views`` evenly spaced test views of the periodic evaluations
    (``--eval-every``)."""
    return np.linspace(0, num_views - 1, eval_views).round().astype(int).tolist()


class Callback:
    """Hooks into :func:`train`; subclass and override what you need (every method is optional).

    ``before_step`` may replace the step's inputs (the test suite's fault injection,
    :class:`~nerfkit.engine.faults.FaultInjection`, poisons them this way); the others observe.
    Steps count from 1 (``step`` is the step about to run / just run).
    """

    def on_train_start(self, run_dir: Path, state: TrainState, start_step: int) -> None:
        pass

    def before_step(self, step: int, data: Any, lr: float) -> tuple[Any, float]:
        return data, lr

    def after_step(self, step: int, state: TrainState, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, step: int, state: TrainState) -> None:
        pass

    def on_train_end(self, summary: dict[str, Any]) -> None:
        pass


def _check_resume_config(run_dir: Path, cfg: TrainConfig) -> None:
    """A resumed run must keep the model config it was trained with (except the hash-encoding
    ``backend``, which changes the speed, not the parameters: runs saved with ``jax`` or ``ffi``
    resume under today's ``auto`` default)."""
    old = load_train_config(run_dir)
    was, now = to_dict(old.model), to_dict(cfg.model)
    was.pop("backend", None)
    now.pop("backend", None)
    if was != now:
        diff = ", ".join(f"--model.{k.replace('_', '-')} {was.get(k)!r} in the run, "
                         f"{now.get(k)!r} now" for k in sorted(set(was) | set(now))
                         if was.get(k) != now.get(k))
        raise ConfigError(f"{run_dir / 'config.json'}: --resume with a different model "
                          f"config than the run was trained with ({diff})")


def _load_splits(cfg: TrainConfig) -> tuple[Scene, Optional[Scene]]:
    """The training split and, when any evaluation is asked for, the test split (``None`` if the
    dataset has none; a broken one is an error)."""
    scene = cfg.load_split("train")
    test_scene = None
    if cfg.final_eval or cfg.eval_minutes or (cfg.eval_every and cfg.eval_views > 0):
        try:
            test_scene = cfg.load_split("test")
        except DataError as e:
            if "unknown split" not in e.problem:
                raise
    return scene, test_scene


def _initial_state(cfg: TrainConfig, info, ckpt: Checkpointer, resuming: bool, mesh):
    """The model's graph, optimiser and state: fresh, from ``--init-from`` weights, or restored
    from the run's latest checkpoint. Every state is replicated on the mesh, so that a resumed run
    executes exactly the same compiled step as an uninterrupted one (bit-identical results), and a
    checkpoint written with any number of devices or processes restores onto this mesh."""
    model_cfg = cfg.model
    graphdef, params, buffers = build_model(model_cfg, info, cfg.seed)
    restoring = resuming and ckpt.latest_step() is not None
    tx = model_cfg.optimizer()
    if cfg.init_from is not None and not restoring:
        params, buffers = weights_from_run(cfg.init_from, model_cfg, TrainState(
            params, buffers, tx.init(params), jnp.zeros((), jnp.int32)))
    state = distributed.put(TrainState(params, buffers, tx.init(params),
                                       jnp.zeros((), jnp.int32)), distributed.replicated(mesh))
    if restoring:
        state = ckpt.restore(state)
    return graphdef, tx, state


def _nonfinite_message(aux: dict, loss: float, step: int, lr: float) -> str:
    what = ("loss" if not math.isfinite(loss) else
            "gradients" if not bool(aux.get("finite_grads", True)) else
            "parameters after the update")
    return f"non-finite {what} at step {step} (loss {loss}, learning rate {lr:.3g}); "


def train(cfg: TrainConfig, console=None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Trains ``cfg.model`` on ``cfg.data``; returns a summary (final step, metrics, eval).

    ``callbacks`` (:class:`Callback`) observe the run or replace a step's inputs. With
    ``NERFKIT_TEST_FAULTS`` set (the test suite), fault injection is added as one of them.
    """
    callbacks = [*callbacks, *faults.callbacks()]
    run_dir, resuming = _prepare_run_dir(cfg)
    main = distributed.is_main()
    if resuming:
        _check_resume_config(run_dir, cfg)
    model_cfg = cfg.model
    scene, test_scene = _load_splits(cfg)
    geom = ray_geometry(scene)
    info = scene_info(scene)
    if main:
        save_train_config(run_dir, cfg)
        save_scene_json(run_dir, cfg, scene, geom)

    mesh = distributed.data_mesh()
    replicated = distributed.replicated(mesh)
    ckpt = Checkpointer(run_dir / "checkpoints", keep=cfg.keep_checkpoints)
    graphdef, tx, state = _initial_state(cfg, info, ckpt, resuming, mesh)
    start_step = int(state.step)

    max_steps = cfg.max_steps
    if max_steps is None and cfg.max_minutes is None:
        max_steps = model_cfg.default_steps
    source = make_source(model_cfg, scene, cfg)
    data = distributed.put(source.data, replicated)
    step_fn = make_train_step(graphdef, tx, source, model_cfg.batch_size,
                              cfg.on_nonfinite == "skip", mesh, model_cfg.microbatch)
    base_renderer: list[Renderer] = []

    def renderer(state: TrainState) -> Renderer:
        """A renderer of ``state``; built once, so evaluations reuse its compiled functions."""
        if not base_renderer:
            base_renderer.append(Renderer(graphdef, state.params, state.buffers, geom,
                                          model_cfg.render_chunk, mesh))
        return base_renderer[0].with_params(state.params, state.buffers)
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
    for cb in callbacks:
        cb.on_train_start(run_dir, state, start_step)
    t_resume = train_time
    rays_per_s = 0.0
    last: dict[str, float] = {}
    last_saved = start_step
    pending_marks = sorted(m for m in cfg.eval_minutes if 60.0 * m > train_time)
    mark_eval: Optional[dict] = None
    eval_seconds = 0.0  # spent on periodic (--eval-every) evaluations
    logger = RunLogger(run_dir, cfg.logger, enabled=main,
                       purge_step=start_step + 1 if resuming else None)
    with prog, logger:
        while True:
            if max_steps is not None and step >= max_steps:
                break
            if cfg.max_minutes is not None and train_time >= 60.0 * cfg.max_minutes:
                break
            lr = model_cfg.learning_rate(
                _progress_fraction(cfg, max_steps, step, train_time), step)
            t0 = time.perf_counter()
            data_k, lr_k = data, lr
            for cb in callbacks:
                data_k, lr_k = cb.before_step(step + 1, data_k, lr_k)
            state, aux = step_fn(state, data_k, jax.random.fold_in(base_key, step),
                                 jnp.float32(lr_k))
            loss = float(aux["loss"])
            dt = time.perf_counter() - t0
            train_time += dt
            if timed:
                train_time = distributed.from_main(train_time)
            step += 1
            if not bool(aux["finite"]):
                msg = _nonfinite_message(aux, loss, step, lr)
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
            for cb in callbacks:
                cb.after_step(step, state, last)
            if step % cfg.log_every == 0 or step == max_steps:
                logger.log({"step": step, "time": train_time, **last}, flush=True)
            if (cfg.eval_every and eval_idx and step % cfg.eval_every == 0
                    and eval_seconds <= PERIODIC_EVAL_BUDGET * (train_time - t_resume)):
                # Skipped while the periodic evaluations so far cost more than their share of
                # the training time (so they never slow a run by more than about 10%).
                t_ev = time.perf_counter()
                _periodic_eval(step, train_time, renderer(state), test_scene, eval_idx, logger,
                               prog)
                eval_seconds += time.perf_counter() - t_ev
            while pending_marks and train_time >= 60.0 * pending_marks[0] and test_scene:
                mark = pending_marks.pop(0)
                mark_eval = _eval_at_mark(run_dir, mark, step, train_time, renderer(state),
                                          test_scene, logger, prog, cfg.eval_lpips)
            if step % cfg.checkpoint_every == 0:
                ckpt.save(step, state)
                last_saved = step
                for cb in callbacks:
                    cb.on_checkpoint(step, state)
        if step != last_saved or ckpt.latest_step() is None:
            ckpt.save(step, state)
            for cb in callbacks:
                cb.on_checkpoint(step, state)
        logger.log({"step": step, "time": train_time, "final": True, **last})
    ckpt.close()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "step": step,
                               "train_seconds": train_time, **last}
    if cfg.final_eval and test_scene is not None:
        summary.update(_final_eval(cfg, run_dir, step, train_time, renderer(state), test_scene,
                                   mark_eval, pending_marks, main))
    for cb in callbacks:
        cb.on_train_end(summary)
    return summary


def _final_eval(cfg, run_dir, step, train_time, renderer, test_scene, mark_eval, pending_marks,
                main) -> dict[str, float]:
    """Evaluates every test view at the end (reusing the last time mark's evaluation of this very
    state); writes ``eval/test.json`` and the marks the time limit reached."""
    if mark_eval is not None and mark_eval["step"] == step:
        ev = dict(mark_eval)
    else:
        ev = evaluate(renderer, test_scene, lpips=cfg.eval_lpips)
    ev["step"] = step
    if main:
        write_json_atomic(run_dir / "eval" / "test.json", ev)
    for mark in pending_marks:  # marks the time limit reached: the final state is theirs
        if main and cfg.max_minutes is not None and mark >= cfg.max_minutes:
            write_json_atomic(run_dir / "eval" / f"test_{mark:g}min.json",
                              {**ev, "minutes": mark, "train_seconds": train_time})
    out = {"test_psnr": ev["psnr"], "test_ssim": ev["ssim"]}
    if "lpips" in ev:
        out["test_lpips"] = ev["lpips"]
    return out


def distill(cfg: DistillConfig, console=None, callbacks: Sequence[Callback] = ()
            ) -> dict[str, Any]:
    """Trains the student run described by ``cfg``; returns :func:`train`'s summary plus
    ``teacher`` and ``teacher_psnr`` (``None`` if the teacher has no test evaluation)."""
    train_cfg = student_train_config(cfg)
    summary = train(train_cfg, console=console, callbacks=callbacks)
    summary["teacher"] = train_cfg.model.teacher
    summary["teacher_psnr"] = teacher_test_psnr(train_cfg.model.teacher)
    return summary


def _periodic_eval(step, train_time, renderer, test_scene, eval_idx, logger: RunLogger,
                   prog) -> None:
    """The quick evaluation every ``--eval-every`` steps (no LPIPS); with TensorBoard, each view's
    render beside its ground truth."""
    shown: dict[str, np.ndarray] = {}
    gt = test_scene.composited() if logger.wants_images else None

    def keep(i, out):
        if gt is not None:
            shown[test_scene.names[i]] = side_by_side(out["rgb"], gt[i])

    ev = evaluate(renderer, test_scene, eval_idx, on_view=keep)
    logger.log({"step": step, "time": train_time, "eval_psnr": ev["psnr"],
                "eval_ssim": ev["ssim"]}, flush=True)
    logger.images(step, shown)
    prog.log(f"step {step}: test PSNR {ev['psnr']:.2f} dB on {len(eval_idx)} views")


def _eval_at_mark(run_dir, mark, step, train_time, renderer, test_scene, logger: RunLogger, prog,
                  lpips: bool = False) -> dict:
    """Evaluates every test view at a training-time mark (``--eval-minutes``)."""
    ev = evaluate(renderer, test_scene, lpips=lpips)
    ev.update(step=step, minutes=mark, train_seconds=train_time)
    if distributed.is_main():
        write_json_atomic(run_dir / "eval" / f"test_{mark:g}min.json", ev)
    record = {"step": step, "time": train_time, "eval_minutes": mark, "eval_psnr": ev["psnr"],
              "eval_ssim": ev["ssim"]}
    lp = ""
    if "lpips" in ev:
        record["eval_lpips"] = ev["lpips"]
        lp = f", LPIPS {ev['lpips']:.4f}"
    logger.log(record, flush=True)
    prog.log(f"{mark:g} min (step {step}): test PSNR {ev['psnr']:.2f} dB, SSIM {ev['ssim']:.4f}"
             f"{lp} on {ev['num_views']} views")
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
        write_text_atomic(metrics_path, "".join(line + "\n" for line in kept))
    return t
