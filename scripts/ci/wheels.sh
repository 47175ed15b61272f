#!/usr/bin/env bash
# Wheel-level proof: build a wheel of every distribution in the repository, install them into a
# fresh virtual environment that cannot see the source tree, and use them there:
#   * `rlm plugins --json` in strict mode must list every plugin distribution, with no failure;
#   * a one-turn RLM completion with the scripted backend and the local environment must work.
# A missing entry point or a module left out of a wheel fails here. Then scripts/ci/pip_install.sh
# installs the same wheels with plain pip (a distribution name taken on PyPI fails there). Idempotent; needs python3 and uv
# (scripts/bootstrap.sh provides .venv/bin/uv or uv on PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
UV=$(command -v uv || echo "$ROOT/.venv/bin/uv")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlm-wheels.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DIST="$WORK/dist"
mkdir -p "$DIST"

bash scripts/wheelhouse.sh "$DIST"
ls "$DIST"

# A fresh venv, outside the repository, installing only from the built wheels (plus PyPI for
# third-party dependencies such as openai).
"$UV" venv --quiet --python "${PYTHON:-python3}" "$WORK/venv"
PY="$WORK/venv/bin/python"
# shellcheck disable=SC2046
"$UV" pip install --quiet -p "$PY" --find-links "$DIST" $(ls "$DIST"/*.whl)
cd "$WORK"   # never the source tree

"$PY" - "$ROOT" <<'PY'
import importlib.util, sys
root = sys.argv[1]
for mod in ("rlm", "rlm_plugins", "rlm_testkit", "rlm_backend_openai"):
    spec = importlib.util.find_spec(mod)
    assert spec is not None, f"{mod} is not installed from a wheel"
    where = spec.origin or ""
    assert not where.startswith(root), f"{mod} is imported from the source tree ({where}), not a wheel"
print("wheels: imports come from the wheels, not the source tree")
PY

RLM_STRICT_PLUGINS=1 "$WORK/venv/bin/rlm" plugins --json > "$WORK/plugins.json"
"$PY" - "$WORK/plugins.json" "$DIST" <<'PY'
import json, pathlib, sys, zipfile
rows = json.loads(pathlib.Path(sys.argv[1]).read_text())
failed = [r for r in rows if r["status"] != "ok"]
assert not failed, f"plugins failed to load from the wheels: {failed}"
# every distribution whose wheel declares an `rlm` entry point must show up in `rlm plugins`
expected = set()
for whl in pathlib.Path(sys.argv[2]).glob("*.whl"):
    with zipfile.ZipFile(whl) as z:
        eps = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        meta = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        if eps and "[rlm]" in z.read(eps[0]).decode():
            name = next(l.split(":", 1)[1].strip() for l in z.read(meta[0]).decode().splitlines()
                        if l.startswith("Name:"))
            expected.add(name)
seen = {r["distribution"] for r in rows}
missing = expected - seen
assert not missing, f"distributions with rlm entry points but no plugin loaded: {missing}"
for r in rows:
    assert r["hooks"] and r["registered"], f"plugin {r['name']} registers nothing: {r}"
print(f"wheels: rlm plugins --json lists {len(rows)} plugins from {len(seen)} distributions, none failed")
PY

"$PY" - <<'PY'
from rlm import RLM
reply = "```repl\nanswer['content'] = str(sum(range(10)))\nanswer['ready'] = True\n```"
rlm = RLM(backend="scripted", backend_kwargs={"replies": [reply]}, environment="local")
result = rlm.completion("numbers")
rlm.close()
assert result.response == "45", result.response
assert result.usage_summary.total_calls == 1
print("wheels: one-turn completion with the scripted backend:", result.response)
PY
"$WORK/venv/bin/python" -m pytest --version >/dev/null
"$WORK/venv/bin/python" -c "import rlm_testkit.pytest_plugin" 
echo "wheels: OK"
# the same wheels, installed with plain pip (index reachable) next to a third-party plugin
bash "$ROOT/scripts/ci/pip_install.sh" "$DIST"
