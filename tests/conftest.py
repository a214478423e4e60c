"""Shared test helpers.

Tests are plain files (no ``__init__.py``); pytest puts this folder on ``sys.path``, so test modules
can ``from conftest import requires_shared, shared_datasets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest


def shared_datasets() -> Optional[Path]:
    """The read-only benchmark data folder ``../shared/datasets`` beside the checkout, or ``None``."""
    path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets").resolve()
    return path if path.is_dir() else None


requires_shared = pytest.mark.skipif(
    shared_datasets() is None,
    reason="needs the real benchmark data at ../shared/datasets beside the checkout (absent here)")
