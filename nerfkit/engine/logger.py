"""Where a training run's records go: ``RUN/metrics.jsonl`` and, optionally, TensorBoard.

``RUN/metrics.jsonl`` is the run's record and is always written (by process 0): one JSON object
per line with ``step`` and ``time`` (training seconds) and the scalars of that moment; ``--resume``
reads it back (it rewinds it to the checkpoint and takes the training time spent from it), and so
do the benchmarks. ``--logger`` chooses what is written *besides* it:

- ``jsonl`` (default) and ``none``: nothing more (``none`` cannot switch the JSONL off, since
  resuming needs it; it exists for symmetry with nerfstudio's ``--vis`` and scripts that pass it);
- ``tensorboard``: TensorBoard event files in ``RUN/tensorboard/`` through tensorboardX (no
  TensorFlow or torch): the scalars as ``train/loss``, ``train/psnr``, ``train/lr``,
  ``train/rays_per_s``, ``eval/psnr``, ``eval/ssim`` (periodic ``--eval-every`` evaluations)
  and ``eval_marks/*`` (``--eval-minutes``), and at each periodic evaluation every evaluated
  view as an image, the render left of the ground truth (``eval_views/<name>``). A resumed run
  purges the events after its checkpoint's step, as the JSONL is rewound.

The idea of one logger object called by the loop is nerfstudio's
(``nerfstudio/utils/writer.py``, its ``--vis tensorboard`` event writer); the event format is
TensorBoard's, written by tensorboardX's ``SummaryWriter``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

LOGGERS = ("jsonl", "tensorboard", "none")

# metrics.jsonl keys -> TensorBoard tags (other numeric keys go under "train/").
_TAGS = {"loss": "train/loss", "psnr": "train/psnr", "lr": "train/lr",
         "rays_per_s": "train/rays_per_s", "eval_psnr": "eval/psnr", "eval_ssim": "eval/ssim",
         "eval_lpips": "eval/lpips"}
_NOT_SCALARS = ("step", "time", "final", "eval_minutes")


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard ``{tag: value}`` of one ``metrics.jsonl`` record (finite numbers only;
    a record of an ``--eval-minutes`` mark goes under ``eval_marks/``)."""
    mark = "eval_minutes" in record
    out = {}
    for k, v in record.items():
        if k in _NOT_SCALARS or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            continue
        tag = _TAGS.get(k, f"train/{k}")
        if mark and tag.startswith("eval/"):
            tag = "eval_marks/" + tag[len("eval/"):]
        out[tag] = float(v)
    return out


def side_by_side(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``[H, 2W, 3]`` ``uint8``: the render ``pred`` left of the ground truth ``gt`` (both
    ``[H, W, 3]`` in ``[0, 1]``; values outside are clipped)."""
    both = np.concatenate([np.asarray(pred, np.float32)[..., :3],
                           np.asarray(gt, np.float32)[..., :3]], axis=1)
    return (np.clip(both, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class RunLogger:
    """The train loop's sink for records and images (process 0 writes; others pass
    ``enabled=False`` and every call does nothing).

    Args:
      run_dir: the run directory (``metrics.jsonl`` and ``tensorboard/`` go there).
      kind: one of :data:`LOGGERS`.
      enabled: ``False`` on processes other than 0.
      purge_step: when resuming, the first step trained again (the checkpoint's step + 1):
        TensorBoard hides earlier-written events from this step on.
    """

    def __init__(self, run_dir: str | Path, kind: str = "jsonl", enabled: bool = True,
                 purge_step: Optional[int] = None):
        if kind not in LOGGERS:
            raise ValueError(f"logger must be one of {', '.join(LOGGERS)}, got {kind!r}")
        self.kind = kind
        self.enabled = enabled
        self._jsonl = open(Path(run_dir) / "metrics.jsonl", "a") if enabled else None
        self._tb = None
        if enabled and kind == "tensorboard":
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), flush_secs=10,
                                     purge_step=purge_step)

    @property
    def wants_images(self) -> bool:
        """Whether :meth:`images` writes anything (so the caller may skip gathering them)."""
        return self._tb is not None

    def log(self, record: dict[str, Any], flush: bool = False) -> None:
        """Appends ``record`` (with ``step`` and ``time``) to ``metrics.jsonl``; with TensorBoard
        also its scalars (:func:`scalar_tags`) at ``record["step"]`` (not the ``final`` line,
        which repeats the last step's values)."""
        if not self.enabled:
            return
        self._jsonl.write(json.dumps(record) + "\n")
        if flush:
            self._jsonl.flush()
        if self._tb is not None and not record.get("final"):
            for tag, v in scalar_tags(record).items():
                self._tb.add_scalar(tag, v, int(record["step"]))

    def images(self, step: int, views: dict[str, np.ndarray]) -> None:
        """TensorBoard only: ``{name: [H, W, 3] uint8}`` images at ``step`` as
        ``eval_views/<name>``."""
        if self._tb is None:
            return
        for name, img in views.items():
            self._tb.add_image(f"eval_views/{name}", img, step, dataformats="HWC")
        self._tb.flush()

    def flush(self) -> None:
        if self._jsonl is not None:
            self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
