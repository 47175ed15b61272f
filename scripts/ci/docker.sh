#!/usr/bin/env bash
# Prepares what the 'docker' environment's tests need, without any registry:
#   1. the engine from Debian's docker.io and gVisor's runsc (each skipped when installed);
#   2. a private dockerd: its own socket and data root under $RLM_DOCKER_DIR (default
#      /tmp/rlm-ci-docker), no iptables, no bridge (containers get --network none anyway),
#      overlay2 storage; the gVisor runtime 'runsc' is registered when it is installed;
#   3. the test image, built locally from this machine's Python (rlm-env-docker build-image).
# Idempotent: a daemon already answering on the socket is reused, an existing image is kept.
# Source it (`. scripts/ci/docker.sh`) to get DOCKER_HOST exported; stop the daemon with
# scripts/ci/docker-stop.sh.
set -euo pipefail
RLM_DOCKER_DIR="${RLM_DOCKER_DIR:-/tmp/rlm-ci-docker}"
RLM_DOCKER_IMAGE="${RLM_DOCKER_IMAGE:-rlm-python:3.11-local}"
py="${RLM_PYTHON:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bin/python}"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v runsc >/dev/null 2>&1 || need+=(runsc)  # gVisor, for runtime="runsc" and its tests
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
# The Debian package starts a system daemon under systemd; ours is separate and private.

mkdir -p "$RLM_DOCKER_DIR/data"
sock="$RLM_DOCKER_DIR/docker.sock"
export DOCKER_HOST="unix://$sock"
if ! docker version >/dev/null 2>&1; then
  config="$RLM_DOCKER_DIR/daemon.json"
  if command -v runsc >/dev/null 2>&1; then
    printf '{"runtimes": {"runsc": {"path": "%s", "runtimeArgs": ["--network=none"]}}}\n' \
      "$(command -v runsc)" > "$config"
  else
    echo '{}' > "$config"
  fi
  nohup dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
    --data-root "$RLM_DOCKER_DIR/data" --exec-root "$RLM_DOCKER_DIR/exec" \
    --pidfile "$RLM_DOCKER_DIR/dockerd.pid" --config-file "$config" \
    -H "unix://$sock" >"$RLM_DOCKER_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 1 100); do
    docker version >/dev/null 2>&1 && break
    sleep 0.2
  done
  docker version >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 "$RLM_DOCKER_DIR/dockerd.log"; exit 1; }
fi
if ! docker image inspect "$RLM_DOCKER_IMAGE" >/dev/null 2>&1; then
  "$py" -m rlm_env_docker build-image --tag "$RLM_DOCKER_IMAGE"
fi
docker version --format 'docker engine {{.Server.Version}} on '"$DOCKER_HOST"
