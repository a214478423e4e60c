"""Flax NNX building blocks of the fields: MLPs (with ResFields and CAM as options of every
layer), the hash-grid encoding module, and the residual MLP of the light-field families."""

from nerfkit.nn.hashgrid import HashEncoding
from nerfkit.nn.mlp import MLP
from nerfkit.nn.modulation import CAMConfig, CAMGrid, ResFieldLinear, ResFieldsConfig
from nerfkit.nn.residual import ResidualMLP, torch_linear_init

__all__ = ["HashEncoding", "MLP", "CAMConfig", "CAMGrid", "ResFieldLinear", "ResFieldsConfig",
           "ResidualMLP", "torch_linear_init"]
