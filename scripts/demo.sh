#!/usr/bin/env bash
# The README's first command: one RLM completion end to end, offline, no API key.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/rlm demo "$@"
