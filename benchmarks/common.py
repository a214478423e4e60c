"""Helpers shared by the benchmark scripts: timing, peak memory, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

# XLA flags must be set before JAX initialises.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nerfkit import xla_flags  # noqa: E402

xla_flags.configure_cpu()

import jax  # noqa: E402


def environment() -> dict[str, Any]:
    return {
        "jax": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def tree_env(tree: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that runs the ``nerfkit`` package of source ``tree``
    (``base``, default ``os.environ``, with ``PYTHONPATH``). It loads this checkout's compiled
    kernel (``NERFKIT_FFI_LIB_DIR``, unless already set): a bare source tree (``git archive``)
    has none and would run the pure-JAX encoding, which is not the change being measured."""
    env = {**(os.environ if base is None else base), "PYTHONPATH": str(tree)}
    ext = Path(__file__).resolve().parents[1] / "nerfkit" / "_ext"
    if ext.is_dir():
        env.setdefault("NERFKIT_FFI_LIB_DIR", str(ext))
    return env


def block(x):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def time_fn(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> tuple[float, float]:
    """Median seconds per call of ``fn`` (blocked), and the first call's (compile) seconds."""
    t0 = time.perf_counter()
    block(fn())
    compile_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compile_s


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_json(path: str | os.PathLike, benchmark: str, config: dict, results: dict) -> None:
    out = {"benchmark": benchmark, "config": config, "results": results,
           "environment": environment()}
    Path(path).write_text(json.dumps(out, indent=2))


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return "" if v is None else str(v)
