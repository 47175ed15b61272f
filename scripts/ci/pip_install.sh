#!/usr/bin/env bash
# Plain-pip proof (not uv: uv prefers a local wheel, pip prefers an index distribution of the same
# name and version, so a name taken on PyPI only shows up with pip): in a fresh venv with PyPI
# reachable,
#   pip install --find-links WHEELHOUSE rlm rlm-backend-vllm <a third-party plugin wheel>
# must install this project's kernel, and every rlm distribution must come from the wheelhouse.
# The third-party plugin is the tutorial's (docs/examples/rlm-example-plugin), built as its author
# would. Usage: scripts/ci/pip_install.sh [WHEELHOUSE] (built with scripts/wheelhouse.sh if absent).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlm-pip.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
WH=${1:-}
if [ -z "$WH" ]; then
  WH="$WORK/wheelhouse"
  bash scripts/wheelhouse.sh "$WH"
fi
WH=$(cd "$WH" && pwd)
UV=$(command -v uv || { [ -x "$ROOT/.venv/bin/uv" ] && echo "$ROOT/.venv/bin/uv"; } || true)
PLUGIN="$WORK/third-party"
if [ -n "$UV" ]; then
  "$UV" build --quiet --wheel --out-dir "$PLUGIN" "$ROOT/docs/examples/rlm-example-plugin"
else
  "${PYTHON:-python3}" -m pip wheel --quiet --no-deps --wheel-dir "$PLUGIN" "$ROOT/docs/examples/rlm-example-plugin"
fi

"${PYTHON:-python3}" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
cd "$WORK"   # never the source tree
# pip's warnings (e.g. about a machine-wide extra index) shown only when the install fails
"$PY" -m pip install --quiet --disable-pip-version-check --report "$WORK/report.json" \
    --find-links "$WH" rlm rlm-backend-vllm "$PLUGIN"/*.whl 2>"$WORK/pip.err" \
  || { cat "$WORK/pip.err" >&2; exit 1; }

"$PY" - "$WORK/report.json" "$WH" "$PLUGIN" <<'PY'
import importlib.metadata as md, json, pathlib, sys
report, wheelhouse, plugin = json.loads(pathlib.Path(sys.argv[1]).read_text()), sys.argv[2], sys.argv[3]
ours = (pathlib.Path(wheelhouse).as_uri(), pathlib.Path(plugin).as_uri())
from_index = [(i["metadata"]["name"], i["download_info"]["url"]) for i in report["install"]
              if i["metadata"]["name"].lower().startswith("rlm")
              and not i["download_info"]["url"].startswith(ours)]
assert not from_index, f"pip took these rlm distributions from the index, not the wheelhouse: {from_index}"
owners = md.packages_distributions().get("rlm")
assert owners == ["rlm-kernel"], f"the `rlm` package is owned by {owners}, expected this project's rlm-kernel"
installed = sorted(i["metadata"]["name"] for i in report["install"] if i["metadata"]["name"].startswith("rlm"))
print("pip: from the wheelhouse:", ", ".join(installed))
PY

"$PY" - <<'PY'
from rlm import RLM
reply = "```repl\nanswer['content'] = str(sum(range(10)))\nanswer['ready'] = True\n```"
with RLM(backend="scripted", backend_kwargs={"replies": [reply]}, environment="local") as rlm:
    result = rlm.completion("numbers")
assert result.response == "45", result.response
print("pip: import rlm and a one-turn completion work:", result.response)
PY

RLM_STRICT_PLUGINS=1 "$WORK/venv/bin/rlm" plugins --json | "$PY" -c '
import json, sys
rows = json.load(sys.stdin)
bad = [r for r in rows if r["status"] != "ok"]
assert not bad, f"plugins failed to load: {bad}"
names = {n for r in rows for names in r["registered"].values() for n in names}
assert {"vllm", "minichat", "subrepl", "local", "scripted"} <= names, sorted(names)
print("pip: rlm plugins lists vllm and the third-party minichat and subrepl")
'
echo "pip: OK"
