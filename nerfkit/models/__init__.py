"""Model families: one module each on top of the shared core.

``MODELS`` maps a family name (as used on the command line and in saved ``config.json``) to its
config class.
"""

from __future__ import annotations

from nerfkit.models.base import Model, ModelConfig, SceneInfo
from nerfkit.models.nerf import NeRFConfig

MODELS: dict[str, type[ModelConfig]] = {
    "nerf": NeRFConfig,
}

__all__ = ["MODELS", "Model", "ModelConfig", "SceneInfo", "NeRFConfig"]
