#!/usr/bin/env bash
# Runs every test program (build/tests/test_*) and every tests/test_*.py, each under a timeout.
# Exit codes: 0 pass, 77 skip, anything else fails. Ends with "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
BUILD=${FERRY_BUILD:-build}
export FERRY_BIN="$PWD/$BUILD/ferry"
TIMEOUT=${FERRY_TEST_TIMEOUT:-600}
pass=0 fail=0 skip=0 failed=()
run() {
	local name=$1; shift
	local t0=$SECONDS log
	log=$(mktemp)
	timeout "$TIMEOUT" "$@" >"$log" 2>&1
	local rc=$?
	local dt=$((SECONDS - t0))
	case $rc in
	0) pass=$((pass + 1)); printf '  PASS  %-28s %3ds\n' "$name" "$dt" ;;
	77) skip=$((skip + 1)); printf '  SKIP  %-28s %3ds  %s\n' "$name" "$dt" "$(tail -n 1 "$log")" ;;
	*) fail=$((fail + 1)); failed+=("$name"); printf '  FAIL  %-28s %3ds  (exit %d)\n' "$name" "$dt" "$rc"
	   sed 's/^/        | /' "$log" | tail -n 40 ;;
	esac
	rm -f "$log"
}
for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] && [ "${t%.d}" = "$t" ] && [ "${t%.o}" = "$t" ] || continue
	run "$(basename "$t")" "$t"
done
for t in tests/test_*.py; do
	run "$(basename "$t")" python3 "$t"
done
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
