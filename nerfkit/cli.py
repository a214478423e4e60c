"""The ``nerfkit`` command line: ``train``, ``render``, ``eval`` (tyro subcommands).

Examples::

    nerfkit train ngp --data ../shared/datasets/nerf_synthetic/lego --downscale 4 --max-minutes 10
    nerfkit render runs/lego-ngp --split test --output renders/lego-ngp
    nerfkit render runs/lego-ngp --camera-path orbit --frames 60 --output renders/orbit
    nerfkit eval runs/lego-ngp --split test

User errors (a missing file, a malformed JSON, an existing run directory) print one message and
exit with status 2; ``--debug`` anywhere on the command line shows the traceback.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated, Optional, Union

import tyro

from nerfkit.errors import NerfkitError


@dataclasses.dataclass(frozen=True)
class RenderCommand:
    """Render a trained run: the views of a dataset split, or a camera path as frames + MP4."""

    run: tyro.conf.Positional[Path]
    """The run directory written by ``nerfkit train``."""
    split: Optional[str] = None
    """Render every view of this dataset split (writes ``OUTPUT/<split>/<name>.png``)."""
    camera_path: Optional[str] = None
    """``orbit``, ``spiral`` or a camera-path JSON file (writes frames and ``OUTPUT/video.mp4``)."""
    frames: int = 120
    """Number of frames for the ``orbit``/``spiral`` presets."""
    fps: int = 30
    """Video frame rate."""
    output: Optional[Path] = None
    """Output folder (default: ``RUN/renders``)."""
    depth: bool = False
    """Also write depth maps (``<name>_depth.png``, normalised to the scene's near/far)."""
    chunk: Optional[int] = None
    """Rays per render call (bounds memory; default: the model's ``render_chunk``)."""


@dataclasses.dataclass(frozen=True)
class EvalCommand:
    """Evaluate a trained run on a dataset split: mean PSNR and SSIM, per-view values in JSON."""

    run: tyro.conf.Positional[Path]
    """The run directory written by ``nerfkit train``."""
    split: str = "test"
    """Dataset split to evaluate."""
    chunk: Optional[int] = None
    """Rays per render call."""


@dataclasses.dataclass(frozen=True)
class DemoCommand:
    """The quick start: train the default model on the generated default scene, render its test
    views and an orbit video, and print the test PSNR."""

    output: Path = Path("runs/demo")
    """Run directory."""
    max_minutes: float = 4.0
    """Training time budget."""
    overwrite: bool = True
    """Replace an earlier demo run in ``output``."""


def _train_type():
    from nerfkit.configs import PRESETS
    from nerfkit.engine.config import TrainConfig
    defaults = {name: cfg for name, (_, cfg) in PRESETS.items()}
    descriptions = {name: desc for name, (desc, _) in PRESETS.items()}
    return tyro.extras.subcommand_type_from_defaults(defaults, descriptions)


def run_train(cfg) -> int:
    from nerfkit.engine.trainer import train
    summary = train(cfg)
    print(f"trained {summary['step']} steps in {summary['train_seconds']:.0f} s -> {summary['run_dir']}")
    if "test_psnr" in summary:
        print(f"test PSNR {summary['test_psnr']:.2f} dB, SSIM {summary['test_ssim']:.4f}")
    return 0


def run_render(cmd: RenderCommand) -> int:
    from nerfkit.export.render import render_camera_path, render_split
    from nerfkit.engine.trainer import load_run
    if (cmd.split is None) == (cmd.camera_path is None):
        raise NerfkitError("render: give exactly one of --split SPLIT or --camera-path PATH")
    run = load_run(cmd.run)
    out = Path(cmd.output) if cmd.output else Path(cmd.run) / "renders"
    if cmd.split is not None:
        written = render_split(run, cmd.split, out, depth=cmd.depth, chunk=cmd.chunk)
        print(f"wrote {written} images to {out / cmd.split}")
    else:
        video = render_camera_path(run, cmd.camera_path, out, frames=cmd.frames, fps=cmd.fps,
                                   depth=cmd.depth, chunk=cmd.chunk)
        print(f"wrote {video}")
    return 0


def run_eval(cmd: EvalCommand) -> int:
    from nerfkit.engine.config import write_json_atomic
    from nerfkit.engine.render import evaluate
    from nerfkit.engine.trainer import load_run
    run = load_run(cmd.run)
    scene = run.load_split(cmd.split)
    ev = evaluate(run.renderer(cmd.chunk), scene)
    ev["step"] = run.step
    path = Path(cmd.run) / "eval" / f"{cmd.split}.json"
    write_json_atomic(path, ev)
    print(f"{cmd.split}: PSNR {ev['psnr']:.2f} dB  SSIM {ev['ssim']:.4f}  "
          f"({ev['num_views']} views, step {run.step}) -> {path}")
    return 0


def run_demo(cmd: DemoCommand) -> int:
    import dataclasses as dc
    from nerfkit.configs import PRESETS
    from nerfkit.engine.trainer import load_run, train
    from nerfkit.export.render import render_camera_path, render_split
    name = "ngp" if "ngp" in PRESETS else "nerf"
    cfg = dc.replace(PRESETS[name][1], data=None, output=cmd.output, max_minutes=cmd.max_minutes,
                     max_steps=None, overwrite=cmd.overwrite)
    summary = train(cfg)
    run = load_run(cmd.output)
    render_split(run, "test", cmd.output / "renders")
    video = render_camera_path(run, "orbit", cmd.output / "renders", frames=60, fps=30)
    print(f"trained {summary['step']} steps ({name}) in {summary['train_seconds']:.0f} s; "
          f"test renders in {cmd.output / 'renders' / 'test'}; orbit video {video}")
    print(f"test PSNR {summary['test_psnr']:.2f} dB, SSIM {summary['test_ssim']:.4f}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    from nerfkit import xla_flags
    xla_flags.configure_cpu()
    try:
        cmd = tyro.extras.subcommand_cli_from_dict(
            {
                "train": _train_type(),
                "render": RenderCommand,
                "eval": EvalCommand,
                "demo": DemoCommand,
            },
            args=argv,
            description="nerfkit: neural fields and neural rendering in JAX. "
                        "Add --debug to show tracebacks of user errors.",
        )
        if isinstance(cmd, RenderCommand):
            return run_render(cmd)
        if isinstance(cmd, EvalCommand):
            return run_eval(cmd)
        if isinstance(cmd, DemoCommand):
            return run_demo(cmd)
        return run_train(cmd)
    except NerfkitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last complete checkpoint is kept", file=sys.stderr)
        return 130


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
