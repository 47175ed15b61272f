#!/usr/bin/env bash
# Installs what the 'sandbox' environment's tests need: bubblewrap, libseccomp (loaded by
# pyseccomp) and setpriv. Idempotent: does nothing when all are already there.
set -euo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need+=(libseccomp2)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
bwrap --version
