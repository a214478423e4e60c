"""``python -m nerfkit.data.capture images|video INPUT --output DIR`` (same as
``nerfkit process-data``)."""

from __future__ import annotations

import sys
from typing import Annotated, Union

import tyro

from nerfkit.data.capture import ProcessImagesConfig, ProcessVideoConfig, process_data
from nerfkit.errors import NerfkitError


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(Union[Annotated[ProcessImagesConfig, tyro.conf.subcommand("images")],
                         Annotated[ProcessVideoConfig, tyro.conf.subcommand("video")]],
                   args=argv)
    try:
        process_data(cfg)
    except NerfkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
