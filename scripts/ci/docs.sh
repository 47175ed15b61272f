#!/usr/bin/env bash
# The documentation site: MkDocs + Material + mkdocstrings, built in strict mode, so a broken
# link, a missing anchor or an API reference that does not resolve fails CI. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=$(command -v uv || echo "$PWD/.venv/bin/uv")
if ! .venv/bin/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null; then
  "$UV" pip install --quiet -p .venv/bin/python -e ".[docs]"
fi
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --quiet
echo "docs: built build/site in strict mode"
