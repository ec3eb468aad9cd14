#!/usr/bin/env bash
# Create (or reuse) a virtual environment with everything LightVLA needs. Usage: scripts/setup_venv.sh [VENV_DIR] [EXTRAS]
# torch + torchvision go first, in their own install, so that the rest cannot pull a different torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
EXTRAS="${2:-test}"
TORCH_SPEC="${LIGHTVLA_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  python3 -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC (first, on its own)"
  $PIP install -q $TORCH_SPEC
fi
echo "[setup] installing lightvla[$EXTRAS]"
$PIP install -q -e ".[$EXTRAS]"
$PIP check >/dev/null || { $PIP check; exit 1; }
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, transformers, timm, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, timm {timm.__version__}, peft {peft.__version__}")')"
