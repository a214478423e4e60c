#!/usr/bin/env python
"""Renders nerfkit's generated default scene into a Blender-layout dataset folder.

    python datasets/make_default_scene.py datasets/default            # 100 train + 20 test, 128px
    python datasets/make_default_scene.py /tmp/scene --resolution 256 --num-train 200

The scene is defined in ``nerfkit/data/synthetic.py``; ``nerfkit`` commands without a dataset path
use a cached copy (``$NERFKIT_CACHE/default_scene`` or ``~/.cache/nerfkit/default_scene``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from nerfkit.data.synthetic import generate_default_scene  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("datasets/default"),
                        help="output folder (default: datasets/default, git-ignored)")
    parser.add_argument("--num-train", type=int, default=100)
    parser.add_argument("--num-test", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=128, help="image width and height")
    parser.add_argument("--seed", type=int, default=0, help="seeds the training camera directions")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate_default_scene(args.out_dir, num_train=args.num_train, num_test=args.num_test,
                                 resolution=args.resolution, seed=args.seed)
    print(f"wrote {args.num_train} train + {args.num_test} test views "
          f"({args.resolution}x{args.resolution}) to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
