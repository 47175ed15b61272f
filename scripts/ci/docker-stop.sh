#!/usr/bin/env bash
# Stops the private dockerd that scripts/ci/docker.sh started (its containers die with it).
# Safe to call when none runs.
RLM_DOCKER_DIR="${RLM_DOCKER_DIR:-/tmp/rlm-ci-docker}"
pidfile="$RLM_DOCKER_DIR/dockerd.pid"
[ -f "$pidfile" ] || exit 0
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
fi
rm -f "$pidfile"
exit 0
