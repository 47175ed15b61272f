#!/usr/bin/env bash
# Builds a wheel of every distribution in this checkout (the umbrella `rlm`, the kernel `rlm-kernel`,
# `rlm-plugins`, `rlm-testkit`, every backend, environment and executor) into one folder, the
# wheelhouse, so that plain pip can install them before they are published:
#   bash scripts/wheelhouse.sh                 # -> dist/wheelhouse
#   pip install --find-links dist/wheelhouse rlm rlm-backend-vllm
# Usage: scripts/wheelhouse.sh [OUT_DIR]. Uses uv when there is one (scripts/bootstrap.sh puts it in
# .venv/bin), else `python3 -m pip wheel`. Idempotent: a wheel already there is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/dist/wheelhouse}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
UV=$(command -v uv || { [ -x "$ROOT/.venv/bin/uv" ] && echo "$ROOT/.venv/bin/uv"; } || true)

# Every pyproject.toml that defines a distribution of the project (the umbrella at the root included;
# the tutorial's example plugin is a third party's and is left out).
mapfile -t PROJECTS < <(find . -name pyproject.toml -not -path './.venv/*' -not -path '*/node_modules/*' \
    -not -path './docs/examples/*' -not -path '*/tests/*' -not -path './build/*' -not -path './dist/*' \
    -printf '%h\n' | sort)
echo "wheelhouse: building ${#PROJECTS[@]} distributions into $OUT"
for dir in "${PROJECTS[@]}"; do
  if [ -n "$UV" ]; then
    "$UV" build --quiet --wheel --out-dir "$OUT" "$dir"
  else
    "${PYTHON:-python3}" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" "$dir"
  fi
done
count=$(find "$OUT" -maxdepth 1 -name '*.whl' | wc -l)
[ "$count" -ge "${#PROJECTS[@]}" ] || { echo "wheelhouse: only $count wheels for ${#PROJECTS[@]} projects" >&2; exit 1; }
echo "wheelhouse: $count wheels in $OUT"
