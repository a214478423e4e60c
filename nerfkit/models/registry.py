"""The family registry: a family is one module that registers its config class and presets.

Example (a whole new family in one file, see ``examples/custom_family.py``)::

    from nerfkit.models import ModelConfig, register_family, register_preset

    @register_family
    @dataclasses.dataclass(frozen=True)
    class TinyNeRFConfig(ModelConfig):
        family: ClassVar[str] = "tiny-nerf"
        ...

    register_preset("tiny-nerf", "A tiny NeRF.", TinyNeRFConfig(), checkpoint_every=200)

A preset is a ready-made ``nerfkit train <name>`` (a model config and overrides of the training
settings, :class:`~nerfkit.engine.config.TrainConfig`). A family defined outside the ``nerfkit``
package (a research script) records where it lives in every run's ``config.json``, so ``nerfkit
render``, ``eval`` and ``export`` of its runs import it again by themselves.
"""

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, NamedTuple, Optional, TypeVar

from nerfkit.errors import ConfigError
from nerfkit.models.base import ModelConfig

#: Every registered family: name (as in ``config.json``) -> config class.
MODELS: dict[str, type[ModelConfig]] = {}

_SOURCES: dict[str, str] = {}
_PRESETS: dict[str, "Preset"] = {}

C = TypeVar("C", bound=type)


class Preset(NamedTuple):
    """A ready-made ``nerfkit train NAME``: a one-line description, the model config and
    overrides of :class:`~nerfkit.engine.config.TrainConfig` fields (plain values)."""

    description: str
    model: ModelConfig
    train: dict[str, Any]


def register_family(cls: C) -> C:
    """Class decorator: registers a :class:`ModelConfig` subclass under its ``family`` name.

    Registering the same name again replaces the earlier class (a module imported twice, or a
    script re-run in a notebook).
    """
    if not (isinstance(cls, type) and issubclass(cls, ModelConfig)):
        raise TypeError(f"register_family expects a ModelConfig subclass, got {cls!r}")
    name = getattr(cls, "family", "base")
    if not isinstance(name, str) or not name or name == "base":
        raise TypeError(f"{cls.__name__}: set a class attribute family = '<name>' to register it")
    MODELS[name] = cls
    module = cls.__module__
    if not module.startswith("nerfkit."):
        mod = sys.modules.get(module)
        path = getattr(mod, "__file__", None)
        # A script run as __main__ (or loaded from its file by import_family) cannot be imported
        # by that module name later: record its file.
        by_file = module == "__main__" or module.startswith("nerfkit_family_")
        _SOURCES[name] = str(Path(path).resolve()) if by_file and path else module
    return cls


def register_preset(name: str, description: str, model: ModelConfig, **train: Any) -> Preset:
    """Registers ``nerfkit train NAME``: ``model`` with the given TrainConfig overrides
    (``checkpoint_every=500``, ``final_eval=False``, ...). The output folder defaults to
    ``runs/NAME``."""
    if type(model).family not in MODELS:
        raise ConfigError(f"preset {name!r}: register family {type(model).family!r} first")
    preset = Preset(description, model, dict(train))
    _PRESETS[name] = preset
    return preset


def presets() -> dict[str, Preset]:
    """Every registered preset (built-in families first, in registration order)."""
    import nerfkit.models  # noqa: F401 (registers the built-in families)
    return dict(_PRESETS)


def family_source(name: str) -> Optional[str]:
    """Where a family defined outside nerfkit lives (a module name or a ``.py`` file), or
    ``None`` for nerfkit's own families."""
    return _SOURCES.get(name)


def import_family(name: str, source: str, where: str = "config") -> type[ModelConfig]:
    """Imports the module or file ``source`` that registers family ``name`` and returns its
    config class."""
    try:
        if source.endswith(".py"):
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"{where}: family {name!r} is defined in {path}, which no "
                                  "longer exists")
            mod_name = f"nerfkit_family_{path.stem}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            _SOURCES[name] = str(path.resolve())  # not the module name it was loaded under
        else:
            importlib.import_module(source)
    except ImportError as e:
        raise ConfigError(f"{where}: cannot import {source!r}, which defines family {name!r}: "
                          f"{e}") from e
    if name not in MODELS:
        raise ConfigError(f"{where}: {source} does not register family {name!r}")
    return MODELS[name]
