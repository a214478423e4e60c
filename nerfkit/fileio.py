"""Atomic file output shared by every layer.

Every file nerfkit writes for a user (configs, metrics rewrites, evaluations, rendered images,
videos, exports, camera paths) goes through :func:`atomic_write`: the bytes are written to a
temporary file in the destination folder, flushed to disk, given the permissions an ordinary
``open(path, "w")`` would give (``0o666`` less the process umask, so a colleague or a web server
can read renders as they can read any file the user makes), and renamed over the destination. A
reader never sees half a file, and an error or interrupt leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    # os.umask can only be read by setting it, which is not thread-safe: read it once, at import.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _read_umask()


def _umask() -> int:
    """The process umask: Linux reports it in /proc/self/status (no race with threads writing
    files); elsewhere the one read when this module was imported."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, for writers that pick the format from it,
    such as ffmpeg or trimesh); when the block ends without error the file there replaces
    ``path``, with the permissions of an ordinary new file. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:  # a full disk or an interrupt leaves no temporary file behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Opens a temporary file beside ``path`` for writing (see :func:`atomic_path`); on success
    it is flushed to disk and replaces ``path``.

    Args:
      path: destination; its parent folders are created.
      mode: ``"wb"`` (bytes) or ``"w"`` (text).
    Yields:
      the open file object.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON to ``path`` atomically; returns ``path``."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
    return Path(path)


@contextlib.contextmanager
def ffmpeg_subprocess() -> Iterator[None]:
    """Silences JAX's ``os.fork() was called`` RuntimeWarning while imageio starts ffmpeg: the
    child process execs ffmpeg at once and runs no Python, so the deadlock the warning is about
    cannot happen, and users saw the warning on every run that wrote a video."""
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                category=RuntimeWarning)
        yield
