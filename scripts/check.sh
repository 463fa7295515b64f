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
  echo "== typecheck" && npx tsc -p tsconfig.json && npx tsc -p src/dashboard/web/tsconfig.json
}
unit_tests() {
  echo "== unit tests (${#unit[@]} files, two at a time)"
  node --test --test-concurrency=2 --test-reporter=spec "${unit[@]}"
}
# VM tests boot TCG guests. They run in KILN_TEST_LANES lanes (default 2, one per core) that take
# files from one queue, longest first as the last run measured them (new files first; the times are
# kept in the cache dir, outside the repo): each lane runs one file at a time, its tests in order,
# and prefixes every line it prints with its lane number. Every test keeps to its own state dir,
# so two lanes share the machine as two users' runs would. KILN_TEST_LANES=1: one lane.
integration_tests() {
  local lanes="${KILN_TEST_LANES:-2}" times="$KILN_CACHE_DIR/integration-times" work pids=() lane rc=0 f
  mkdir -p "$KILN_CACHE_DIR"
  [[ "$lanes" =~ ^[1-9]$ ]] || { echo "KILN_TEST_LANES must be 1-9, got '$lanes'" >&2; return 2; }
  work="$(mktemp -d /tmp/kiln-lanes-XXXXXX)"
  touch "$times"
  for f in "${integ[@]}"; do
    echo "$(awk -v f="$f" '$2 == f { t = $1 } END { print (t == "" ? 1000000 : t) }' "$times") $f"
  done | sort -rn | awk '{ print $2 }' >"$work/queue"
  echo 0 >"$work/next"
  echo "== integration tests (${#integ[@]} files, $lanes lanes taking the longest first)"
  for ((lane = 1; lane <= lanes; lane++)); do
    integration_lane "$work" 2>&1 | sed -u "s/^/[$lane] /" &
    pids+=("$!")
  done
  wait "${pids[@]}" || true
  # Success is every file of the queue run and none failed (a lane's pipeline status is not used:
  # bash may answer the status of its last command, sed).
  [ ! -s "$work/failed" ] && [ "$(wc -l <"$work/times")" -eq "${#integ[@]}" ] || rc=1
  # The times of this run replace the last ones (files measured before and not run now stay).
  { cat "$work/times" "$times" 2>/dev/null || true; } | awk '!seen[$2]++' >"$work/all" && mv "$work/all" "$times"
  # The failures again, last: a long run's log is often read from its end.
  if [ -s "$work/failed-logs" ]; then
    while read -r i f; do
      echo "== $f failed:"
      if grep -q 'failing tests:' "$work/log.$i"; then
        sed -n '/failing tests:/,$p' "$work/log.$i" | head -200
      else tail -n 60 "$work/log.$i"; fi
    done <"$work/failed-logs"
  fi
  echo "== integration tests: $(wc -l <"$work/times") files run$([ -s "$work/failed" ] && echo ", FAILED:" && cat "$work/failed")"
  rm -rf "$work"
  return "$rc"
}
# One lane: the next file of the queue (under a lock), until none is left.
integration_lane() {
  local work="$1" i f t0
  touch "$work/times"
  while :; do
    i="$(flock "$work/next" bash -c 'n=$(cat "$1"); echo $((n + 1)) >"$1"; echo "$n"' _ "$work/next")"
    f="$(sed -n "$((i + 1))p" "$work/queue")"
    [ -n "$f" ] || return 0
    t0=$SECONDS
    # Each file's output is kept, so that its failures can be printed again at the end.
    # (pipefail: the status is node's.)
    node --test --test-concurrency=1 --test-reporter=spec "$f" 2>&1 | tee "$work/log.$i" ||
      { echo " $f" >>"$work/failed"; echo "$i $f" >>"$work/failed-logs"; }
    echo "$((SECONDS - t0)) $f" >>"$work/times"
  done
}

case "$what" in
  unit) unit_tests ;;
  integration) integration_tests ;;
  static) static_checks ;;
  all) static_checks && unit_tests && integration_tests ;;
  *) echo "usage: $0 [all|unit|integration|static]" >&2; exit 2 ;;
esac
