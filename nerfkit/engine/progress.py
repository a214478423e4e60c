"""A progress bar for training (rich): step, loss, PSNR, rays/s and ETA."""

from __future__ import annotations

import sys
import time
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class TrainProgress:
    """Shows training progress; a plain line every few seconds when not on a terminal."""

    def __init__(self, total_steps: Optional[int], max_minutes: Optional[float],
                 start_step: int = 0, console: Optional[Console] = None):
        self.console = console or Console(stderr=True)
        self.total_steps = total_steps
        self.max_minutes = max_minutes
        self.start_step = start_step
        self._interactive = self.console.is_terminal and not self.console.quiet
        self._last_print = 0.0
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), console=self.console, transient=False,
            disable=not self._interactive)
        total = 1000.0
        self._task = self._progress.add_task("", total=total)

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def _fraction(self, step: int, elapsed: float) -> float:
        fr = 0.0
        if self.total_steps:
            fr = max(fr, step / self.total_steps)
        if self.max_minutes:
            fr = max(fr, elapsed / (60 * self.max_minutes))
        return min(fr, 1.0)

    def update(self, step: int, elapsed: float, m: dict) -> None:
        fr = self._fraction(step, elapsed)
        done = step - self.start_step
        eta = ""
        if self.total_steps and done > 0:
            eta_s = (self.total_steps - step) * elapsed / done
            if self.max_minutes:
                eta_s = min(eta_s, 60 * self.max_minutes - elapsed)
            eta = f" ETA {max(eta_s, 0):.0f}s"
        elif self.max_minutes:
            eta = f" ETA {max(60 * self.max_minutes - elapsed, 0):.0f}s"
        desc = (f"step {step}{'/' + str(self.total_steps) if self.total_steps else ''} "
                f"loss {m['loss']:.4g} PSNR {m['psnr']:.2f} {m['rays_per_s']:,.0f} rays/s{eta}")
        if self._interactive:
            self._progress.update(self._task, completed=1000 * fr, description=desc)
        elif not self.console.quiet:
            now = time.monotonic()
            if now - self._last_print > 10 or fr >= 1.0:
                self._last_print = now
                print(f"[train] {desc}", file=sys.stderr, flush=True)

    def log(self, msg: str) -> None:
        self.console.print(msg)
