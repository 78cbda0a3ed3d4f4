#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.  Extra arguments go to pytest.
#   --stress   run the suite three times, each in a new random order, with two CPU burners beside it
#              (what a busy CI machine does to timing); stops at the first failing run.
# Tests run in random order (pytest-randomly); the seed is printed, and GPUJOBS_TEST_SEED=N repeats it.
set -euo pipefail
cd "$(dirname "$0")/.."
stress=0
if [ "${1:-}" = "--stress" ]; then
    stress=1
    shift
fi
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
run_tests() {
    local seed=${GPUJOBS_TEST_SEED:-$((RANDOM * 32768 + RANDOM))}
    echo "== tests (random order: GPUJOBS_TEST_SEED=$seed repeats it)"
    if [ $# -gt 0 ]; then  # a part of the suite: no coverage figures (they would mean nothing)
        .venv/bin/python -m pytest -q -p no:cacheprovider -p randomly --randomly-seed="$seed" "$@"
        return
    fi
    # The whole suite, measured: the service and hub subprocesses too (pyproject's [tool.coverage]).
    rm -f .coverage .coverage.*
    # --durations: the slowest tests, where a faster suite starts.
    .venv/bin/python -m pytest -q -p no:cacheprovider -p randomly --randomly-seed="$seed" \
        --cov --cov-report= --cov-fail-under=0 --durations=15
    .venv/bin/python -m coverage json -q -o coverage-totals.json
    .venv/bin/python - <<'PY'
import json
totals = json.load(open("coverage-totals.json"))["totals"]
lines, branches = totals["percent_statements_covered"], totals["percent_branches_covered"]
print(f"== coverage of src/gpujobs: lines {lines:.1f} %, branches {branches:.1f} % (at least 92 / 85)")
if lines < 92 or branches < 85:
    raise SystemExit("coverage fell below its floor: 92 % of lines and 85 % of branches")
PY
}
if [ "$stress" = 0 ]; then
    run_tests "$@"
    exit
fi
burners=()
for _ in 1 2; do
    "${BASH:-bash}" -c 'while :; do :; done' &
    burners+=($!)
done
trap 'kill "${burners[@]}" 2>/dev/null || true' EXIT
for round in 1 2 3; do
    echo "== stress round $round of 3 (two CPU burners running)"
    run_tests "$@"
done
