#!/usr/bin/env bash
# The README's second command: every test of every distribution in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
