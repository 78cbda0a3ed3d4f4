#!/usr/bin/env bash
# Set up (if needed) and run JupyterHub with gpujobs on this machine: http://127.0.0.1:8000/
# Arguments go to `gpujobs hub` (e.g. --simulate-gpus a100-80gb:2,t4:1 --admin alice --port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$(pwd)/node_modules/.bin:$(pwd)/.venv/bin:$PATH"
# The data folder: GPUJOBS_HUB_DATA_DIR or --data-dir, else gpujobs hub's default (/var/lib/gpujobs-hub
# as root, where users' accounts can reach their homes; ./gpujobs-hub-data otherwise).
exec .venv/bin/gpujobs hub ${GPUJOBS_HUB_DATA_DIR:+--data-dir "$GPUJOBS_HUB_DATA_DIR"} "$@"
