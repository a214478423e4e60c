"""The ``nerfkit`` command (also ``python -m nerfkit``): restarts itself with glibc's huge pages
(:func:`nerfkit.xla_flags.use_huge_pages`) before importing JAX and the rest of the CLI (~2 s),
then runs :mod:`nerfkit.cli`."""

from __future__ import annotations


def main() -> None:
    from nerfkit import xla_flags
    xla_flags.use_huge_pages()
    from nerfkit.cli import entrypoint
    entrypoint()


if __name__ == "__main__":
    main()
