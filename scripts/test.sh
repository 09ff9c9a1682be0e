#!/usr/bin/env bash
# Set up with the test requirements (see scripts/setup.sh) and run the whole test suite offline.
# Extra arguments go to pytest (e.g. bash scripts/test.sh -k inputs); pytest's exit code is this script's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
# --durations: the slowest tests, to keep the suite within its budget
exec .venv/bin/python -m pytest -q --durations=15 tests "$@"
