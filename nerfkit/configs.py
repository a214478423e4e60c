"""Presets: one ready-made :class:`~nerfkit.engine.config.TrainConfig` per ``nerfkit train`` method.

``nerfkit train <method> --help`` lists every field of a preset; any can be overridden from the
command line (``--model.batch-size 2048``). Presets are plain values, so adding one is adding an
entry here.
"""

from __future__ import annotations

from pathlib import Path

from nerfkit.engine.config import TrainConfig
from nerfkit.models.nerf import NeRFConfig

PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "nerf": (
        "Vanilla NeRF (Mildenhall et al. 2020): 8x256 MLP, 64 coarse + 128 fine samples.",
        TrainConfig(model=NeRFConfig(), output=Path("runs/nerf"), eval_every=0,
                    checkpoint_every=1000),
    ),
}
