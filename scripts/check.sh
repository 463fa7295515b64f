#!/usr/bin/env bash
# The one command that checks everything: format, lint (with the layering rule), typecheck, tests.
# Usage: scripts/check.sh [unit|integration|all]   (default: all)
set -euo pipefail
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/env.sh"
kiln_setup
cd "$KILN_ROOT"
what="${1:-all}"
echo "== format" && npx prettier --check . --log-level warn
echo "== lint" && npx eslint --max-warnings 0 .
echo "== typecheck" && npx tsc -p tsconfig.json
shopt -s globstar nullglob
unit=(src/**/*.test.ts)
integ=(test/**/*.test.ts)
case "$what" in
  unit) files=("${unit[@]}") ;;
  integration) files=("${integ[@]}") ;;
  all) files=("${unit[@]}" "${integ[@]}") ;;
  *) echo "usage: $0 [unit|integration|all]" >&2; exit 2 ;;
esac
echo "== test (${#files[@]} files)"
# VM tests share two cores: run files one at a time; each file runs its own tests in order.
exec node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
