#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The store is also tested against a real PostgreSQL server, started by the tests themselves.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing PostgreSQL for the store's tests"
    (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null 2>&1 || echo "   (PostgreSQL not installed: those tests will be skipped)"
fi
# The browser test drives Debian's chromium (never a downloaded browser build).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing Debian's chromium for the browser test"
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "   (chromium not installed: the browser test will be skipped)"
fi
export PATH="$(pwd)/node_modules/.bin:$(pwd)/.venv/bin:$PATH"
if [ $# -eq 0 ]; then
    echo "== lint (ruff) and types (mypy)"
    .venv/bin/ruff check src tests bench
    .venv/bin/ruff format --check src tests bench
    .venv/bin/mypy
fi
echo "== tests"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
