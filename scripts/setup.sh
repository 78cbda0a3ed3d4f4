#!/usr/bin/env bash
# Installs everything gpujobs needs on a fresh machine, once: a virtual environment with gpujobs and
# its development tools, and configurable-http-proxy (npm) for JupyterHub.  Re-running is cheap: it
# skips what is already there and up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}

stamp=.venv/.gpujobs-installed
want=$(cat pyproject.toml requirements/dev.lock | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== gpujobs: creating .venv and installing from requirements/dev.lock (about four minutes the first time)"
    "$PYTHON" -m venv --clear .venv
    # First the locked pip itself: the pip a venv starts with may be old (23.2 fails a hash-checked
    # install when a package asks for a locked one with extras and a newer release of it exists).
    pip_pin=$(mktemp)
    sed -n '/^pip==/,/^[^ ]/p' requirements/dev.lock | grep -E '^(pip==| )' > "$pip_pin"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r "$pip_pin" 2>&1 | grep -v '^WARNING: Location' || true
    rm -f "$pip_pin"
    # Every package exactly as locked, each checked against its hash; then gpujobs itself from this
    # tree, with the locked setuptools (scripts/lock.sh makes the lock: an upgrade is a reviewed change).
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.lock 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; echo "install failed" >&2; exit 1; }
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
