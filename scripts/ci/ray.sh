#!/usr/bin/env bash
# CI prerequisites of rlm-executor-ray: Ray with its client extra (grpcio; a dependency of the
# distribution, installed by bootstrap) and nothing else. Its tests start and stop their own
# two-node cluster with `ray start` (one CPU per node, 127.0.0.1 only, token authentication on)
# and kill exactly its processes at the end. Idempotent; never runs `ray stop`, which would stop
# every Ray process on the machine (other users' included).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
if ! "$PY" -c "import ray, grpc" 2>/dev/null; then
  .venv/bin/uv pip install --quiet -p "$PY" -e rlm_contrib_executors/ray
fi
"$PY" -c "import ray, grpc; print('ray', ray.__version__, 'grpcio', grpc.__version__)"
test -x .venv/bin/ray  # the tests start their nodes with `ray start`
