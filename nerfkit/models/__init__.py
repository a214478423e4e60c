"""Model families: one module each on top of the shared core.

A family registers its config class with :func:`register_family` and its ``nerfkit train``
presets with :func:`register_preset` (:mod:`nerfkit.models.registry`); :data:`MODELS` maps a family
name (as used on the command line and in saved ``config.json``) to its config class. Importing this
package registers the built-in families.
"""

from __future__ import annotations

from nerfkit.models.base import Model, ModelConfig, SceneInfo
from nerfkit.models.registry import (MODELS, Preset, family_source, import_family, presets,
                                     register_family, register_preset)
from nerfkit.models.ngp import NGPConfig  # noqa: I001 (registration order: ngp, the default, first)
from nerfkit.models.nerf import NeRFConfig
from nerfkit.models.r2l import R2LConfig
from nerfkit.models.nerdf import NeRDFConfig
from nerfkit.models.signal import SignalConfig

__all__ = ["MODELS", "Model", "ModelConfig", "SceneInfo", "Preset", "register_family",
           "register_preset", "presets", "family_source", "import_family", "NeRFConfig",
           "NGPConfig", "R2LConfig", "NeRDFConfig", "SignalConfig"]
