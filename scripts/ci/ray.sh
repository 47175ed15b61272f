#!/usr/bin/env bash
# CI prerequisites of rlm-executor-ray: Ray itself (a dependency of the distribution, installed
# by bootstrap) and nothing else; its tests start and stop their own local cluster (2 CPUs,
# 127.0.0.1 only). Idempotent: checks that Ray imports and leaves no cluster behind.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
if ! "$PY" -c "import ray" 2>/dev/null; then
  .venv/bin/uv pip install --quiet -p "$PY" -e rlm_contrib_executors/ray
fi
"$PY" -c "import ray; print('ray', ray.__version__)"
# A cluster a crashed earlier run left behind would hold the CPUs the tests ask for.
.venv/bin/ray stop --force >/dev/null 2>&1 || true
