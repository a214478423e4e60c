"""Dataset parsers: each format becomes the same :class:`~nerfkit.data.scene.Scene`."""
