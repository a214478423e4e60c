"""Model families: one module each on top of the shared core.

``MODELS`` maps a family name (as used on the command line and in saved ``config.json``) to its
config class.
"""

from __future__ import annotations

from nerfkit.models.base import Model, ModelConfig, SceneInfo
from nerfkit.models.nerdf import NeRDFConfig
from nerfkit.models.nerf import NeRFConfig
from nerfkit.models.ngp import NGPConfig
from nerfkit.models.r2l import R2LConfig
from nerfkit.models.signal import SignalConfig

MODELS: dict[str, type[ModelConfig]] = {
    "nerf": NeRFConfig,
    "ngp": NGPConfig,
    "r2l": R2LConfig,
    "nerdf": NeRDFConfig,
    "signal": SignalConfig,
}

__all__ = ["MODELS", "Model", "ModelConfig", "SceneInfo", "NeRFConfig", "NGPConfig",
           "R2LConfig", "NeRDFConfig", "SignalConfig"]
