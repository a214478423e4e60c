"""``process_data``: photos or a video in, COLMAP poses and a nerfstudio-style dataset out.

The stages and the output follow nerfstudio's ``ns-process-data images|video``
(``nerfstudio/process_data/images_to_nerfstudio_dataset.py``, ``colmap_utils.py``), with pycolmap in
place of the COLMAP binary (Schönberger & Frahm, "Structure-from-Motion Revisited", CVPR 2016)::

    DIR/images/              the photos, upright (or the extracted video frames)
    DIR/images_{2,4,8}/      area-downscaled copies, same names (H // f, W // f)
    DIR/colmap/database.db   features and matches
    DIR/colmap/sparse/0/     the largest reconstruction (COLMAP binary model)
    DIR/colmap/colmap.log    COLMAP's log
    DIR/transforms.json      nerfstudio format (see nerfkit.data.capture.transforms)
    DIR/sparse_pc.ply        sparse points in the transforms.json world frame
    DIR/process_data.json    the summary (registered, total, reprojection_px, num_points, seconds)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)
from rich.table import Table

from nerfkit.data.capture import images as images_mod
from nerfkit.data.capture import sfm, transforms, video
from nerfkit.data.capture.config import ProcessImagesConfig, ProcessVideoConfig
from nerfkit.errors import DataError

DOWNSCALE_FACTORS = (2, 4, 8)
#: A capture must register at least this fraction of its images (and at least MIN_REGISTERED).
MIN_REGISTERED_FRACTION = 0.5
MIN_REGISTERED = 3


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)


class _Stages:
    """Times stages and shows one progress line per stage."""

    def __init__(self, console: Console):
        self.seconds: dict[str, float] = {}
        self.progress = _progress(console)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def run(self, name: str, description: str, fn, total: Optional[int] = None):
        task = self.progress.add_task(description, total=total)

        def update(done: int, tot: Optional[int] = None) -> None:
            if tot is not None:
                self.progress.update(task, total=tot)
            self.progress.update(task, completed=done)

        t = time.perf_counter()
        try:
            return fn(update)
        finally:
            self.seconds[name] = round(time.perf_counter() - t, 3)
            tot = self.progress.tasks[task].total
            if tot is None:
                self.progress.update(task, total=1, completed=1)


def process_data(cfg: ProcessImagesConfig | ProcessVideoConfig,
                 console: Optional[Console] = None) -> dict[str, Any]:
    """Runs ``process-data`` for a folder of photos or a video; see the module docstring.

    Args:
      cfg: :class:`ProcessImagesConfig` (``cfg.input`` a folder of photos) or
        :class:`ProcessVideoConfig` (``cfg.input`` a video file).
      console: where progress and the summary are printed (a new ``rich`` console if ``None``).
    Returns:
      The summary written to ``DIR/process_data.json``: ``registered``, ``total`` (images given
      to SfM), ``reprojection_px`` (mean reprojection error in pixels, ``None`` if nothing was
      reconstructed), ``num_points``, ``seconds`` (``{stage: seconds}``), and ``input``,
      ``output``, ``status`` (``"ok"`` or ``"too_few_registered"``), ``matching``,
      ``camera_model``, ``num_models``, ``camera`` (the transforms.json intrinsics when shared).
    Raises:
      DataError: naming the input: not a folder of photos / a readable video, no images, an
        undecodable photo, mixed image sizes with a single camera, a COLMAP stage failure, or too
        few images registered (fewer than half, or than 3): then the summary is still written
        (``transforms.json`` is not).
    """
    console = console if console is not None else Console()
    is_video = isinstance(cfg, ProcessVideoConfig)
    src = Path(cfg.input).expanduser()
    out = Path(cfg.output).expanduser()
    sfm.check_pycolmap()
    # Fail on bad input before creating anything.
    if is_video:
        video.count_frames(src)
    else:
        sources = images_mod.list_input_images(src)
        if (out / "images").resolve() == src.resolve():
            raise DataError(src, "the input folder is the output's images/ folder; choose "
                                 "another --output")
    out.mkdir(parents=True, exist_ok=True)
    colmap_dir = out / "colmap"
    colmap_dir.mkdir(exist_ok=True)
    log = colmap_dir / "colmap.log"
    if log.exists():
        log.unlink()
    # SfM runs on DIR/images unless undistorting: then the input copies live in colmap/images
    # and DIR/images receives the undistorted ones.
    sfm_images = colmap_dir / "images" if cfg.undistort else out / "images"
    if sfm_images.exists():
        shutil.rmtree(sfm_images)
    stale = out / "transforms.json"
    if stale.exists():
        stale.unlink()
    summary: dict[str, Any] = {"input": str(src), "output": str(out), "status": "running",
                               "matching": cfg.matching, "camera_model": cfg.camera_model,
                               "registered": 0, "total": 0, "reprojection_px": None,
                               "num_points": 0, "num_models": 0, "seconds": {}}
    console.print(f"[bold]process-data {'video' if is_video else 'images'}[/] {src} -> {out}")
    with _Stages(console) as st:
        # 1. images in
        if is_video:
            names, indices = st.run(
                "frames", "extracting frames",
                lambda up: video.extract_frames(src, sfm_images, cfg.num_frames, cfg.sharpest,
                                                progress=up))
            summary["frame_indices"] = indices
        else:
            def copy(up):
                prepared = images_mod.prepare_images(sources, sfm_images, progress=up)
                return prepared
            prepared = st.run("images", "copying images", copy, total=len(sources))
            if cfg.single_camera:
                sizes = {p.size for p in prepared}
                if len(sizes) > 1:
                    a, b = prepared[0], next(p for p in prepared if p.size != prepared[0].size)
                    raise DataError(b.source, f"is {b.size[0]}x{b.size[1]} but "
                                              f"{a.source.name} is {a.size[0]}x{a.size[1]}: one "
                                              "shared camera needs one image size; use "
                                              "--no-single-camera")
            names = [p.name for p in prepared]
        n = len(names)
        summary["total"] = n
        common = dict(database=str(colmap_dir / "database.db"), image_dir=str(sfm_images),
                      num_threads=cfg.num_threads)
        try:
            # 2. features
            st.run("features", "extracting features",
                   lambda up: sfm.run_stage("extract", dict(
                       common, names=names, camera_model=cfg.camera_model,
                       single_camera=cfg.single_camera, max_image_size=cfg.max_image_size),
                       log, up), total=n)
            # 3. matching
            match = st.run("matching", f"matching ({cfg.matching})",
                           lambda up: sfm.run_stage("match", dict(
                               common, matching=cfg.matching, overlap=cfg.overlap,
                               quadratic_overlap=cfg.quadratic_overlap), log, up))
            summary["verified_pairs"] = match.get("verified_pairs")
            # 4. mapping
            export_prefix = str(colmap_dir / "export")
            mapped = st.run("mapping", "incremental mapping",
                            lambda up: sfm.run_stage("map", dict(
                                common, sparse_dir=str(colmap_dir / "sparse"), total=n,
                                seed=cfg.seed, export_prefix=export_prefix), log, up), total=n)
        except sfm.StageError as e:
            summary["status"] = "colmap_failed"
            summary["seconds"] = dict(st.seconds)
            transforms.write_json_atomic(out / "process_data.json", summary)
            raise DataError(src, f"structure from motion failed: {e}") from None
        summary.update(registered=int(mapped["registered"]),
                       num_points=int(mapped["num_points"]),
                       reprojection_px=mapped["reprojection_px"],
                       num_models=int(mapped.get("num_models", 0)))
        ok = mapped["registered"] >= max(MIN_REGISTERED, MIN_REGISTERED_FRACTION * n)
        if ok:
            image_prefix = "images"
            if cfg.undistort:
                try:
                    st.run("undistort", "undistorting",
                           lambda up: sfm.run_stage("undistort", dict(
                               output_dir=str(colmap_dir / "undistorted"),
                               model_dir=str(colmap_dir / "sparse" / "0"),
                               image_dir=str(sfm_images), num_threads=cfg.num_threads,
                               export_prefix=export_prefix), log, up))
                except sfm.StageError as e:
                    summary["status"] = "colmap_failed"
                    summary["seconds"] = dict(st.seconds)
                    transforms.write_json_atomic(out / "process_data.json", summary)
                    raise DataError(src, f"undistortion failed: {e}") from None
                if (out / "images").exists():
                    shutil.rmtree(out / "images")
                (colmap_dir / "undistorted" / "images").rename(out / "images")

            def export(up):
                with open(export_prefix + ".json") as f:
                    exp = json.load(f)
                pts = np.load(export_prefix + ".npz")
                tj = transforms.build_transforms(exp, image_prefix=image_prefix)
                xyz = pts["xyz"] @ transforms.APPLIED_TRANSFORM[:, :3].T \
                    + transforms.APPLIED_TRANSFORM[:, 3]
                transforms.write_ply(out / tj["ply_file_path"], xyz, pts["rgb"])
                transforms.write_json_atomic(out / "transforms.json", tj)
                return tj
            tj = st.run("export", "writing transforms.json", export)
            if "fl_x" in tj:
                summary["camera"] = {k: tj[k] for k in tj if k not in
                                     ("frames", "applied_transform", "ply_file_path")}

            files = sorted(p for p in (out / "images").iterdir() if p.is_file()
                           and not p.name.startswith("."))

            def downscale(up):
                dirs = {f: out / f"images_{f}" for f in DOWNSCALE_FACTORS}
                for d in dirs.values():
                    if d.exists():
                        shutil.rmtree(d)
                    d.mkdir()
                for k, p in enumerate(files):
                    images_mod.write_downscaled(p, dirs)
                    up(k + 1)
            st.run("downscale", "downscaling 2/4/8", downscale, total=len(files))
    summary["seconds"] = dict(st.seconds)
    summary["seconds"]["total"] = round(sum(st.seconds.values()), 3)
    summary["status"] = "ok" if ok else "too_few_registered"
    transforms.write_json_atomic(out / "process_data.json", summary)
    print_summary(summary, console)
    if not ok:
        raise DataError(src, f"only {summary['registered']} of {n} images registered "
                             f"(need at least half and at least {MIN_REGISTERED}); try "
                             "--matching exhaustive, photos with more overlap, or "
                             + ("more frames (--num-frames) or less motion blur (--sharpest)"
                                if is_video else "more photos with less motion blur")
                             + f"; summary in {out / 'process_data.json'}")
    return summary


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """Prints the one-screen summary table of a :func:`process_data` result."""
    t = Table(title="process-data summary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    reg, tot = summary["registered"], summary["total"]
    colour = "green" if summary["status"] == "ok" else "red"
    t.add_row("registered", f"[{colour}]{reg} / {tot} images[/]")
    rp = summary["reprojection_px"]
    t.add_row("mean reprojection error", "-" if rp is None else f"{rp:.3f} px")
    t.add_row("sparse points", f"{summary['num_points']:,}")
    if summary.get("camera"):
        c = summary["camera"]
        t.add_row("camera", f"{c['camera_model']} {c['w']}x{c['h']} fx {c['fl_x']:.1f} "
                            f"fy {c['fl_y']:.1f}")
    for k, v in summary["seconds"].items():
        t.add_row(f"time: {k}", f"{v:.1f} s")
    t.add_row("output", summary["output"])
    console.print(t)
