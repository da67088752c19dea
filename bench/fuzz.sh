#!/usr/bin/env bash
# Fuzzing soak: the property tests of every parser of outside input
# (bento-secrets/tests/props.rs, bento-deploy/tests/props.rs, and the lock's in
# bento-secrets/src/lock.rs), each run for many cases.
#
#   bench/fuzz.sh [CASES] [FILTER]   defaults: 1000000 cases per property, every property
#
# CI runs the same properties with a few hundred to 2,000 cases each; this runs CASES each
# (through PROPTEST_CASES) and prints, per property, its time and cases per second. A
# failure prints proptest's minimal failing input and stops the script.
# Needs: cargo.
set -euo pipefail
cases=${1:-1000000}
filter=${2:-}
cd "$(dirname "$0")/.."

# The test binaries, built once (the dev profile the tests use).
bins=()
for crate in bento-secrets bento-deploy; do
  bin=$(cargo test -p "$crate" --test props --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  bins+=("$crate=$bin")
done
# The lock's properties sit in its module (its writer is crate-private).
bin=$(cargo test -p bento-secrets --lib --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
bins+=("bento-secrets-lib=$bin")

printf '%-40s %10s %10s %12s\n' property cases seconds cases/s
for entry in "${bins[@]}"; do
  bin=${entry#*=}
  # Properties only: names from `--list`, without the plain tests (seeds, regressions).
  names=$("$bin" --list --format terse 2>/dev/null | sed -n 's/: test$//p' |
    grep -v -e '^the_seeds_parse$' -e '^a_line_break' -e 'an_odd_name' | grep -e "$filter" || true)
  if [[ ${entry%%=*} == *-lib ]]; then
    names=$(printf '%s\n' $names | grep '::props::' || true)
  fi
  for name in $names; do
    start=$(date +%s%N)
    if ! PROPTEST_CASES=$cases "$bin" --exact "$name" --test-threads 1 >/tmp/fuzz-$$.log 2>&1; then
      cat /tmp/fuzz-$$.log
      rm -f /tmp/fuzz-$$.log
      echo "FAILED: ${entry%%=*} $name" >&2
      exit 1
    fi
    end=$(date +%s%N)
    ns=$((end - start))
    awk -v n="$name" -v c="$cases" -v ns="$ns" \
      'BEGIN { s = ns / 1e9; printf "%-40s %10d %10.2f %12.0f\n", n, c, s, c / s }'
  done
done
rm -f /tmp/fuzz-$$.log
