"""Per-image appearance embeddings (exposure, white balance, lighting that vary across a capture).

Martin-Brualla, Radwan, Sajjadi, Barron, Dosovitskiy & Duckworth, "NeRF in the Wild: Neural
Radiance Fields for Unconstrained Photo Collections" (CVPR 2021), Sec. 4.1: every training image
``i`` owns a learned vector ``l_i`` (the *appearance embedding*, "generative latent optimization")
that is fed, with the view direction, to the colour branch only, so that the geometry is shared by
all images while their colours may differ. nerfstudio's nerfacto does the same for hand-held
captures (``fields/nerfacto_field.py``: an ``Embedding(num_images, 32)`` concatenated to the colour
MLP's input).

Images the table has not seen (held-out or novel cameras) have no vector of their own. NeRF-W
optimises one per test image on half of it; nerfacto uses the mean of the table
(``use_average_appearance_embedding=True``, its default) or zeros. Here the default is the
**mean** (``unseen="mean"``): the colour MLP has only ever seen inputs near the table's rows, and
their mean is the appearance of an "average" training image (for a smooth MLP, close to the
average of the training images' colours); a zero vector lies far from every row when the rows are
initialised as in NeRF-W / nerfacto (``N(0, 1)`` per entry: a 32-d row is ``~sqrt(32)`` from 0), so
the first renders of held-out views would get a colour cast. ``unseen="zeros"`` is available for
tables initialised at (or regularised towards) zero. The choice is fixed (not learned), so held-out
metrics never use information from the held-out images.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

UNSEEN_MODES: tuple[str, ...] = ("mean", "zeros")


class AppearanceEmbedding(nnx.Module):
    """A learned table ``[num_images, dim]`` of per-image appearance vectors.

    Args:
      num_images: rows of the table (the training images, indexed ``0 .. num_images - 1``).
      dim: length of each vector (nerfacto: 32; NeRF-W: 48).
      unseen: vector for ids outside ``[0, num_images)`` (e.g. ``-1`` for a held-out or novel
        camera): ``"mean"`` of the table's rows (default; gradient stopped, so such rays never
        train the table) or ``"zeros"``. See the module docstring for why.
      init_std: standard deviation of the ``N(0, init_std^2)`` initial entries (NeRF-W and
        nerfacto: PyTorch's ``nn.Embedding`` default, 1).
      rngs: NNX random streams (``params``).
    """

    def __init__(self, num_images: int, dim: int = 32, *,
                 unseen: Literal["mean", "zeros"] = "mean", init_std: float = 1.0,
                 rngs: nnx.Rngs):
        if num_images < 1 or dim < 1:
            raise ValueError(f"AppearanceEmbedding needs num_images >= 1 and dim >= 1, got "
                             f"{num_images} and {dim}")
        if unseen not in UNSEEN_MODES:
            raise ValueError(f"unseen must be one of {UNSEEN_MODES}, got {unseen!r}")
        self.num_images = int(num_images)
        self.dim = int(dim)
        self.unseen = unseen
        self.embedding = nnx.Embed(self.num_images, self.dim,
                                   embedding_init=nnx.initializers.normal(init_std), rngs=rngs)

    def unseen_vector(self) -> jax.Array:
        """``[dim]`` the vector used for cameras outside the table (mean of the rows or zeros)."""
        table = self.embedding.embedding[...]
        if self.unseen == "zeros":
            return jnp.zeros((self.dim,), table.dtype)
        return jax.lax.stop_gradient(jnp.mean(table, axis=0))

    def __call__(self, image_ids: jax.Array) -> jax.Array:
        """Appearance vectors of the images ``image_ids``.

        Args:
          image_ids: ``[...]`` integer image indices (e.g. one per ray); ids outside
            ``[0, num_images)`` (conventionally ``-1``) denote an unseen camera.
        Returns:
          ``[..., dim]``: row ``image_ids`` of the table, or :meth:`unseen_vector` for unseen ids.
        """
        ids = jnp.asarray(image_ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(f"image_ids must be integers, got {ids.dtype}")
        known = (ids >= 0) & (ids < self.num_images)
        rows = self.embedding(jnp.where(known, ids, 0))
        return jnp.where(known[..., None], rows, self.unseen_vector())
