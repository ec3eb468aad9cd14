#!/usr/bin/env bash
# Install everything into a virtual environment (fresh when it does not exist yet) and run the test suite.
# Usage: bash scripts/test.sh [pytest args...]     (VENV=path to choose the environment; default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
bash scripts/setup_venv.sh "$VENV" test 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
exec "$VENV/bin/python" -m pytest "$@"
