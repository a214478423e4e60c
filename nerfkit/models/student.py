"""The shared config of families that can learn from a trained teacher (R2L, NeRDF).

A student is an ordinary family; distillation is ordinary training whose batches come from a
teacher instead of the training pixels: the engine loads the teacher run and builds the batch
source (:class:`nerfkit.engine.distill.TeacherSource`); the family only declares the teacher's run
directory and checks what the teacher provides (:meth:`StudentConfig.check_teacher`). With
``teacher`` unset the student trains on the real pixels like any other family.
"""

import dataclasses
from typing import Annotated, Any, Optional

import tyro

from nerfkit.errors import ConfigError
from nerfkit.models.base import ModelConfig


@dataclasses.dataclass(frozen=True)
class StudentConfig(ModelConfig):
    """Distillation settings shared by student families.

    Attributes:
      teacher: run directory of any trained radiance-field family (``nerfkit train ...``); set by
        ``nerfkit distill``. ``None``: train on the real training pixels instead.
      pseudo_poses: how pseudo cameras are drawn around the training cameras: ``sphere``
        (360-degree scenes), ``box`` (forward-facing scenes) or ``auto`` (``box`` for NDC scenes);
        see :mod:`nerfkit.data.pseudo`.
      real_fraction: fraction of every batch taken from the real training pixels (their ground
        truth replaces the teacher's colour; the teacher still labels their extras). This mixes
        R2L's second stage (fine-tuning on the real images) into distillation; ``1`` trains on
        real pixels only, with the teacher's extras.
      teacher_chunk: rays per teacher render call (bounds its memory).
      teacher_cache_rays: ``0``: the teacher labels fresh pseudo rays inside every train step.
        ``N > 0``: it renders ``N`` pseudo rays once, before training, cached on disk in
        ``RUN/teacher_cache/`` and reused by ``--resume``; batches are drawn from them (R2L's fixed
        pseudo dataset; every step then goes to the student). Needs about
        ``N * (80 + 12 * S)`` bytes of memory for a teacher with ``S`` samples per ray.
    """

    teacher: Annotated[Optional[str], tyro.conf.arg(metavar="RUN")] = None
    pseudo_poses: str = "auto"
    real_fraction: float = 0.0
    teacher_chunk: int = 4096
    teacher_cache_rays: int = 0

    def __post_init__(self):
        if not 0.0 <= self.real_fraction <= 1.0:
            raise ConfigError(f"real_fraction must be in [0, 1], got {self.real_fraction}")
        if self.pseudo_poses not in ("auto", "sphere", "box"):
            raise ConfigError(f"pseudo_poses must be auto, sphere or box, got "
                              f"{self.pseudo_poses!r}")
        if self.teacher_cache_rays < 0:
            raise ConfigError(f"teacher_cache_rays must be >= 0, got {self.teacher_cache_rays}")

    def check_teacher(self, source: Any) -> None:
        """Called by the engine with the teacher's data source
        (:class:`~nerfkit.engine.distill.TeacherSource`, whose ``extra_keys`` and
        ``teacher_family`` say what the teacher provides) before training; families warn or raise
        here when the teacher lacks what they learn from."""
        del source
