"""Your own captures in: ``nerfkit process-data images|video INPUT --output DIR``.

Photos (or frames of a video) -> structure from motion with pycolmap (SIFT, sequential /
exhaustive / spatial matching, incremental mapping, optional undistortion) -> a nerfstudio-style
dataset: ``transforms.json``, ``images/`` + ``images_{2,4,8}/``, ``sparse_pc.ply``, the COLMAP model
in ``colmap/sparse/0`` and a summary in ``process_data.json``. See
:mod:`nerfkit.data.capture.pipeline` for the layout and :mod:`nerfkit.data.capture.transforms` for
the conventions.
"""

from nerfkit.data.capture.config import ProcessImagesConfig, ProcessVideoConfig
from nerfkit.data.capture.pipeline import process_data

__all__ = ["ProcessImagesConfig", "ProcessVideoConfig", "process_data"]
