#!/usr/bin/env bash
# Set up (see scripts/setup.sh) and run the app at http://127.0.0.1:7860.
# Offline by default; HF_HUB_OFFLINE=0 bash scripts/run_app.sh lets the hub presets download their weights.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-${HF_HUB_OFFLINE:-1}}"
export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python app.py "$@"
