"""The ``nerfkit`` command line: ``train``, ``distill``, ``render``, ``eval`` (tyro subcommands).

Examples::

    nerfkit train ngp --data ../shared/datasets/nerf_synthetic/lego --downscale 4 --max-minutes 10
    nerfkit distill r2l --teacher runs/lego-ngp --max-minutes 20 --output runs/lego-r2l
    nerfkit render runs/lego-ngp --split test --output renders/lego-ngp
    nerfkit render runs/lego-ngp --camera-path orbit --frames 60 --output renders/orbit
    nerfkit eval runs/lego-ngp --split test
    nerfkit view runs/lego-ngp                       # live browser viewer (viser)

User errors (a missing file, a malformed JSON, an existing run directory) print one message and
exit with status 2; ``--debug`` anywhere on the command line shows the traceback.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

if __name__ == "__main__":  # python -m nerfkit.cli: restart with huge pages before importing JAX
    from nerfkit import xla_flags as _xla_flags
    _xla_flags.use_huge_pages()

import tyro

from nerfkit.engine.config import OptDataPath, OptInt, OptPath, OptStr
from nerfkit.errors import NerfkitError


@dataclasses.dataclass(frozen=True)
class RenderCommand:
    """Render a trained run: the views of a dataset split, or a camera path as frames + MP4."""

    run: tyro.conf.Positional[Path]
    """The run directory written by ``nerfkit train``."""
    split: OptStr = None
    """Render every view of this dataset split (writes ``OUTPUT/<split>/<name>.png``)."""
    camera_path: OptDataPath = None
    """``orbit``, ``spiral`` or a camera-path JSON file (writes frames and ``OUTPUT/video.mp4``)."""
    frames: int = 120
    """Number of frames for the ``orbit``/``spiral`` presets."""
    fps: int = 30
    """Video frame rate."""
    output: OptPath = None
    """Output folder (default: ``RUN/renders``)."""
    depth: bool = False
    """Also write depth maps (``<name>_depth.png``, normalised to the scene's near/far)."""
    chunk: OptInt = None
    """Rays per render call (bounds memory; default: the model's ``render_chunk``)."""


@dataclasses.dataclass(frozen=True)
class ViewCommand:
    """Open a trained run in the live browser viewer (viser): fly around, see the training
    cameras, add keyframes and save a camera path (nerfstudio's camera_path.json)."""

    run: tyro.conf.Positional[Path]
    """The run directory written by ``nerfkit train``."""
    port: int = 7007
    """Port to serve on (a busy port: the next free one)."""
    host: str = "127.0.0.1"
    """Interface to listen on (``0.0.0.0``: reachable from other machines)."""
    resolution: int = 256
    """Initial longer side of the refined render, pixels (a slider in the viewer)."""
    chunk: OptInt = None
    """Rays per render call."""


@dataclasses.dataclass(frozen=True)
class EvalCommand:
    """Evaluate a trained run on a dataset split: mean PSNR, SSIM and LPIPS, per-view values in
    JSON."""

    run: tyro.conf.Positional[Path]
    """The run directory written by ``nerfkit train``."""
    split: str = "test"
    """Dataset split to evaluate."""
    chunk: OptInt = None
    """Rays per render call."""
    lpips: bool = True
    """Also compute AlexNet LPIPS (v0.1, as papers report); ``--no-lpips`` skips it."""


@dataclasses.dataclass(frozen=True)
class DemoCommand:
    """The quick start: train the default model on the generated default scene, render its test
    views and an orbit video, and print the test PSNR."""

    output: Path = Path("runs/demo")
    """Run directory."""
    max_minutes: float = 3.0
    """Training time budget (the whole demo, set-up included, stays under 10 minutes)."""
    overwrite: bool = True
    """Replace an earlier demo run in ``output``."""
    frames: int = 60
    """Frames of the orbit video."""


@dataclasses.dataclass(frozen=True)
class ExportMesh:
    """Marching cubes on a radiance field's density, with vertex colours (.ply, .glb or .obj)."""

    run: tyro.conf.Positional[Path]
    """The run directory."""
    out: tyro.conf.Positional[Path]
    """Output mesh file; the format follows the extension."""
    resolution: int = 256
    """Grid vertices per axis over the scene box."""
    threshold: float = 10.0
    """Density level of the surface."""
    frame: Literal["capture", "model"] = "capture"
    """Coordinates of the output: capture (your capture's own, e.g. COLMAP's world for
    process-data output, so it lines up with the sparse model) or model (the normalised ones the
    model was trained in). The same for Blender and LLFF data."""


@dataclasses.dataclass(frozen=True)
class ExportPointcloud:
    """Points at the expected depth of rendered pixels (opacity > min_acc), coloured (.ply)."""

    run: tyro.conf.Positional[Path]
    """The run directory."""
    out: tyro.conf.Positional[Path]
    """Output point-cloud file (.ply)."""
    split: str = "train"
    """Views to render from."""
    views: int = 20
    """Number of evenly spaced views."""
    min_acc: float = 0.5
    """Minimum accumulated opacity of a pixel to become a point."""
    stride: int = 1
    """Take every stride-th pixel in each direction."""
    frame: Literal["capture", "model"] = "capture"
    """Coordinates of the output: capture (your capture's own, e.g. COLMAP's world for
    process-data output, so it lines up with the sparse model) or model (the normalised ones the
    model was trained in). The same for Blender and LLFF data."""


@dataclasses.dataclass(frozen=True)
class ExportCameras:
    """The run's train and test cameras as JSON (OpenGL camera-to-world, pixel intrinsics)."""

    run: tyro.conf.Positional[Path]
    """The run directory."""
    out: tyro.conf.Positional[Path]
    """Output JSON file."""
    frame: Literal["capture", "model"] = "capture"
    """Coordinates of the output: capture (your capture's own, e.g. COLMAP's world for
    process-data output, so it lines up with the sparse model) or model (the normalised ones the
    model was trained in). The same for Blender and LLFF data."""


@dataclasses.dataclass(frozen=True)
class ExportWeb:
    """A self-contained browser viewer folder: live WebGL2 rendering for R2L and NeRDF runs, a
    pre-rendered orbit (frames + MP4) for the other families. Serve it over HTTP to view it."""

    run: tyro.conf.Positional[Path]
    """The run directory."""
    out: tyro.conf.Positional[Path]
    """Output folder (index.html, viewer.js, model.json, weights.bin)."""
    frames: int = 60
    """Frames of the pre-rendered orbit (families that cannot render live only)."""


def _process_type():
    from nerfkit.data.capture import ProcessImagesConfig, ProcessVideoConfig
    return Union[
        Annotated[ProcessImagesConfig, tyro.conf.subcommand(
            "images", description="Poses for a folder of photos (pycolmap structure from motion)"
            " -> OUTPUT/transforms.json, images_2/4/8, the COLMAP model.")],
        Annotated[ProcessVideoConfig, tyro.conf.subcommand(
            "video", description="Poses for a video: evenly spaced (or sharpest) frames, then "
            "the same pipeline as images.")],
    ]


def run_process(cfg) -> int:
    from nerfkit.data.capture import process_data
    summary = process_data(cfg)
    print(f"next: nerfkit train ngp --data {summary.get('output', cfg.output)} --downscale 4 "
          f"--max-minutes 20 --output runs/{Path(cfg.output).name}")
    return 0


ExportCommand = Union[
    Annotated[ExportWeb, tyro.conf.subcommand("web")],
    Annotated[ExportMesh, tyro.conf.subcommand("mesh")],
    Annotated[ExportPointcloud, tyro.conf.subcommand("pointcloud")],
    Annotated[ExportCameras, tyro.conf.subcommand("cameras")],
]


def run_export(cmd) -> int:
    from nerfkit.engine.run import load_run
    from nerfkit.export import geometry
    run = load_run(cmd.run)
    if isinstance(cmd, ExportWeb):
        from nerfkit.export.web import export_web
        res = export_web(run, cmd.out, frames=cmd.frames)
        mb = res["bytes"] / 1e6
        if res["live"]:
            print(f"wrote {cmd.out}: live WebGL2 viewer of {res['family']} ({mb:.1f} MB); serve "
                  f"it, e.g. python3 -m http.server -d {cmd.out}, and open index.html")
        else:
            print(f"wrote {cmd.out}: {res['family']} cannot render live in a browser; exported a "
                  f"pre-rendered orbit of {cmd.frames} frames (frames/, video.mp4, index.html; "
                  f"{mb:.1f} MB)")
    elif isinstance(cmd, ExportMesh):
        mesh = geometry.to_frame(run, geometry.extract_mesh(run, cmd.resolution, cmd.threshold),
                                 cmd.frame)
        geometry.save_geometry(mesh, cmd.out)
        print(f"wrote {cmd.out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces")
    elif isinstance(cmd, ExportPointcloud):
        pc = geometry.to_frame(run, geometry.extract_pointcloud(
            run, cmd.split, cmd.views, cmd.min_acc, cmd.stride), cmd.frame)
        geometry.save_geometry(pc, cmd.out)
        print(f"wrote {cmd.out}: {len(pc.vertices)} points")
    else:
        geometry.export_cameras(run, cmd.out, frame=cmd.frame)
        print(f"wrote {cmd.out}")
    return 0


def load_experiment(path: Path) -> tuple[str, Any]:
    """Reads an experiment file (``configs/*.json`` or ``.yaml``): ``{"method": PRESET, ...}``
    with any :class:`~nerfkit.engine.config.TrainConfig` field (``model`` holds model fields) on
    top of the preset. Returns ``(method, TrainConfig)``."""
    from nerfkit.engine.config import from_dict, presets, to_dict
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise NerfkitError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            import json
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 (any parser error is the file's problem)
        raise NerfkitError(f"{path}: not valid {path.suffix[1:].upper() or 'JSON'} "
                           f"({type(e).__name__}: {e})".replace("\n", " ")) from None
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise NerfkitError(f"{path}: expected an object with a \"method\" (a nerfkit train "
                           "preset) and config values")
    data = dict(data)
    method = data.pop("method")
    data.pop("description", None)
    known = presets()
    if method not in known:
        raise NerfkitError(f"{path}: unknown method {method!r}; known: {sorted(known)}")
    values = to_dict(known[method][1])
    model = data.pop("model", {})
    if not isinstance(model, dict):
        raise NerfkitError(f"{path}: \"model\" must be an object of model config values")
    values["model"].update(model)
    values.update(data)
    return method, from_dict(type(known[method][1]), values, str(path))


def _train_type(experiment: Optional[tuple[str, Any]] = None):
    from nerfkit.engine.config import presets
    PRESETS = presets()
    defaults = {name: cfg for name, (_, cfg) in PRESETS.items()}
    if experiment is not None:  # --config FILE: its values become the preset's defaults
        defaults[experiment[0]] = experiment[1]
    descriptions = {name: desc for name, (desc, _) in PRESETS.items()}
    return tyro.extras.subcommand_type_from_defaults(defaults, descriptions)


def _distill_type():
    from nerfkit.engine.config import presets
    PRESETS = presets()
    from nerfkit.engine.distill import DistillConfig
    from nerfkit.models.student import StudentConfig
    students = {name: v for name, v in PRESETS.items() if isinstance(v[1].model, StudentConfig)}
    defaults = {name: DistillConfig.from_train(cfg) for name, (_, cfg) in students.items()}
    descriptions = {name: desc.split(". Distil")[0] + "." for name, (desc, _) in students.items()}
    return tyro.extras.subcommand_type_from_defaults(defaults, descriptions)


def run_distill(cfg) -> int:
    from nerfkit.engine import distributed
    from nerfkit.engine.trainer import distill
    from nerfkit.viewer.training import make_callback
    viewer = make_callback(cfg)
    summary = distill(cfg, callbacks=[viewer] if viewer else [])
    if not distributed.is_main():
        return 0
    print(f"distilled {summary['step']} steps in {summary['train_seconds']:.0f} s from "
          f"{summary['teacher']} -> {summary['run_dir']}")
    if "test_psnr" in summary:
        gap = ("" if summary["teacher_psnr"] is None else
               f" (teacher {summary['teacher_psnr']:.2f} dB, "
               f"gap {summary['test_psnr'] - summary['teacher_psnr']:+.2f} dB)")
        print(f"test PSNR {summary['test_psnr']:.2f} dB, SSIM {summary['test_ssim']:.4f}{gap}")
    return 0


def run_view(cmd: ViewCommand) -> int:
    from nerfkit.viewer import view_run
    viewer = view_run(cmd.run, cmd.host, cmd.port, cmd.resolution, chunk=cmd.chunk)
    print(f"viewer: {viewer.url} (port {viewer.port}); Ctrl-C to stop", flush=True)
    try:
        viewer.serve_forever()
    finally:
        viewer.close()
    return 0


def run_train(cfg) -> int:
    from nerfkit.engine import distributed
    from nerfkit.engine.trainer import train
    from nerfkit.viewer.training import make_callback
    viewer = make_callback(cfg)
    summary = train(cfg, callbacks=[viewer] if viewer else [])
    if not distributed.is_main():
        return 0
    print(f"trained {summary['step']} steps in {summary['train_seconds']:.0f} s -> {summary['run_dir']}")
    run_dir = Path(summary["run_dir"])
    signal = False
    try:
        import json
        signal = bool(json.loads((run_dir / "scene.json").read_text())["metadata"].get("signal"))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if signal:  # an image or video fit: write the reconstruction
        from nerfkit.engine.run import load_run
        from nerfkit.export.frames import render_split
        n = render_split(load_run(run_dir), "test", run_dir / "renders")
        clip = run_dir / "renders" / "test.mp4"
        print(f"reconstruction: {n} frame(s) in {run_dir / 'renders' / 'test'}"
              + (f", video {clip}" if clip.exists() else ""))
    if "test_psnr" in summary:
        what = "reconstruction PSNR" if signal else "test PSNR"
        lp = f", LPIPS {summary['test_lpips']:.4f}" if "test_lpips" in summary else ""
        print(f"{what} {summary['test_psnr']:.2f} dB, SSIM {summary['test_ssim']:.4f}{lp}")
    return 0


def run_render(cmd: RenderCommand) -> int:
    from nerfkit.export.frames import render_camera_path, render_split
    from nerfkit.engine.run import load_run
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
    from nerfkit.fileio import write_json_atomic
    from nerfkit.engine.evaluate import evaluate
    from nerfkit.engine.progress import RenderProgress
    from nerfkit.engine.run import load_run
    run = load_run(cmd.run)
    scene = run.load_split(cmd.split)
    with RenderProgress("eval", len(scene)) as prog:
        ev = evaluate(run.renderer(cmd.chunk), scene, lpips=cmd.lpips, progress=prog)
    ev["step"] = run.step
    path = Path(cmd.run) / "eval" / f"{cmd.split}.json"
    write_json_atomic(path, ev)
    lp = f"  LPIPS {ev['lpips']:.4f}" if "lpips" in ev else ""
    print(f"{cmd.split}: PSNR {ev['psnr']:.2f} dB  SSIM {ev['ssim']:.4f}{lp}  "
          f"({ev['num_views']} views, step {run.step}) -> {path}")
    return 0


def run_demo(cmd: DemoCommand) -> int:
    import dataclasses as dc
    from nerfkit.engine.config import presets
    PRESETS = presets()
    from nerfkit.engine.trainer import train
    from nerfkit.engine.run import load_run
    from nerfkit.export.frames import render_camera_path, render_split
    name = "ngp" if "ngp" in PRESETS else "nerf"
    cfg = dc.replace(PRESETS[name][1], data=None, output=cmd.output, max_minutes=cmd.max_minutes,
                     max_steps=None, overwrite=cmd.overwrite)
    summary = train(cfg)
    run = load_run(cmd.output)
    render_split(run, "test", cmd.output / "renders")
    video = render_camera_path(run, "orbit", cmd.output / "renders", frames=cmd.frames, fps=30)
    print(f"trained {summary['step']} steps ({name}) in {summary['train_seconds']:.0f} s; "
          f"test renders in {cmd.output / 'renders' / 'test'}; orbit video {video}")
    print(f"test PSNR {summary['test_psnr']:.2f} dB, SSIM {summary['test_ssim']:.4f}")
    return 0


def plain_help(text: str) -> str:
    """Docstring markup as plain text for help screens: ``code`` -> code and
    :role:`~pkg.mod.name` -> name (the docstrings stay reStructuredText for the API docs)."""
    import re
    text = re.sub(r":\w+:`~?([\w.]+\.)?([^`]+)`", r"\2", text)
    return text.replace("``", "")


def _plain_tyro_help() -> None:
    """Makes tyro read docstrings through :func:`plain_help` (flag help and descriptions). It
    patches two functions of tyro's docstring module; if a tyro release renames them, help keeps
    the raw markup (tests/test_cli_help.py notices)."""
    try:
        from tyro import _docstrings
    except ImportError:
        return
    parse = getattr(_docstrings, "parse_docstring_from_object", None)
    describe = getattr(_docstrings, "get_callable_description", None)
    if getattr(_docstrings, "_nerfkit_plain", False) or parse is None or describe is None:
        return
    _docstrings.parse_docstring_from_object = (
        lambda obj: {k: plain_help(v) for k, v in parse(obj).items()})
    _docstrings.get_callable_description = lambda f: plain_help(describe(f))
    _docstrings._nerfkit_plain = True


#: ``nerfkit <command>``: (type, one-line description shown by ``nerfkit --help``).
def _commands(experiment=None) -> dict[str, tuple[Any, str]]:
    return {
        "train": (_train_type(experiment), "Train a model family on a dataset (nerfkit train METHOD "
                                 "--data PATH); METHOD is a preset: ngp, nerf, dnerf, r2l, nerdf, "
                                 "image, video."),
        "distill": (_distill_type(), "Distil a light-field student (r2l, nerdf) from a trained "
                                     "run: nerfkit distill r2l --teacher RUN."),
        "process-data": (_process_type(), "Your own capture: photos or a video in, camera poses "
                                          "(structure from motion) and a trainable dataset out."),
        "render": (RenderCommand, "Render a trained run: a dataset split's views, or a camera "
                                  "path as frames and MP4."),
        "view": (ViewCommand, "Open a trained run in the live browser viewer (viser): fly "
                              "around, save camera paths."),
        "eval": (EvalCommand, "Evaluate a trained run on a dataset split (PSNR, SSIM, LPIPS)."),
        "demo": (DemoCommand, "The quick start: train on the generated default scene, render, "
                              "print the test PSNR."),
        "export": (ExportCommand, "Export a trained run: web viewer, mesh, point cloud or "
                                  "cameras."),
    }


def _command_type(experiment=None):
    return Union[tuple(Annotated[tp, tyro.conf.subcommand(name, description=desc,
                                                          prefix_name=False)]
                       for name, (tp, desc) in _commands(experiment).items())]


def _pop_experiment(argv: list[str]) -> tuple[list[str], Optional[tuple[str, Any]]]:
    """Handles ``nerfkit train [METHOD] --config FILE ...``: the file's values become the
    defaults of its method (flags on the command line still override them)."""
    if not argv or argv[0] != "train":
        return argv, None
    for i, a in enumerate(argv):
        if a == "--config" or a.startswith("--config="):
            value = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv)
                                                         else None)
            if value is None:
                raise NerfkitError("train: --config needs a file (configs/NAME.json)")
            rest = argv[:i] + argv[i + (1 if "=" in a else 2):]
            method, cfg = load_experiment(Path(value))
            if len(rest) < 2 or rest[1].startswith("-"):
                rest.insert(1, method)
            elif rest[1] != method:
                raise NerfkitError(f"{value}: is an experiment for {method!r}, not "
                                   f"{rest[1]!r}")
            return rest, (method, cfg)
    return argv, None


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    from nerfkit import xla_flags
    xla_flags.configure_cpu()
    try:
        _plain_tyro_help()
        cli_args, experiment = _pop_experiment(argv)
        cmd = tyro.cli(_command_type(experiment), args=cli_args, prog="nerfkit",
                       description="nerfkit: neural fields and neural rendering in JAX. "
                                   "Add --debug to show tracebacks of user errors.",
)
        if isinstance(cmd, RenderCommand):
            return run_render(cmd)
        from nerfkit.data.capture import ProcessImagesConfig, ProcessVideoConfig
        if isinstance(cmd, (ProcessImagesConfig, ProcessVideoConfig)):
            return run_process(cmd)
        if isinstance(cmd, EvalCommand):
            return run_eval(cmd)
        if isinstance(cmd, ViewCommand):
            return run_view(cmd)
        if isinstance(cmd, DemoCommand):
            return run_demo(cmd)
        if isinstance(cmd, (ExportWeb, ExportMesh, ExportPointcloud, ExportCameras)):
            return run_export(cmd)
        from nerfkit.engine import distributed
        mode, n = distributed.plan(cmd.num_processes, cmd.process_id, cmd.coordinator_address)
        if mode == "launch":  # --num-processes N alone: start the N local processes
            return distributed.launch_local(argv + (["--debug"] if debug else []), n)
        if mode == "join":
            distributed.initialize(cmd.num_processes, cmd.process_id, cmd.coordinator_address)
        from nerfkit.engine.distill import DistillConfig
        if isinstance(cmd, DistillConfig):
            return run_distill(cmd)
        return run_train(cmd)
    except NerfkitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or a read-only output folder: the machine's state, not a bug
        import errno
        if debug or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                    errno.EPERM):
            raise
        print(f"error: {str(e.filename) + ': ' if e.filename else ''}{e.strerror}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last complete checkpoint is kept", file=sys.stderr)
        return 130


def entrypoint() -> None:
    from nerfkit import xla_flags
    xla_flags.use_huge_pages()  # re-executes the command with glibc's huge pages (faster steps)
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
