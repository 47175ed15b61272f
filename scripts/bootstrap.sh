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
# Reinstall when any pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ -n "$(find . -name pyproject.toml -not -path './.venv/*' -newer "$stamp" -print -quit)" ]; then
  .venv/bin/uv pip install --quiet -p .venv/bin/python -e ".[all,dev]"
  touch "$stamp"
fi
