#!/usr/bin/env bash
# Builds nerfkit's hash-grid XLA FFI extension into cuda_ext/build/ (where nerfkit looks for it).
#
#   bash cuda_ext/build.sh              # CPU handler, plus the CUDA handler when nvcc is found
#   bash cuda_ext/build.sh --cpu-only   # CPU handler only (CI, machines without a GPU)
#   bash cuda_ext/build.sh --cuda       # fail unless the CUDA handler builds too
#
# Needs: the Python that has jax installed (the repo's .venv if present, else $PYTHON or python3;
# the XLA FFI headers come from jax.ffi.include_dir()), g++ (C++20), and cmake >= 3.19 (taken from
# PyPI with pip when not on PATH), make or ninja (ninja from PyPI when neither is on PATH).
# Extra CMake arguments go in $CMAKE_ARGS (e.g. -DNERFKIT_NATIVE=OFF for a portable library,
# -DCMAKE_CUDA_ARCHITECTURES=90).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cuda=AUTO
for arg in "$@"; do
  case "$arg" in
    --cpu-only) cuda=OFF ;;
    --cuda) cuda=ON ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$arg' (use --cpu-only or --cuda)" >&2; exit 2 ;;
  esac
done

py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$here/../.venv/bin/python" ]]; then py="$here/../.venv/bin/python"; else py=python3; fi
fi
inc="$("$py" -c 'import jax.ffi; print(jax.ffi.include_dir())')" || {
  echo "build.sh: '$py' cannot import jax (set PYTHON to the interpreter nerfkit uses)" >&2; exit 1; }
bindir="$(dirname "$("$py" -c 'import sys; print(sys.executable)')")"

command -v g++ >/dev/null || command -v c++ >/dev/null || {
  echo "build.sh: no C++ compiler (install g++)" >&2; exit 1; }

# cmake / ninja from PyPI (into the same environment) when the system has none.
cmake_bin="$(command -v cmake || true)"
if [[ -z "$cmake_bin" ]]; then
  [[ -x "$bindir/cmake" ]] || "$py" -m pip install -q --disable-pip-version-check "cmake>=3.19"
  cmake_bin="$bindir/cmake"
fi
generator="Unix Makefiles"
gen=(-G "$generator")
if command -v ninja >/dev/null; then
  generator=Ninja; gen=(-G Ninja)
elif ! command -v make >/dev/null; then
  [[ -x "$bindir/ninja" ]] || "$py" -m pip install -q --disable-pip-version-check ninja
  generator=Ninja; gen=(-G Ninja -DCMAKE_MAKE_PROGRAM="$bindir/ninja")
fi

build="$here/build"
cache="$build/CMakeCache.txt"
if [[ -f "$cache" ]] && ! { grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$here" "$cache" &&
                            grep -qx "CMAKE_GENERATOR:INTERNAL=$generator" "$cache"; }; then
  rm -rf "$build"  # configured from another checkout or with another generator: start over
fi
jobs="$(nproc 2>/dev/null || echo 2)"
# shellcheck disable=SC2086
"$cmake_bin" -S "$here" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DXLA_FFI_INCLUDE_DIR="$inc" -DPython3_EXECUTABLE="$("$py" -c "import sys; print(sys.executable)")" \
  -DNERFKIT_CUDA="$cuda" ${CMAKE_ARGS:-} >/dev/null
"$cmake_bin" --build "$build" -j "$jobs"
ls -1 "$build"/libnerfkit_hashgrid_*.so
