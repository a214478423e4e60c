"""Vanilla NeRF throughput and quality on this machine.

Measures, for the standard configuration (8x256 MLP, 64 coarse + 128 fine samples, 4096-ray
batches): training rays/s (one jit'd step: sampling, forward, backward, Adam), rendering rays/s,
first-call compile times, peak memory; then trains on lego at 100x100 (downscale 8) for a fixed
wall-clock budget and reports the test PSNR/SSIM on evenly spaced test views.

    python benchmarks/nerf.py --out nerf.json [--budget-minutes 10] [--eval-views 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from common import peak_rss_mb, print_table, time_fn, write_json  # sets XLA flags first

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.data import load_scene
from nerfkit.data.raysource import PixelSource
from nerfkit.engine.config import TrainConfig
from nerfkit.engine.renderer import Renderer
from nerfkit.engine.evaluate import evaluate, evenly_spaced_views
from nerfkit.engine.trainer import make_train_step, train
from nerfkit.engine.run import init_state, load_run
from nerfkit.models.nerf import NeRFConfig

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "nerf_synthetic" / "lego"


def throughput(model_cfg: NeRFConfig, scene, repeats: int) -> dict:
    graphdef, state0, tx = init_state(model_cfg, scene, 0)
    source = PixelSource(scene, model_cfg.background)
    step = make_train_step(graphdef, tx, source, model_cfg.batch_size, False,
                           microbatch=model_cfg.microbatch)
    state = [state0]
    key = jax.random.key(0)

    def one():
        state[0], aux = step(state[0], source.data, key, jnp.float32(5e-4))
        return aux["loss"]

    train_s, train_compile = time_fn(one, repeats=repeats)
    renderer = Renderer(graphdef, state[0].params, state[0].buffers, source.geom,
                        model_cfg.render_chunk)
    rays = jax.tree_util.tree_map(lambda x: x[:model_cfg.render_chunk],
                                  source.sample(source.data, key, model_cfg.render_chunk).rays)
    bg = np.ones(3, np.float32)
    render_s, render_compile = time_fn(lambda: renderer.render_rays(rays, bg)["rgb"],
                                       repeats=repeats)
    return {
        "train_rays_per_s": model_cfg.batch_size / train_s,
        "render_rays_per_s": model_cfg.render_chunk / render_s,
        "train_compile_s": train_compile,
        "render_compile_s": render_compile,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="nerf.json")
    ap.add_argument("--data", default=str(LEGO))
    ap.add_argument("--downscale", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--microbatch", type=int, default=None,
                    help="gradient micro-batch of the standard config (default: whole batch)")
    ap.add_argument("--compare", nargs="*", default=[],
                    help="extra BATCH:MICROBATCH training variants measured side by side "
                         "(0 = whole batch), e.g. 4096:1024 1024:0")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-minutes", type=float, default=10.0,
                    help="training budget for the PSNR figure (0 skips it)")
    ap.add_argument("--no-lpips", action="store_true", help="skip LPIPS in the evaluation")
    ap.add_argument("--eval-views", type=int, default=10,
                    help="evenly spaced test views for the PSNR figure (200 = all)")
    args = ap.parse_args()

    model_cfg = NeRFConfig(batch_size=args.batch_size, microbatch=args.microbatch,
                           render_chunk=4096)
    scene = load_scene(args.data, "train", args.downscale)
    variants = {}
    for spec in args.compare:  # before the standard config: its peak memory is measured after
        bs, mb = (int(v) for v in spec.split(":"))
        cfg = dataclasses.replace(model_cfg, batch_size=bs, microbatch=mb or None)
        v = throughput(cfg, scene, args.repeats)
        variants[f"batch {bs}, microbatch {mb or 'none'}"] = v
        print(f"batch {bs}, microbatch {mb or 'none'}: {v['train_rays_per_s']:.1f} train rays/s",
              flush=True)
    res = throughput(model_cfg, scene, args.repeats)
    res["peak_rss_mb_throughput"] = peak_rss_mb()
    if variants:
        res["variants"] = {k: {"train_rays_per_s": v["train_rays_per_s"],
                               "train_compile_s": v["train_compile_s"]}
                           for k, v in variants.items()}
    rows = [{"what": f"{k}: train rays/s", "value": v["train_rays_per_s"]}
            for k, v in res.get("variants", {}).items()]
    rows += [{"what": "train rays/s", "value": res["train_rays_per_s"]},
            {"what": "render rays/s", "value": res["render_rays_per_s"]},
            {"what": "train step compile s", "value": res["train_compile_s"]},
            {"what": "render compile s", "value": res["render_compile_s"]}]

    if args.budget_minutes > 0:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(model=model_cfg, data=args.data, downscale=args.downscale,
                              output=Path(tmp) / "run", max_minutes=args.budget_minutes,
                              final_eval=False, checkpoint_every=10**9, log_every=10)
            summary = train(cfg)
            run = load_run(cfg.output)
            test = run.load_split("test")
            ev = evaluate(run.renderer(), test, evenly_spaced_views(len(test), args.eval_views),
                          lpips=not args.no_lpips)
        res.update({"budget_minutes": args.budget_minutes, "steps": summary["step"],
                    "test_psnr": ev["psnr"], "test_ssim": ev["ssim"],
                    "test_lpips": ev.get("lpips"),
                    "eval_views": ev["num_views"], "peak_rss_mb": peak_rss_mb()})
        rows += [{"what": f"steps in {args.budget_minutes:g} min", "value": summary["step"]},
                 {"what": f"test PSNR ({ev['num_views']} views)", "value": ev["psnr"]},
                 {"what": "test SSIM", "value": ev["ssim"]},
                 {"what": "test LPIPS", "value": ev.get("lpips")}]
    rows.append({"what": "peak RSS MiB", "value": peak_rss_mb()})
    print_table(rows, ["what", "value"])
    config = {**dataclasses.asdict(model_cfg), "data": args.data, "downscale": args.downscale}
    write_json(args.out, "nerf", config, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
