"""Fault injection for the crash-safety and divergence tests; does nothing unless asked.

``NERFKIT_TEST_FAULTS`` holds comma-separated ``KIND:STEP`` items (steps count from 1):

* ``kill-step:N``: SIGKILL the process while train step ``N`` runs (right after it is dispatched);
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
