#!/usr/bin/env bash
# Install everything into a virtual environment (fresh when it does not exist yet) and run the test suite.
# Usage: bash scripts/test.sh [pytest args...]     (VENV=path to choose the environment; default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
bash scripts/setup_venv.sh "$VENV" test
exec "$VENV/bin/python" -m pytest "$@"
