"""XLA:CPU settings that measurably help nerfkit's workloads, applied before JAX starts.

``configure_cpu()`` appends ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: turns off the
experimental YNNPACK fusions of jaxlib 0.10) to ``XLA_FLAGS`` unless the user already set that
flag. Measured on the 2-core development machine (see ``benchmarks/``): the hash-grid encoding and
vanilla NeRF training are faster with it, GEMMs unchanged. It must run before JAX initialises its
CPU backend; the CLI and the benchmarks call it first thing. Set ``NERFKIT_NO_XLA_FLAGS=1`` to
leave ``XLA_FLAGS`` untouched.

``use_huge_pages()`` re-executes the process (same command line, same PID) with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` added, so that glibc's malloc asks the kernel for
transparent huge pages (``madvise``) on the large buffers XLA:CPU allocates at every call. On the
development machine this made the ``ngp`` preset's training step 1.21x faster (a trained lego
run, best of three alternating rounds of 60 steps, ``benchmarks/train_step.py --env``), and a
10-minute lego run trained 1.34x the steps: fewer page faults and TLB misses on the step's
~100 MB of fresh intermediates. glibc reads its tunables only at start-up, hence the
re-execution; the ``nerfkit`` command does it first thing. It does nothing off Linux/glibc, where
the kernel's transparent huge pages are ``never``, when ``GLIBC_TUNABLES`` already sets
``glibc.malloc.hugetlb``, or with ``NERFKIT_NO_HUGE_PAGES=1``. Library users can set the variable
themselves: ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python my_script.py``.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def configure_cpu() -> None:
    """Adds nerfkit's XLA:CPU flags to ``XLA_FLAGS`` (idempotent; no-op if opted out)."""
    if os.environ.get("NERFKIT_NO_XLA_FLAGS"):
        return
    current = os.environ.get("XLA_FLAGS", "")
    add = [f for f in _FLAGS if f.split("=")[0] not in current]
    if add:
        os.environ["XLA_FLAGS"] = " ".join([current, *add]).strip()


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_environment(environ: Mapping[str, str]) -> Optional[dict[str, str]]:
    """``environ`` with glibc's huge-page tunable added, or ``None`` where it would not apply
    (see the module docstring)."""
    if environ.get("NERFKIT_NO_HUGE_PAGES") or not sys.platform.startswith("linux"):
        return None
    if platform.libc_ver()[0] != "glibc":
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return None
    try:
        if "[never]" in _THP_ENABLED.read_text():
            return None
    except OSError:
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{current}:{HUGE_PAGES_TUNABLE}" if current else HUGE_PAGES_TUNABLE
    return env


def use_huge_pages() -> None:
    """Re-executes this process with :data:`HUGE_PAGES_TUNABLE` set (see the module docstring);
    returns without doing anything where it does not apply. Call it before any work is done: the
    process image is replaced."""
    env = huge_pages_environment(os.environ)
    argv = getattr(sys, "orig_argv", None)
    if env is None or not argv:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return  # carry on as we are
