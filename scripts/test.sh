#!/usr/bin/env bash
# The README's second command: every test of every distribution in the repository.
#
# Run as root on Debian, it first prepares what the optional test groups need, with the scripts
# CI uses (scripts/ci/prepare.sh: bubblewrap, tmux, Chromium, Pyodide, Ray, a private Docker
# daemon; quick when already done). RLM_TEST_PREPARE=0 skips that; a private dockerd this script
# started is stopped when the tests end. Tests run on RLM_TEST_WORKERS pytest-xdist workers
# (default 3, the fastest on 2 cores; 0 runs them in this process); pytest's arguments pass
# through (`-n N` wins). The run ends with a table of skipped groups and the command enabling each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

docker_dir="${RLM_DOCKER_DIR:-/tmp/rlm-ci-docker}"
if [ "${RLM_TEST_PREPARE:-1}" != 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if [ ! -S "$docker_dir/docker.sock" ] || ! DOCKER_HOST="unix://$docker_dir/docker.sock" \
        docker version >/dev/null 2>&1; then
      trap 'bash scripts/ci/docker-stop.sh' EXIT  # ours: stopped with the run
    fi
    bash scripts/ci/prepare.sh >/tmp/rlm-test-prepare.log 2>&1 \
      || echo "test.sh: preparing failed (see /tmp/rlm-test-prepare.log); the groups it could not prepare skip"
  else
    echo "test.sh: not root on Debian, nothing prepared; the table at the end says what each skipped group needs"
  fi
fi
if [ -z "${DOCKER_HOST:-}" ] && [ -S "$docker_dir/docker.sock" ]; then
  export DOCKER_HOST="unix://$docker_dir/docker.sock"
fi

workers=${RLM_TEST_WORKERS:-3}
args=" $* "
xdist=()
if [[ "$args" == *" -p no:xdist "* ]]; then workers=0; fi
if [ "$workers" != 0 ]; then
  [[ "$args" =~ \ (-n|--numprocesses)[=\ ]?[0-9a-z] ]] || xdist+=(-n "$workers")
  # tests marked xdist_group (the Ray cluster's) run on one worker
  [[ "$args" == *" --dist"* ]] || xdist+=(--dist loadgroup)
fi
.venv/bin/python -m pytest "${xdist[@]}" "$@"
