#!/usr/bin/env bash
# The API reference from nerfkit's docstrings (pdoc), into docs/api/ or the folder given; fails
# on any pdoc warning and on any docstring cross-reference that points nowhere (docs/build_api.py):
#
#     bash docs/build_api.sh [OUT_DIR]        # then open OUT_DIR/index.html
#
# Uses $PYTHON (default: python3) with this checkout's nerfkit first on the path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$root/docs/build_api.py" "$@"
