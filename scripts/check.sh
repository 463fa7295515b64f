#!/usr/bin/env bash
# The one command that checks everything: format, lint (with the layering rule), typecheck, tests.
# Usage: scripts/check.sh [all|unit|integration|static]   (default: all)
#   unit         unit tests (src/**/*.test.ts): no VM, no image build; two files at a time
#   integration  VM tests (test/**/*.test.ts): real QEMU guests; two lanes, one file at a time each
#   static       format check, lint, typecheck
#   all          static, then unit, then integration
# Two runs may share a machine: every test keeps to its own temp dirs, ports (0 = any) and VMs.
set -euo pipefail
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/env.sh"
kiln_setup
cd "$KILN_ROOT"
what="${1:-all}"
shopt -s globstar nullglob
unit=(src/**/*.test.ts)
integ=(test/**/*.test.ts)

static_checks() {
  echo "== format" && npx prettier --check . --log-level warn
  echo "== lint" && npx eslint --max-warnings 0 .
  echo "== typecheck" && npx tsc -p tsconfig.json
}
unit_tests() {
  echo "== unit tests (${#unit[@]} files, two at a time)"
  node --test --test-concurrency=2 --test-reporter=spec "${unit[@]}"
}
# VM tests boot TCG guests. They run in KILN_TEST_LANES lanes (default 2, one per core): node's own
# sharding splits the files, each lane runs its files one at a time and its tests in order, and
# every line it prints is prefixed with its lane number. Every test keeps to its own state dir, so
# two lanes share the machine as two users' runs would. KILN_TEST_LANES=1 runs them all in one lane.
integration_tests() {
  local lanes="${KILN_TEST_LANES:-2}" pids=() lane rc=0
  [[ "$lanes" =~ ^[1-9]$ ]] || { echo "KILN_TEST_LANES must be 1-9, got '$lanes'" >&2; return 2; }
  echo "== integration tests (${#integ[@]} files, $lanes lanes, one file at a time in each)"
  for ((lane = 1; lane <= lanes; lane++)); do
    node --test --test-concurrency=1 --test-shard="$lane/$lanes" --test-reporter=spec "${integ[@]}" 2>&1 |
      sed -u "s/^/[$lane] /" &
    pids+=("$!")
  done
  for lane in "${pids[@]}"; do wait "$lane" || rc=1; done
  return "$rc"
}

case "$what" in
  unit) unit_tests ;;
  integration) integration_tests ;;
  static) static_checks ;;
  all) static_checks && unit_tests && integration_tests ;;
  *) echo "usage: $0 [all|unit|integration|static]" >&2; exit 2 ;;
esac
