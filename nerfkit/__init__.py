"""nerfkit: a JAX toolkit for neural fields and neural rendering.

Data flows one way: ``data`` (parsers -> ``Scene``) -> ``core`` (rays, samplers, volume
rendering, encodings, losses, metrics) -> ``nn`` (Flax NNX fields) -> ``models`` (one file per
family) -> ``engine`` (train loop, checkpoints) -> ``export`` -> ``cli``.
"""

__version__ = "0.1.0"
