"""Checkpoints with orbax: atomic writes (temporary directory, then rename), keep the last N.

A checkpoint holds the whole train state pytree (parameters, non-parameter buffers such as
occupancy grids, optimiser state, step). A checkpoint whose write was interrupted is never
listed by orbax, so ``--resume`` always continues from the last complete one; its temporary
folder (``<step>.orbax-checkpoint-tmp``) is removed when the run is next opened for writing.
A write that fails (full disk, read-only folder) removes its temporary folder and raises
:class:`~nerfkit.errors.CheckpointError`; earlier checkpoints are untouched.

Restoring checks the checkpoint's array names, shapes and dtypes against the model first (another
config is a clear error), and afterwards a CRC32 of the state recorded when it was saved (orbax
custom metadata), so garbled array files are an error rather than silently wrong parameters.

In a multi-process run every process calls :meth:`Checkpointer.save` with the same (replicated)
state and orbax writes one checkpoint for all of them. :meth:`Checkpointer.restore` places the
arrays with the target's shardings, so a checkpoint restores onto any number of devices or
processes (``--resume`` on another layout, ``nerfkit render`` on one CPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from nerfkit.engine import faults
from nerfkit.errors import CheckpointError

# orbax logs every save at INFO level through absl; keep the terminal for the progress bar.
logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpointer:
    """Saves and restores train-state pytrees under ``RUN/checkpoints``."""

    def __init__(self, directory: os.PathLike, keep: int = 3, read_only: bool = False):
        self.directory = Path(directory).absolute()
        _filter_orbax_leftovers()
        with _quiet_orbax():  # read-only managers warn about options they ignore
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=not read_only, read_only=read_only,
                enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
            self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                               item_handlers=ocp.StandardCheckpointHandler())

    def latest_step(self) -> Optional[int]:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any) -> None:
        if faults.active("kill-checkpoint", step):  # crash-safety tests: die before the commit
            self._mngr._checkpointer._handler.finalize = lambda _: faults.kill_if(
                "kill-checkpoint", step)
        try:
            with _quiet_orbax():
                self._mngr.save(int(step), args=ocp.args.StandardSave(state), force=True,
                                custom_metadata={_CRC_KEY: _state_crc(state)})
                self._mngr.wait_until_finished()
        except Exception as e:  # OSError from Python, ValueError from tensorstore (ENOSPC, ...)
            for tmp in self.directory.glob(f"{int(step)}.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(
                f"{self.directory}: could not write checkpoint {step}: {_cause(e)}; the partial "
                f"checkpoint was removed, earlier checkpoints ({_steps(self.all_steps())}) are "
                "untouched") from e

    def restore(self, target: Any, step: Optional[int] = None) -> Any:
        """Restores into the structure, shapes and dtypes of ``target`` (the freshly built state)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory}: no complete checkpoint to resume from")
        abstract = jax.tree_util.tree_map(_abstract, target)
        self._check_metadata(abstract, step)
        try:
            with _quiet_orbax():
                restored = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises many types for corrupt or mismatched files
            raise CheckpointError(
                f"{self.directory / str(step)}: cannot restore checkpoint ({_cause(e)}); is it "
                "from a different model config, or corrupt?"
                f"{self._older_hint(step)}") from e
        try:
            _check_shapes(abstract, restored, self.directory / str(step))
            expected = self._stored_crc(step)
            if expected is not None and _state_crc(restored) != expected:
                raise CheckpointError(
                    f"{self.directory / str(step)}: checkpoint is corrupt (its arrays do not match "
                    "the checksum written with them)")
        except CheckpointError as e:
            raise CheckpointError(f"{e}{self._older_hint(step)}") from None
        return restored

    def _check_metadata(self, abstract: Any, step: int) -> None:
        """Compares the checkpoint's array names, shapes and dtypes with the model's before reading
        any array (a checkpoint of another config is then a clear error, not an orbax one)."""
        try:
            with _quiet_orbax():
                meta = self._mngr.item_metadata(step)
            stored = ocp.tree.to_flat_dict(getattr(meta, "tree", meta))
            wanted = ocp.tree.to_flat_dict(abstract)
        except Exception:  # unreadable metadata: the restore itself reports it
            return
        if not stored:
            return
        where = self.directory / str(step)
        hint = "; was it trained with a different config?" + self._older_hint(step)
        missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
        if missing or extra:
            names = [f"{'.'.join(k)} missing" for k in missing[:3]] + \
                    [f"{'.'.join(k)} unexpected" for k in extra[:3]]
            more = ", ..." if len(missing) + len(extra) > len(names) else ""
            raise CheckpointError(f"{where}: checkpoint holds other arrays than the model "
                                  f"({', '.join(names)}{more}){hint}")
        for key in sorted(wanted, key=lambda k: (k[0] != "params", k)):  # parameters first
            a, b = wanted[key], stored[key]
            if not hasattr(b, "shape"):
                continue
            if tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype):
                raise CheckpointError(
                    f"{where}: array {'.'.join(key)} is {tuple(b.shape)} {np.dtype(b.dtype)} in "
                    f"the checkpoint but {tuple(a.shape)} {np.dtype(a.dtype)} in the model{hint}")

    def _stored_crc(self, step: int) -> Optional[int]:
        try:
            with _quiet_orbax():
                value = (self._mngr.metadata(step).custom_metadata or {}).get(_CRC_KEY)
        except Exception:  # unreadable step metadata: orbax's own checks still apply
            return None
        return value if isinstance(value, int) else None

    def _older_hint(self, step: int) -> str:
        older = [s for s in self.all_steps() if s < step]
        if not older:
            return ""
        return (f" Nothing was deleted; to fall back to the previous checkpoint, move "
                f"{self.directory / str(step)} out of {self.directory} (older: {_steps(older)}).")

    def close(self) -> None:
        self._mngr.close()


_CRC_KEY = "nerfkit_state_crc32"


def _abstract(x: Any) -> jax.ShapeDtypeStruct:
    """What to restore a leaf as: its shape, dtype and, for a JAX array, its sharding (so a
    checkpoint written with any number of devices or processes lands on the target's devices)."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)


def _state_crc(state: Any) -> Optional[int]:
    """CRC32 of every leaf's bytes, in tree order (``None`` if a leaf has no plain buffer)."""
    crc = 0
    try:
        for leaf in jax.tree_util.tree_leaves(state):
            crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).reshape(-1).view(np.uint8), crc)
    except (TypeError, ValueError, BufferError):
        return None
    return crc


def _steps(steps: list[int]) -> str:
    return ", ".join(map(str, sorted(steps))) or "none"


def _cause(e: BaseException) -> str:
    """A one-line reason for a failed orbax/tensorstore operation."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f" ({e.filename})" if e.filename else "")
    while e.__cause__ is not None:  # orbax wraps tensorstore's precise error
        e = e.__cause__
    text = str(e)
    m = re.search(r"(No space left on device|Read-only file system|Permission denied|"
                  r"Disk quota exceeded)", text)
    if m:
        return m.group(1)
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line if len(line) <= 300 else line[:300] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs the full traceback of a failed write from its worker threads; the error that
    follows says it once (``--debug`` shows the traceback)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


_filters_installed = False


def _from_orbax(exc: Optional[BaseException]) -> bool:
    tb = getattr(exc, "__traceback__", None)
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return exc is not None and "tensorstore" in str(exc)


def _filter_orbax_leftovers() -> None:
    """When an orbax save or restore fails (full disk, corrupt files), the reads and writes still
    in flight report the same failure again, as tracebacks: tensorstore callbacks into an event
    loop orbax has closed, never-awaited orbax coroutines, and asyncio's "exception was never
    retrieved" for orbax's futures, during the operation or at exit, around the one-line error.
    This drops exactly those reports; anything else reaches Python's hooks as before."""
    # Orbax's per-fragment write coroutines that a failed save never awaited are reported by
    # Python as a RuntimeWarning when collected (often at exit), through the warnings module
    # rather than the unraisable hook. (filterwarnings replaces an identical filter: idempotent.)
    warnings.filterwarnings(
        "ignore", message=r"coroutine 'async_serialize_from_host\.<locals>\.write_fragment' was "
        r"never awaited", category=RuntimeWarning)
    global _filters_installed
    if _filters_installed:
        return
    _filters_installed = True
    previous = sys.unraisablehook

    def hook(args):
        code = getattr(args.object, "cr_code", None)
        leftover = (isinstance(args.exc_value, RuntimeError)
                    and str(args.exc_value) == "Event loop is closed") or (
            code is not None and ("orbax" in code.co_filename or "tensorstore" in code.co_filename))
        if not leftover:
            previous(args)

    sys.unraisablehook = hook

    def keep(record: logging.LogRecord) -> bool:
        # asyncio names the class: "Future", "Task", "_GatheringFuture" (orbax's gather), ...
        never_retrieved = re.match(r"\w+ exception was never retrieved", str(record.msg))
        return not (never_retrieved and record.exc_info and _from_orbax(record.exc_info[1]))

    logging.getLogger("asyncio").addFilter(keep)


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
