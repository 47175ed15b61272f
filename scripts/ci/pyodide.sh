#!/usr/bin/env bash
# Installs what the 'pyodide' environment's tests need: npm (from Debian) to fetch the Pyodide
# package from the npm registry once, into ~/.cache/rlm/pyodide/<version>. Deno comes from PyPI
# with rlm-env-pyodide (bootstrap installs it). Idempotent: quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends npm >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y --no-install-recommends npm >/dev/null; }
fi
.venv/bin/rlm-env-pyodide install
