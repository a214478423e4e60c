#!/usr/bin/env bash
# The GPU check of cuda_ext in one short script (what issue 4 asks for whenever a GPU machine is
# available): build both handlers, run the kernel parity tests on the GPU, benchmark the encoding
# and a short NGP training run on lego with and without the kernel.
#
#   bash benchmarks/gpu_check.sh prepare   # here, once: lego at 200x200 into .devdata/lego
#                                          # (../shared does not travel to a GPU machine)
#   bash benchmarks/gpu_check.sh run       # on the GPU machine, in the repo root; results and
#                                          # a log in $OUT (or ./gpu_check_out)
#
#
# Issue 19's full-resolution check (lego at 800x800, PSNR on all 200 test views after 1, 2 and 5
# minutes, training rays/s with and without the kernel):
#   bash benchmarks/gpu_check.sh prepare800  # here: lossless WebP (RGBA train, test composited on
#                                            # white) in .devdata/lego800 (train + test views
#                                            # 0-99, ~50 MB) and .devdata/lego800b (100-199, ~21 MB):
#                                            # together they exceed the 64 MiB a device call
#                                            # carries, so they travel in two calls:
#   call 1 (carry .devdata/lego800b):  true         # uploads; the machine keeps ignored paths
#   call 2 at once (carry .devdata/lego800 .whl):   # while it stays warm (30 s idle)
#     ... && bash benchmarks/gpu_check.sh run800 ffi    # ~7 min: 5 min training + 3 evaluations
#   call 3 at once (no carry):  ... && bash benchmarks/gpu_check.sh run800 jax   # ~3.5 min
#
# .devdata/ is ignored by git (.gitignore) and carried to the GPU
# machine. Takes ~5-6 minutes on an H100 (build ~30 s, tests ~2 min, benchmarks ~3 min).
# The device machine lacks tyro (and its docstring_parser, typeguard): carry them as wheels in
# .whl/ and install them first; do not carry flax (its image has flax 0.12.10; flax 0.12.8 fails to
# import under jax 0.11.2). The device call used on 2026-11-27 (carry .whl and .devdata):
#   rm -rf /tmp/site; python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site && bash benchmarks/gpu_check.sh run
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
  py="${PYTHON:-.venv/bin/python}"
  "$py" - <<'EOF'
import json, os
import numpy as np, imageio.v3 as iio
src = os.path.join("..", "shared", "datasets", "nerf_synthetic", "lego")
dst = os.path.join(".devdata", "lego")
for split, n in (("train", None), ("test", 10)):
    meta = json.load(open(f"{src}/transforms_{split}.json"))
    frames = meta["frames"] if n is None else meta["frames"][:: len(meta["frames"]) // n][:n]
    os.makedirs(f"{dst}/{split}", exist_ok=True)
    for f in frames:
        im = iio.imread(f"{src}/{f['file_path']}.png").astype(np.float32)
        h, w = im.shape[0] // 4, im.shape[1] // 4
        a = im[..., 3:] / 255.0  # 4x4 area average in premultiplied colour (like --downscale 4)
        pm = np.concatenate([im[..., :3] * a, im[..., 3:]], -1).reshape(h, 4, w, 4, 4).mean((1, 3))
        al = pm[..., 3:] / 255.0
        rgb = np.where(al > 0, pm[..., :3] / np.maximum(al, 1e-8), 0.0)
        out = np.concatenate([rgb, pm[..., 3:]], -1).round().clip(0, 255).astype(np.uint8)
        iio.imwrite(f"{dst}/{f['file_path']}.png", out)
    json.dump(dict(meta, frames=frames), open(f"{dst}/transforms_{split}.json", "w"))
print(f"wrote {dst}")
EOF
  ;;
prepare800)
  py="${PYTHON:-.venv/bin/python}"
  "$py" - <<'EOF'
import json, os
import numpy as np
from PIL import Image
src = os.path.join("..", "shared", "datasets", "nerf_synthetic", "lego")
for split in ("train", "test"):
    meta = json.load(open(f"{src}/transforms_{split}.json"))
    frames = []
    for i, f in enumerate(meta["frames"]):
        dst = os.path.join(".devdata", "lego800b" if split == "test" and i >= 100 else "lego800")
        name = f["file_path"].removeprefix("./") + ".webp"
        os.makedirs(os.path.dirname(f"{dst}/{name}"), exist_ok=True)
        im = np.asarray(Image.open(f"{src}/{f['file_path']}.png"))
        if split == "test":  # evaluated on white: composite here, rounded to 8 bits
            a = im[..., 3:].astype(np.float32) / 255.0
            im = (im[..., :3] * a + 255.0 * (1.0 - a)).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(im).save(f"{dst}/{name}", "WEBP", lossless=True, quality=100, method=6)
        frames.append(dict(f, file_path="./" + name))
    json.dump(dict(meta, frames=frames), open(f".devdata/lego800/transforms_{split}.json", "w"))
print("wrote .devdata/lego800 and .devdata/lego800b")
EOF
  du -sh .devdata/lego800 .devdata/lego800b
  ;;
run800)
  # $2: ffi (with the kernel: 5 minutes, marks 1 2 5) or jax (pure JAX: 2 minutes, marks 1 2).
  out="${OUT:-gpu_check_out}"; mkdir -p "$out" && out="$(cd "$out" && pwd)"
  export PYTHONUNBUFFERED=1 NERFKIT_NO_XLA_FLAGS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  py="${PYTHON:-python3}"; backend="${2:-ffi}"
  exec > >(tee -a "$out/log800_$backend.txt") 2>&1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  [ -d .devdata/lego800b/test ] && cp -n .devdata/lego800b/test/* .devdata/lego800/test/
  echo "test views: $(ls .devdata/lego800/test | wc -l)"
  if [ "$backend" = ffi ]; then
    timeout 200 bash cuda_ext/build.sh --cuda 2>&1 | tail -2; minutes=${MINUTES:-5}; marks=${MARKS:-1 2 5}
  else minutes=${MINUTES:-2}; marks=${MARKS:-1 2}; fi
  timeout 560 "$py" -m nerfkit.cli train ngp --data .devdata/lego800 --downscale 1 \
    --max-minutes "$minutes" --eval-minutes $marks --model.backend "$backend" \
    --output "$out/lego800-$backend" --overwrite
  "$py" - "$out/lego800-$backend" <<'EOF'
import json, sys, pathlib
run = pathlib.Path(sys.argv[1])
lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
last = max((l for l in lines if "loss" in l), key=lambda l: l["step"])
batch = json.load(open(run / "config.json"))["train"]["model"]["batch_size"]
res = {"steps": last["step"], "train_rays_per_s": last["step"] * batch / last["time"]}
for f in sorted((run / "eval").glob("test_*min.json")):
    e = json.loads(f.read_text())
    res[f.stem] = {"psnr": e["psnr"], "ssim": e["ssim"], "views": e["num_views"]}
print(json.dumps(res, indent=1))
(run.parent / f"{run.name}.json").write_text(json.dumps(
    {"benchmark": "gpu_lego800", "config": {"run": run.name}, "results": res}, indent=1))
EOF
  rm -rf "$out/lego800-$backend/checkpoints"
  ;;
run)
  out="${OUT:-gpu_check_out}"
  mkdir -p "$out" && out="$(cd "$out" && pwd)"
  export PYTHONUNBUFFERED=1 NERFKIT_NO_XLA_FLAGS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  py="${PYTHON:-python3}"
  t0=$(date +%s)
  step() { echo "=== [$(( $(date +%s) - t0 )) s] $*"; }
  exec > >(tee -a "$out/log.txt") 2>&1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import jax; print('jax', jax.__version__, jax.devices())"
  step build;  PYTHON="$py" timeout 200 bash cuda_ext/build.sh --cuda 2>&1 | tail -3
  step tests;  timeout 200 "$py" -m pytest -q -p no:cacheprovider tests/cuda_ext tests/core/test_hashgrid.py -rs 2>&1 | tail -5
  cd benchmarks
  step encoding; timeout 150 "$py" hashgrid.py --out "$out/hashgrid_gpu.json" --points 2097152 --repeats 7 --train-steps 0 2>&1 | tail -7
  step encoding at 2^18 points; timeout 90 "$py" hashgrid.py --out "$out/hashgrid_gpu_262144.json" --points 262144 --repeats 7 --train-steps 0 2>&1 | tail -7
  step training; timeout 150 "$py" ngp_backend.py --data ../.devdata/lego --downscale 1 --steps 300 --eval-views 10 --out "$out/ngp_backend_gpu.json" 2>&1 | tail -5
  step done
  ;;
*)
  sed -n '2,25p' "$0"; exit 2 ;;
esac
