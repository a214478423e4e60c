"""The pycolmap half of ``process-data``, run as a separate process, one stage per call.

Run as ``python colmap_worker.py STAGE ARGS_JSON`` (by :mod:`nerfkit.data.capture.sfm`, by file
path, so that importing it imports neither ``nerfkit`` nor Pillow). It reports progress as JSON lines
on stdout (``{"done": k, "total": n}``, ``{"result": {...}}`` or ``{"error": "..."}``); COLMAP's own
log goes to stderr, which the caller sends to ``colmap/colmap.log``.

Why a separate process: pycolmap wheels and Pillow each bundle their own image libraries (libjpeg,
libpng, libtiff), and loading both into one process once ended in heap corruption on this machine
(``docs/PERF_NOTES.md``). Keeping pycolmap alone in its process removes the question, and a crash in
COLMAP then becomes an error message instead of taking the caller down.

Stages (pycolmap 4.2 API, as COLMAP's ``feature_extractor`` / ``*_matcher`` / ``mapper`` /
``image_undistorter`` commands; nerfstudio's ``process_data/colmap_utils.py:run_colmap`` drives the
same four steps through the COLMAP binary):

* ``extract``: creates the database, imports the images with one shared camera (``SINGLE``) or one
  per image (``PER_IMAGE``) of the requested model, then SIFT features in batches (for progress);
* ``match``: lists the image pairs with COLMAP's own pair generator (sequential, exhaustive or
  spatial), then matches and verifies them in chunks (for progress) through ``match_image_pairs``;
* ``map``: incremental mapping; the reconstruction with the most registered images is written to
  ``sparse/0``, and its cameras, poses and points are exported for the caller as ``.npz`` + JSON;
* ``undistort``: ``undistort_images`` of that model into a folder (PINHOLE cameras), exported the
  same way.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time


def _emit(**msg) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _camera_mode(pycolmap, single: bool):
    return pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.PER_IMAGE


def stage_extract(pycolmap, a: dict) -> dict:
    db_path, image_dir, names = a["database"], a["image_dir"], a["names"]
    if os.path.exists(db_path):
        os.remove(db_path)
    pycolmap.Database.open(db_path).close()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = a["camera_model"]
    mode = _camera_mode(pycolmap, a["single_camera"])
    pycolmap.import_images(db_path, image_dir, camera_mode=mode, image_names=names, options=reader)
    opts = pycolmap.FeatureExtractionOptions()
    opts.max_image_size = int(a["max_image_size"])
    opts.num_threads = int(a["num_threads"])
    opts.use_gpu = False
    # Images already in the database keep their camera: extracting in batches only adds progress.
    batch = max(1, int(a.get("batch", 8)))
    for i in range(0, len(names), batch):
        pycolmap.extract_features(db_path, image_dir, image_names=names[i:i + batch],
                                  camera_mode=mode, reader_options=reader,
                                  extraction_options=opts, device=pycolmap.Device.cpu)
        _emit(done=min(i + batch, len(names)), total=len(names))
    with pycolmap.Database.open(db_path) as db:
        with_features = sum(1 for im in db.read_all_images()
                            if db.num_keypoints_for_image(im.image_id) > 0)
        return {"num_cameras": int(db.num_cameras()), "num_images": int(db.num_images()),
                "images_with_features": with_features}


def stage_match(pycolmap, a: dict) -> dict:
    db_path, method = a["database"], a["matching"]
    with pycolmap.Database.open(db_path) as db:
        names = {im.image_id: im.name for im in db.read_all_images()}
        if method == "sequential":
            popts = pycolmap.SequentialPairingOptions()
            popts.overlap = int(a["overlap"])
            popts.quadratic_overlap = bool(a["quadratic_overlap"])
            popts.loop_detection = False  # needs a vocabulary tree (a download)
            gen = pycolmap.SequentialPairGenerator(popts, db)
        elif method == "exhaustive":
            gen = pycolmap.ExhaustivePairGenerator(pycolmap.ExhaustivePairingOptions(), db)
        elif method == "spatial":
            if db.num_pose_priors() == 0:
                return {"error": "spatial matching needs GPS positions in the photos' EXIF and "
                                 "none were found; use --matching sequential or exhaustive"}
            popts = pycolmap.SpatialPairingOptions()
            popts.num_threads = int(a["num_threads"])
            gen = pycolmap.SpatialPairGenerator(popts, db)
        else:
            return {"error": f"unknown matching method {method!r}"}
        pairs = [(int(i), int(j)) for i, j in gen.all_pairs()]
    mopts = pycolmap.FeatureMatchingOptions()
    mopts.num_threads = int(a["num_threads"])
    mopts.use_gpu = False
    chunk = max(int(a.get("chunk", 200)), 1)
    total = len(pairs)
    _emit(done=0, total=total)
    tmpdir = tempfile.mkdtemp(prefix="nerfkit_pairs_")
    try:
        for k in range(0, total, chunk):
            path = os.path.join(tmpdir, "pairs.txt")
            with open(path, "w") as f:
                for i, j in pairs[k:k + chunk]:
                    f.write(f"{names[i]} {names[j]}\n")
            iopts = pycolmap.ImportedPairingOptions()
            iopts.match_list_path = path
            pycolmap.match_image_pairs(db_path, matching_options=mopts, pairing_options=iopts,
                                       device=pycolmap.Device.cpu)
            _emit(done=min(k + chunk, total), total=total)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    with pycolmap.Database.open(db_path) as db:
        return {"pairs": total, "verified_pairs": int(db.num_verified_image_pairs())}


def _export(rec, out_prefix: str) -> dict:
    """Cameras, poses and points of ``rec`` as ``out_prefix + .json`` / ``.npz`` (numpy only)."""
    import numpy as np

    cams = {int(cid): {"model": c.model_name, "width": int(c.width), "height": int(c.height),
                       "params": [float(x) for x in c.params]}
            for cid, c in rec.cameras.items()}
    images = []
    for iid in sorted(rec.reg_image_ids()):
        im = rec.image(iid)
        m = np.asarray(im.cam_from_world().matrix(), np.float64)  # [3, 4] world -> camera
        images.append({"image_id": int(iid), "name": im.name, "camera_id": int(im.camera_id),
                       "cam_from_world": m.tolist()})
    ids = sorted(rec.points3D.keys())
    xyz = np.array([rec.points3D[i].xyz for i in ids], np.float64).reshape(-1, 3)
    rgb = np.array([rec.points3D[i].color for i in ids], np.uint8).reshape(-1, 3)
    err = np.array([rec.points3D[i].error for i in ids], np.float64).reshape(-1)
    np.savez(out_prefix + ".npz", xyz=xyz, rgb=rgb, error=err)
    info = {"cameras": cams, "images": images, "num_points": len(ids),
            "reprojection_px": float(rec.compute_mean_reprojection_error())}
    with open(out_prefix + ".json", "w") as f:
        json.dump(info, f)
    return {"registered": len(images), "num_points": len(ids),
            "reprojection_px": info["reprojection_px"], "num_cameras": len(cams)}


def stage_map(pycolmap, a: dict) -> dict:
    db_path, image_dir, sparse = a["database"], a["image_dir"], a["sparse_dir"]
    total = int(a["total"])
    work = sparse + ".mapping"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = int(a["num_threads"])
    opts.extract_colors = True
    if a.get("seed") is not None:
        opts.random_seed = int(a["seed"])
    count = [0]

    def initial_pair():
        count[0] = 2
        _emit(done=min(count[0], total), total=total)

    def next_image():
        count[0] += 1
        _emit(done=min(count[0], total), total=total)

    recs = pycolmap.incremental_mapping(db_path, image_dir, work, options=opts,
                                        initial_image_pair_callback=initial_pair,
                                        next_image_callback=next_image)
    shutil.rmtree(os.path.join(sparse, "0"), ignore_errors=True)
    if not recs:
        shutil.rmtree(work, ignore_errors=True)
        return {"registered": 0, "num_points": 0, "reprojection_px": None, "num_models": 0}
    best = max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    os.makedirs(sparse, exist_ok=True)
    tmp = os.path.join(sparse, ".0.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    best.write(tmp)
    os.replace(tmp, os.path.join(sparse, "0"))
    shutil.rmtree(work, ignore_errors=True)
    out = _export(best, a["export_prefix"])
    out["num_models"] = len(recs)
    return out


def stage_undistort(pycolmap, a: dict) -> dict:
    out_dir = a["output_dir"]
    shutil.rmtree(out_dir, ignore_errors=True)
    pycolmap.undistort_images(out_dir, a["model_dir"], a["image_dir"], output_type="COLMAP",
                              num_threads=int(a["num_threads"]))
    rec = pycolmap.Reconstruction(os.path.join(out_dir, "sparse"))
    return _export(rec, a["export_prefix"])


STAGES = {"extract": stage_extract, "match": stage_match, "map": stage_map,
          "undistort": stage_undistort}


def main(argv: list[str]) -> int:
    stage, args = argv[1], json.loads(argv[2])
    import pycolmap  # noqa: PLC0415 (imported here only, never by the nerfkit process)

    t = time.perf_counter()
    try:
        result = STAGES[stage](pycolmap, args)
    except Exception as e:  # pycolmap raises ValueError / RuntimeError with COLMAP's message
        msg = str(e).strip().splitlines()
        _emit(error=f"{type(e).__name__}: {msg[-1] if msg else ''}")
        return 1
    if "error" in result:
        _emit(error=result["error"])
        return 1
    result["seconds"] = time.perf_counter() - t
    _emit(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
