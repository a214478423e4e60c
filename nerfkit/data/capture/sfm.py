"""Runs the pycolmap stages of ``process-data`` in a child process, with a progress bar.

Each stage is one ``python colmap_worker.py STAGE ARGS`` process (see
:mod:`nerfkit.data.capture.colmap_worker` for why pycolmap never runs inside the nerfkit process).
COLMAP's log is appended to ``colmap.log`` beside the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from nerfkit.errors import DataError

WORKER = Path(__file__).with_name("colmap_worker.py")


class StageError(Exception):
    """A pycolmap stage failed; ``str()`` is COLMAP's one-line reason."""


def run_stage(stage: str, args: dict[str, Any], log_path: Path,
              progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
    """Runs one worker stage and returns its ``result`` dict.

    Args:
      stage: ``"extract"``, ``"match"``, ``"map"`` or ``"undistort"``.
      args: the stage's JSON-serialisable arguments (see ``colmap_worker.py``).
      log_path: COLMAP's log (stderr of the child) is appended here.
      progress: called with ``(done, total)`` whenever the child reports progress.
    Raises:
      StageError: the stage reported an error or the child died (the message says which, and
        where the log is).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result: Optional[dict] = None
    error: Optional[str] = None
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        log.write(f"\n==== nerfkit process-data: {stage} ====\n".encode())
        log.flush()
        proc = subprocess.Popen([sys.executable, str(WORKER), stage, json.dumps(args)],
                                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                env=env, text=True, bufsize=1)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "done" in msg and progress is not None:
                    progress(int(msg["done"]), int(msg["total"]))
                elif "result" in msg:
                    result = msg["result"]
                elif "error" in msg:
                    error = str(msg["error"])
            rc = proc.wait()
        except BaseException:  # Ctrl-C or an error in a progress callback: stop COLMAP too
            proc.kill()
            proc.wait()
            raise
    if error is not None:
        raise StageError(f"{error} (COLMAP log: {log_path})")
    if rc != 0 or result is None:
        why = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
        raise StageError(f"the pycolmap {stage} process ended with {why} (COLMAP log: {log_path})")
    return result


def check_pycolmap() -> None:
    """Raises :class:`DataError` (no path) if pycolmap is not installed (without importing it)."""
    import importlib.util

    if importlib.util.find_spec("pycolmap") is None:
        raise DataError(None, "process-data needs pycolmap (a nerfkit dependency): "
                              "pip install 'pycolmap>=4.2'")
