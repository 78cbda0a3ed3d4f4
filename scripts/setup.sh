#!/usr/bin/env bash
# Installs everything gpujobs needs on a fresh machine, once: a virtual environment with gpujobs and
# its development tools, and configurable-http-proxy (npm) for JupyterHub.  Re-running is cheap: it
# skips what is already there and up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}

stamp=.venv/.gpujobs-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== gpujobs: creating .venv and installing (a minute or two the first time)"
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install --quiet -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c "import gpujobs, fastapi, jupyterhub" || { echo "install failed" >&2; exit 1; }
    echo "$want" > "$stamp"
fi

if [ ! -x node_modules/.bin/configurable-http-proxy ]; then
    if ! command -v npm >/dev/null; then
        echo "== gpujobs: npm not found; installing Node.js from Debian" >&2
        apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    fi
    echo "== gpujobs: installing configurable-http-proxy (npm)"
    npm install --no-audit --no-fund --silent >/dev/null
fi
