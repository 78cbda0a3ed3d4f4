#!/usr/bin/env bash
# Set up (if needed) and run the gpujobs service with the local executor on this machine, without a
# hub: for one user, whose token it keeps in its data dir (it prints where; the CLI finds it there).
# Arguments go to `gpujobs serve` (e.g. --simulate-gpus a100-80gb:2,t4:1, --port 8765, and as root
# --local-user NAME: the account whose jobs it runs).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/gpujobs serve "$@"
