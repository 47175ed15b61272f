#!/usr/bin/env bash
# Debian's chromium (+ chromium-driver) for the viewer's browser tests. Idempotent: installs
# only what is missing. The tests start and stop the browser themselves (no network, fresh profile).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    echo "chromium: $(chromium --version 2>/dev/null | head -1)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
echo "chromium: $(chromium --version 2>/dev/null | head -1)"
