#!/usr/bin/env bash
# Lint, types and layers of the whole workspace: ruff check (rules in pyproject.toml [tool.ruff]),
# mypy (pyproject.toml [tool.mypy]: strict on the kernel) and lint-imports (the contracts in
# .importlinter). Every tool runs even when one before it failed; one summary line per tool at
# the end, and the exit status is non-zero when any of them failed.
# The tools come from the `dev` extra (scripts/bootstrap.sh installs it).
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
summary=()
failed=0

run() {  # run NAME SUMMARY_REGEX COMMAND...: the tool's output; its status, time and summary kept
  local name=$1 pattern=$2; shift 2
  local start=$SECONDS status
  echo "-- $name: $*"
  "$@" >"$out/$name" 2>&1
  status=$?
  cat "$out/$name"
  local took=$((SECONDS - start))
  local last
  last=$(grep -E "$pattern" "$out/$name" | tail -n 1)
  [ -n "$last" ] || last=$(grep -v '^[[:space:]]*$' "$out/$name" | tail -n 1)
  if [ "$status" -eq 0 ]; then
    summary+=("$(printf '%-13s ok    %3ss  %s' "$name" "$took" "$last")")
  else
    failed=1
    summary+=("$(printf '%-13s FAIL  %3ss  %s' "$name" "$took" "$last")")
  fi
}

run ruff '^(Found [0-9]+ error|All checks passed)' "$BIN/ruff" check --no-cache --output-format concise .
run mypy '^(Success|Found [0-9]+ error)' "$BIN/mypy" --cache-dir "${MYPY_CACHE_DIR:-.venv/.mypy_cache}"
run lint-imports '^Contracts: ' "$BIN/lint-imports" --no-cache

echo "== lint summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
