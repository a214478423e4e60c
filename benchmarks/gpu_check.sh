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
# .devdata/ must be ignored by git (e.g. listed in .git/info/exclude) and carried to the GPU
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
  sed -n '2,12p' "$0"; exit 2 ;;
esac
