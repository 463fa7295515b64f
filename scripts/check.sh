#!/usr/bin/env bash
# The one command that checks everything: format, lint (with the layering rule), typecheck, tests.
# Usage: scripts/check.sh [all|unit|integration|static]   (default: all)
#   unit         unit tests (src/**/*.test.ts): no VM, no image build; two files at a time
#   integration  VM tests (test/**/*.test.ts): real QEMU guests; one file at a time
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
# VM tests share two cores and boot TCG guests: one file at a time, each running its tests in order.
integration_tests() {
  echo "== integration tests (${#integ[@]} files, one at a time)"
  node --test --test-concurrency=1 --test-reporter=spec "${integ[@]}"
}

case "$what" in
  unit) unit_tests ;;
  integration) integration_tests ;;
  static) static_checks ;;
  all) static_checks && unit_tests && integration_tests ;;
  *) echo "usage: $0 [all|unit|integration|static]" >&2; exit 2 ;;
esac
