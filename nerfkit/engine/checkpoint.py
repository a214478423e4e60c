"""Checkpoints with orbax: atomic writes (temporary directory, then rename), keep the last N.

A checkpoint holds the whole train state pytree (parameters, non-parameter buffers such as
occupancy grids, optimiser state, step). A checkpoint whose write was interrupted is never
listed by orbax, so ``--resume`` always continues from the last complete one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from nerfkit.errors import CheckpointError

# orbax logs every save at INFO level through absl; keep the terminal for the progress bar.
logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpointer:
    """Saves and restores train-state pytrees under ``RUN/checkpoints``."""

    def __init__(self, directory: os.PathLike, keep: int = 3, read_only: bool = False):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=False)
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any) -> None:
        try:
            self._mngr.save(int(step), args=ocp.args.StandardSave(state), force=True)
            self._mngr.wait_until_finished()
        except OSError as e:
            raise CheckpointError(
                f"{self.directory}: could not write checkpoint {step}: {e.strerror or e}; "
                "earlier checkpoints are untouched") from e

    def restore(self, target: Any, step: Optional[int] = None) -> Any:
        """Restores into the structure, shapes and dtypes of ``target`` (the freshly built state)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory}: no complete checkpoint to resume from")
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
            if not isinstance(x, jax.ShapeDtypeStruct) else x, target)
        try:
            restored = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises many types for corrupt or mismatched files
            raise CheckpointError(
                f"{self.directory / str(step)}: cannot restore checkpoint ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); is it from a different model "
                "config, or corrupt?") from e
        _check_shapes(abstract, restored, self.directory / str(step))
        return restored

    def close(self) -> None:
        self._mngr.close()


def _check_shapes(abstract: Any, restored: Any, where: Path) -> None:
    a_leaves, a_def = jax.tree_util.tree_flatten(abstract)
    r_leaves, r_def = jax.tree_util.tree_flatten(restored)
    if a_def != r_def:
        raise CheckpointError(f"{where}: checkpoint structure does not match the model")
    for a, r in zip(a_leaves, r_leaves):
        if tuple(a.shape) != tuple(np.shape(r)):
            raise CheckpointError(
                f"{where}: array shape {tuple(np.shape(r))} in the checkpoint does not match "
                f"the model's {tuple(a.shape)}; was it trained with a different config?")
