"""Presets: one ready-made :class:`~nerfkit.engine.config.TrainConfig` per ``nerfkit train`` method.

``nerfkit train <method> --help`` lists every field of a preset; any can be overridden from the
command line (``--model.batch-size 2048``). Presets are plain values, so adding one is adding an
entry here.
"""

from __future__ import annotations

from pathlib import Path

from nerfkit.engine.config import TrainConfig
from nerfkit.models.nerdf import NeRDFConfig
from nerfkit.models.nerf import NeRFConfig
from nerfkit.models.ngp import NGPConfig
from nerfkit.models.r2l import R2LConfig
from nerfkit.models.signal import SignalConfig

PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "ngp": (
        "Instant-NGP (Mueller et al. 2022): hash grid + tiny MLPs + occupancy grid. The default.",
        # The paper's optimiser, a CPU-sized grid: a 2^17-entry table (not 2^19) and a 64^3
        # occupancy grid keep the per-step memory traffic (dense Adam over the table, marching)
        # low on a 2-core machine; benchmarks/ngp.py measures it. Scale up by flags on a GPU.
        TrainConfig(model=NGPConfig(log2_table_size=17, max_resolution=1024,
                                    occupancy_resolution=64, march_steps=192, num_samples=48,
                                    eval_samples=48),
                    output=Path("runs/ngp"), checkpoint_every=500, eval_every=0),
    ),
    "nerf": (
        "Vanilla NeRF (Mildenhall et al. 2020): 8x256 MLP, 64 coarse + 128 fine samples.",
        # No final evaluation by default: rendering all 200 lego test views with the full
        # model takes most of an hour on a 2-core CPU. Run `nerfkit eval RUN` when wanted.
        TrainConfig(model=NeRFConfig(), output=Path("runs/nerf"), eval_every=0,
                    checkpoint_every=1000, final_eval=False),
    ),
    "r2l": (
        "R2L neural light field (Wang et al. 2022): 88-layer residual MLP, one query per ray. "
        "Distil it from a trained run with `nerfkit distill r2l --teacher RUN`.",
        TrainConfig(model=R2LConfig(), output=Path("runs/r2l"), checkpoint_every=500),
    ),
    "nerdf": (
        "NeRDF radiance distribution field (Wu et al. 2023): one query per ray, frequency-basis "
        "density and colour. Distil it with `nerfkit distill nerdf --teacher RUN`.",
        TrainConfig(model=NeRDFConfig(), output=Path("runs/nerdf"), checkpoint_every=500),
    ),
    "image": (
        "Fit an image with a coordinate MLP (SIREN by default; --model.activation relu for ReLU + "
        "positional encoding, --model.cam.enabled for CAM over the pixel position). Writes "
        "the reconstruction as PNG and prints its PSNR.",
        TrainConfig(model=SignalConfig(), output=Path("runs/image"), checkpoint_every=1000,
                    final_eval=True),
    ),
    "video": (
        "Fit a video (file or frame folder) with an (x, y, t) coordinate MLP (SIREN by default; "
        "--model.resfields.layers 1 2 3 for ResFields, --model.cam.enabled for CAM over "
        "time). Writes the reconstruction as PNG frames and MP4 and prints its PSNR.",
        TrainConfig(model=SignalConfig(), output=Path("runs/video"), checkpoint_every=1000,
                    final_eval=True),
    ),
    "dnerf": (
        "Dynamic radiance field (T-NeRF: NeRF with time as input) for D-NeRF-format scenes, "
        "CPU-sized; --model.resfields.layers 1 2 3 for ResFields, --model.cam.enabled for "
        "CAM over time.",
        # A NeRF small enough for a 2-core CPU (6x128 trunk, 48 + 48 samples); the full NeRF
        # sizes are flags away (--model.width 256 --model.depth 8 ...). No automatic final
        # evaluation (the 20 lego test views at 200x200 take ~7 minutes on 2 cores); run
        # `nerfkit eval RUN` for it, or pass --final-eval.
        TrainConfig(model=NeRFConfig(depth=6, width=128, skip=3, view_width=64,
                                     coarse_samples=48, fine_samples=48, batch_size=1024,
                                     render_chunk=8192, default_steps=20_000),
                    output=Path("runs/dnerf"), checkpoint_every=1000, final_eval=False),
    ),
}
