#!/usr/bin/env bash
# Prepares what the optional test groups need, with the same scripts for CI and for a fresh
# machine (scripts/test.sh runs this first when it runs as root on Debian): bubblewrap, tmux,
# Chromium, Pyodide, Ray, and a private Docker daemon with the test image (left running: stop it
# with scripts/ci/docker-stop.sh; its socket is ${RLM_DOCKER_DIR:-/tmp/rlm-ci-docker}/docker.sock,
# which the caller exports as DOCKER_HOST). Every step is idempotent and quick when done already.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "== sandbox prerequisites (bubblewrap)"
bash scripts/ci/sandbox.sh
echo "== terminal for the CLI's terminal tests (tmux)"
bash scripts/ci/tmux.sh
echo "== browser for the viewer tests (chromium)"
bash scripts/ci/chromium.sh
echo "== pyodide prerequisites (npm pyodide into the cache; deno comes from PyPI)"
bash scripts/ci/pyodide.sh
echo "== docker engine: a private dockerd, the test image built locally"
bash scripts/ci/docker.sh
echo "== ray executor prerequisites (the tests start their own two-node 127.0.0.1 cluster with ray start)"
bash scripts/ci/ray.sh
