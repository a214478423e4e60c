"""XLA:CPU settings that measurably help nerfkit's workloads, applied before JAX starts.

``configure_cpu()`` appends ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: turns off the
experimental YNNPACK fusions of jaxlib 0.10) to ``XLA_FLAGS`` unless the user already set that
flag. Measured on the 2-core development machine (see ``benchmarks/``): the hash-grid encoding and
vanilla NeRF training are faster with it, GEMMs unchanged. It must run before JAX initialises its
CPU backend; the CLI and the benchmarks call it first thing. Set ``NERFKIT_NO_XLA_FLAGS=1`` to
leave ``XLA_FLAGS`` untouched.
"""

from __future__ import annotations

import os

_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def configure_cpu() -> None:
    """Adds nerfkit's XLA:CPU flags to ``XLA_FLAGS`` (idempotent; no-op if opted out)."""
    if os.environ.get("NERFKIT_NO_XLA_FLAGS"):
        return
    current = os.environ.get("XLA_FLAGS", "")
    add = [f for f in _FLAGS if f.split("=")[0] not in current]
    if add:
        os.environ["XLA_FLAGS"] = " ".join([current, *add]).strip()
