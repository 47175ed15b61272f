#!/usr/bin/env bash
# The tutorial's plugin (docs/examples/rlm-example-plugin), as its author would test it: installed
# (not editable) into a fresh virtual environment next to this checkout's rlm-kernel, rlm-plugins
# and rlm-testkit, found through its `rlm` entry point, and its kit tests run there. The shared
# .venv is left alone. Idempotent; needs python3 and uv (scripts/bootstrap.sh provides them).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
UV=$(command -v uv || echo "$ROOT/.venv/bin/uv")
EXAMPLE="$ROOT/docs/examples/rlm-example-plugin"
VENV=${RLM_EXAMPLE_VENV:-$ROOT/build/example-plugin-venv}
[ -x "$VENV/bin/python" ] || "$UV" venv --quiet --python "${PYTHON:-python3}" "$VENV"
PY="$VENV/bin/python"
# A venv made before the kernel's rename still holds rlm-core, which would own `rlm` too.
if "$UV" pip show --quiet -p "$PY" rlm-core >/dev/null 2>&1; then "$UV" pip uninstall --quiet -p "$PY" rlm-core; fi
"$UV" pip install --quiet -p "$PY" -e "$ROOT/core" -e "$ROOT/libs/isolation" -e "$ROOT/libs/backend_support" \
    -e "$ROOT/libs/cli" -e "$ROOT/plugins" -e "$ROOT/rlm_contrib_backends/openai" -e "$ROOT/testkit"
"$UV" pip install --quiet -p "$PY" --reinstall-package rlm-example-plugin "$EXAMPLE"

cd "$EXAMPLE"
"$PY" - <<'PY'
import rlm_example
assert "site-packages" in rlm_example.__file__, f"rlm_example comes from {rlm_example.__file__}, not the install"
PY
RLM_STRICT_PLUGINS=1 "$VENV/bin/rlm" plugins --json | "$PY" -c '
import json, sys
rows = [r for r in json.load(sys.stdin) if r["distribution"] == "rlm-example-plugin"]
assert rows and all(r["status"] == "ok" for r in rows), f"the example plugin did not load: {rows}"
names = {n for r in rows for n in r["registered"].get("backend", []) + r["registered"].get("environment", [])}
assert names == {"minichat", "subrepl"}, rows
print("example plugin: rlm plugins lists", sorted(names))
'
"$PY" -m pytest -q -p no:cacheprovider
echo "example plugin: OK"
