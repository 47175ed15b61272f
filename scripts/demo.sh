#!/usr/bin/env bash
# The README's first command: one RLM completion end to end on the embedded model, with no API
# key and no network after the install: llama.cpp runs Qwen2.5-Coder-0.5B-Instruct in-process
# (rlm-backend-llamacpp). `bash scripts/demo.sh --help` lists the options; `rlm demo` is the
# faster scripted variant (a stand-in for the model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m rlm_backend_llamacpp.demo "$@"
