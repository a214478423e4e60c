"""Run configuration: frozen dataclasses of plain values, saved as JSON next to each run.

Configs are rebuilt from JSON by field name (never by pickling live objects), so a run saved by an
older nerfkit still loads: missing fields take today's defaults; unknown fields are a clear error;
a config class whose defaults changed meaning maps older dumps with a ``upgrade(data) -> data``
classmethod (e.g. :meth:`nerfkit.nn.modulation.CAMConfig.upgrade`).
"""

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import tyro

from nerfkit.fileio import write_json_atomic  # noqa: F401 (re-exported)
from nerfkit.errors import ConfigError
from nerfkit.models import MODELS, ModelConfig, family_source, import_family, presets as _presets


# Command-line spellings of optional values (tyro would show ``{None}|STR``).
OptStr = Annotated[Optional[str], tyro.conf.arg(metavar="STR")]
OptPath = Annotated[Optional[Path], tyro.conf.arg(metavar="PATH")]
OptDataPath = Annotated[Optional[str], tyro.conf.arg(metavar="PATH")]
OptInt = Annotated[Optional[int], tyro.conf.arg(metavar="INT")]
OptFloat = Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT")]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training a radiance-field family on a scene.

    Attributes:
      model: the family and its hyper-parameters (``--model.*``).
      data: dataset folder (Blender ``transforms_*.json`` or LLFF ``poses_bounds.npy``); omitted:
        the generated default scene.
      downscale: integer image downscale (LLFF: the ``images_N`` folder; default 1, LLFF 8).
      max_frames: videos: use only the first N frames (other data: must be left unset).
      output: run directory (config, checkpoints, metrics, evaluations).
      max_steps: stop after this many steps (default: the family's preset if no time limit).
      max_minutes: stop after this much training wall-clock time (evaluation excluded).
      resume: continue from the latest checkpoint in ``output``.
      overwrite: delete an existing ``output`` run first (never done without this flag).
      seed: random seed (initialisation, ray batches, sampling).
      log_every: steps between metrics lines in ``metrics.jsonl``.
      eval_every: steps between quick evaluations on ``eval_views`` test views (0: never); one
        is skipped while these evaluations have cost more than 10% of the training time so far
        (``trainer.PERIODIC_EVAL_BUDGET``).
      eval_views: number of test views of the periodic evaluation.
      eval_minutes: training-time marks (minutes) at which to evaluate on *every* test view
        (written to ``eval/test_<M>min.json``), e.g. ``2 5 10`` for a quality-vs-time curve.
      checkpoint_every: steps between checkpoints (and one at the end).
      keep_checkpoints: how many recent checkpoints to keep.
      final_eval: evaluate on every test view when training ends (writes ``eval/test.json``).
      eval_lpips: also compute AlexNet LPIPS in the final and ``eval_minutes`` evaluations
        (seconds on small views; the periodic ``eval_every`` ones never do).
      logger: ``jsonl`` (``metrics.jsonl`` only), ``tensorboard`` (also TensorBoard event files
        in ``RUN/tensorboard/``: scalars, and renders beside ground truth at each ``eval_every``
        evaluation) or ``none`` (as ``jsonl``: ``metrics.jsonl`` is the run's record, which
        ``resume`` reads). See :mod:`nerfkit.engine.logger`.
      on_nonfinite: ``stop`` (keep the last good checkpoint and exit with an error) or ``skip``
        (drop the update of a step whose loss or gradients are not finite).
      init_from: start from the weights of another run's latest checkpoint (same family and
        sizes; the optimiser and step count start afresh): fine-tuning, e.g. a distilled student
        on the real training images (``nerfkit train r2l --init-from runs/lego-r2l ...``).
      num_processes: train as this many processes (every device of each is used; see
        ``docs/DISTRIBUTED.md``). Alone, it starts that many local processes itself; with
        ``process_id`` (or under ``srun``/``mpirun``), this process is one of them.
      process_id: this process's rank in ``[0, num_processes)`` (default: ``JAX_PROCESS_ID`` or
        the cluster's rank).
      coordinator_address: ``host:port`` of process 0's coordinator (default:
        ``JAX_COORDINATOR_ADDRESS`` or the cluster's).
      viewer: serve the live browser viewer while training (:mod:`nerfkit.viewer`; it renders
        between steps, at most 10% of the time).
      viewer_host, viewer_port: where the viewer listens (a busy port: the next free one).
    """

    model: ModelConfig
    data: OptDataPath = None
    downscale: OptInt = None
    max_frames: OptInt = None
    output: Path = Path("runs/default")
    max_steps: OptInt = None
    max_minutes: OptFloat = None
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0
    eval_views: int = 2
    eval_minutes: tuple[float, ...] = ()
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    final_eval: bool = True
    eval_lpips: bool = False
    logger: Literal["jsonl", "tensorboard", "none"] = "jsonl"
    on_nonfinite: str = "stop"
    init_from: OptPath = None
    num_processes: OptInt = None
    process_id: OptInt = None
    coordinator_address: OptStr = None
    viewer: bool = False
    viewer_host: str = "127.0.0.1"
    viewer_port: int = 7007

    def load_split(self, split: str):
        """Loads ``split`` of ``data`` with this config's ``downscale`` and ``max_frames``."""
        from nerfkit.data import load_scene
        opts = {} if self.max_frames is None else {"max_frames": self.max_frames}
        # The signal (image / video) family reads a folder of images as a video's frames; for
        # the radiance-field families such a folder is photos still to be posed.
        return load_scene(self.data, split, self.downscale,
                          as_video=self.model.family == "signal", **opts)

    def __post_init__(self):
        if self.logger not in ("jsonl", "tensorboard", "none"):
            raise ConfigError(f"--logger must be 'jsonl', 'tensorboard' or 'none', got "
                              f"{self.logger!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"--on-nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ConfigError(f"--max-steps must be >= 0, got {self.max_steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be > 0, got {self.max_minutes}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be a positive integer, got {self.max_frames}")
        if self.downscale is not None and self.downscale < 1:
            raise ConfigError(f"--downscale must be a positive integer, got {self.downscale}")


def to_dict(obj: Any) -> Any:
    """Plain JSON-able values of a (nested) dataclass."""
    if dataclasses.is_dataclass(obj):
        out = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, ModelConfig):
            source = family_source(obj.family)
            out = {"family": obj.family, **({"family_source": source} if source else {}), **out}
        return out
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _convert(args[0], value, where)
        return value
    if isinstance(tp, type) and issubclass(tp, ModelConfig):
        return model_config_from_dict(value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {type(value).__name__} "
                              f"{value!r}")
        return Path(value)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (
            tp is not bool and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Rebuilds dataclass ``cls`` from plain values; unknown keys are a :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    upgrade = getattr(cls, "upgrade", None)
    if callable(upgrade):  # a config class that renamed or re-meant keys maps older dumps
        data = upgrade(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields) - {"family", "family_source"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; "
                          f"known keys: {sorted(fields)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items() if k in fields}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a value the config itself rejects: say which file holds it
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def model_config_from_dict(data: dict, where: str = "model") -> ModelConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    family = data.get("family")
    if family not in MODELS and isinstance(data.get("family_source"), str):
        import_family(family, data["family_source"], where)
    if family not in MODELS:
        raise ConfigError(f"{where}: unknown model family {family!r}; known: {sorted(MODELS)}")
    return from_dict(MODELS[family], data, where)


def read_json(path: os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: {what} not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a JSON text file (not valid UTF-8)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror or e}") from e


def save_train_config(run_dir: Path, cfg: TrainConfig) -> None:
    import nerfkit
    write_json_atomic(Path(run_dir) / "config.json",
                      {"nerfkit_version": nerfkit.__version__, "train": to_dict(cfg)})


def load_train_config(run_dir: os.PathLike) -> TrainConfig:
    """Loads ``RUN/config.json`` written by ``nerfkit train``."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    data = read_json(path, "run config (is this a nerfkit run directory?)")
    if not isinstance(data, dict) or "train" not in data:
        raise ConfigError(f"{path}: missing the 'train' section")
    return _portable_backend(from_dict(TrainConfig, data["train"], f"{path}: train"))


def _portable_backend(cfg: TrainConfig) -> TrainConfig:
    """A run trained with ``--model.backend ffi`` still loads (render, eval, export, resume) where
    the kernel is not built: the backend changes the speed, not the parameters or the values, so
    it becomes ``auto`` there (pure JAX, with ``auto``'s one warning)."""
    if getattr(cfg.model, "backend", None) != "ffi":
        return cfg
    from nerfkit.nn import ffi_backend
    if ffi_backend.available():
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backend="auto"))


def presets() -> dict[str, tuple[str, TrainConfig]]:
    """``nerfkit train`` presets: name -> (description, :class:`TrainConfig`), from every
    registered family's :func:`~nerfkit.models.register_preset` (output ``runs/NAME``)."""
    return {name: (p.description, TrainConfig(model=p.model, output=Path(f"runs/{name}"),
                                              **p.train))
            for name, p in _presets().items()}
