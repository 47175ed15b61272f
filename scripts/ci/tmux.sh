#!/usr/bin/env bash
# Installs tmux: the CLI's terminal tests (libs/cli/tests/test_cli_terminal.py: the live progress line,
# Ctrl+C exiting with 130) run `rlm` on a real pseudo-terminal through it. Idempotent.
set -euo pipefail
if ! command -v tmux >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends tmux >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y --no-install-recommends tmux >/dev/null; }
fi
tmux -V
