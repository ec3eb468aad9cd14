#!/usr/bin/env bash
# The main job on the embedded default (tiny preset, CPU). For now: install, then run the tiny-preset demo
# (predict an action chunk, kept visual tokens, latency with and without pruning).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
bash scripts/setup_venv.sh "$VENV" test
exec "$VENV/bin/python" scripts/demo_tiny.py "$@"
