"""Pure JAX functions over arrays and small pytrees: no Flax state lives here."""
