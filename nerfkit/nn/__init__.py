"""Flax NNX building blocks (MLPs, encodings as modules) usable inside any field."""
