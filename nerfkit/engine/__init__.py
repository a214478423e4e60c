"""The train loop, train state, checkpoints, rendering and evaluation."""
