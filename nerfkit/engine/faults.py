"""Fault injection for the crash-safety and divergence tests; does nothing unless asked.

``NERFKIT_TEST_FAULTS`` holds comma-separated ``KIND:STEP`` items (steps count from 1):

* ``kill-step:N``: SIGKILL the process at train step ``N``, once it has run and before anything
  about it is logged or saved;
* ``kill-checkpoint:N``: SIGKILL it after checkpoint ``N``'s files are written but before orbax
  commits them (its temporary folder is left behind, as after a power cut);
* ``nan-batch:N``: step ``N`` trains on NaN pixels (non-finite loss and gradients);
* ``nan-lr:N``: step ``N`` uses a NaN learning rate (finite loss, non-finite parameters after it).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

ENV = "NERFKIT_TEST_FAULTS"


def active(kind: str, step: int) -> bool:
    """Whether ``NERFKIT_TEST_FAULTS`` asks for fault ``kind`` at ``step``."""
    spec = os.environ.get(ENV)
    return bool(spec) and f"{kind}:{int(step)}" in {s.strip() for s in spec.split(",")}


def kill_if(kind: str, step: int) -> None:
    """SIGKILLs this process (no clean-up, no exit handlers) if asked to at ``step``."""
    if active(kind, step):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class FaultInjection:
    """The train loop's callback (:class:`~nerfkit.engine.trainer.Callback` protocol) that
    poisons a step's inputs or kills the process inside a step, as ``NERFKIT_TEST_FAULTS`` asks."""

    def on_train_start(self, run_dir, state, start_step) -> None:
        pass

    def before_step(self, step: int, data: Any, lr: float) -> tuple[Any, float]:
        data, lr = poison(step, data, lr)
        return data, lr

    def after_step(self, step: int, state, metrics) -> None:
        # The step was dispatched and its loss read back: the process dies "inside" it, before
        # anything about it is logged or saved.
        kill_if("kill-step", step)

    def on_checkpoint(self, step: int, state) -> None:
        pass

    def on_train_end(self, summary) -> None:
        pass


def callbacks() -> list[FaultInjection]:
    """``[FaultInjection()]`` when ``NERFKIT_TEST_FAULTS`` is set, else ``[]``."""
    return [FaultInjection()] if os.environ.get(ENV) else []


def poison(step: int, data: Any, lr: float) -> tuple[Any, float]:
    """``(data, lr)`` for train step ``step``, poisoned with NaN if asked to."""
    if not os.environ.get(ENV):
        return data, lr
    if active("nan-batch", step):
        import jax
        import jax.numpy as jnp
        data = jax.tree_util.tree_map(
            lambda x: x * jnp.nan if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, data)
    if active("nan-lr", step):
        lr = float("nan")
    return data, lr
