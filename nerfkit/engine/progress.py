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


class RenderProgress:
    """Shows the progress of rendering or evaluating views: count, views/s and ETA (rich); a plain
    line every ``every`` seconds (and at the end) when not on a terminal.

    Use as a context manager; call :meth:`advance` after each view (or group of views).
    """

    def __init__(self, what: str, total: int, console: Optional[Console] = None,
                 every: float = 10.0):
        self.console = console or Console(stderr=True)
        self.what = what
        self.total = int(total)
        self.done = 0
        self.every = every
        self._interactive = self.console.is_terminal and not self.console.quiet
        self._t0 = time.monotonic()
        self._last_print = self._t0
        self._progress = Progress(
            TextColumn(f"[bold]{what}"), BarColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), console=self.console, transient=False,
            disable=not self._interactive)
        self._task = self._progress.add_task("", total=max(self.total, 1))

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def describe(self) -> str:
        """``"12/200 views, 3.1 views/s, ETA 60s"``."""
        el = time.monotonic() - self._t0
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (f"{self.done}/{self.total} views, {rate:.2f} views/s"
                + (f", ETA {eta:.0f}s" if self.done < self.total and rate > 0 else ""))

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._interactive:
            self._progress.update(self._task, completed=self.done, description=self.describe())
        elif not self.console.quiet:
            now = time.monotonic()
            if now - self._last_print >= self.every or self.done >= self.total:
                self._last_print = now
                self.console.print(f"[{self.what}] {self.describe()}", markup=False,
                                   highlight=False)
