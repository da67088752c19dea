#!/usr/bin/env bash
# Templates benchmark: `bento activate` of SECRETS secrets plus TEMPLATES templates (each
# using 6 of the secrets) vs the same secrets alone.
#
#   sudo bench/templates.sh [SECRETS] [TEMPLATES] [RUNS]      default 300 50 5
#
# Same secrets, same host key, one run; each side activated RUNS times into a fresh root,
# interleaved, compared by the median. Runs as root inside a private mount namespace, so
# the ramfs mounts vanish afterwards. Needs: cargo, age, ssh-keygen, unshare.
set -euo pipefail
n=${1:-300}
t=${2:-50}
runs=${3:-5}
[ "$(id -u)" = 0 ] || { echo "bench/templates.sh mounts ramfs: run it as root" >&2; exit 1; }
cd "$(dirname "$0")/.."
cargo build --release --quiet
bento=$PWD/target/release/bento
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ssh-keygen -q -t ed25519 -N '' -f "$work/host"
mkdir -p "$work/plain/secrets" "$work/tmpl/secrets" "$work/tmpl/templates"
entry() { printf '{"name": "%s", "file": "%s", "sha256": "%s", "owner": "daemon", "mode": "0400"}' \
  "$1" "$2" "$(sha256sum "$3" | cut -d' ' -f1)"; }
secrets=""
for s in $(seq 1 "$n"); do
  printf 'secret number %d\n' "$s" | age -R "$work/host.pub" -o "$work/plain/secrets/s$s.age"
  cp "$work/plain/secrets/s$s.age" "$work/tmpl/secrets/"
  [ "$s" -gt 1 ] && secrets+=","
  secrets+=$(entry "s$s" "secrets/s$s.age" "$work/plain/secrets/s$s.age")
done
templates=""
for i in $(seq 1 "$t"); do
  f="$work/tmpl/templates/t$i"
  {
    echo "# service $i"
    for k in 0 1 2 3 4 5; do
      echo "KEY_$k={{ secrets.s$(( (i * 6 + k) % n + 1 )) }}"
    done
    echo "URL=postgres://app:{{secrets.s$(( i % n + 1 ))}}@db/app"
  } >"$f"
  [ "$i" -gt 1 ] && templates+=","
  templates+=$(entry "t$i" "templates/t$i" "$f")
done
echo "{\"format\": 1, \"host\": \"web1\", \"generation\": 1, \"secrets\": [$secrets]}" >"$work/plain/manifest.json"
echo "{\"format\": 1, \"host\": \"web1\", \"generation\": 1, \"secrets\": [$secrets], \"templates\": [$templates]}" \
  >"$work/tmpl/manifest.json"

export bento work n t runs
unshare --mount --propagation private bash -euc '
now() { date +%s%N; }
median() { sort -n | awk "{ a[NR] = \$1 } END { print a[int((NR + 1) / 2)] }"; }
: >"$work/plain.ms"; : >"$work/tmpl.ms"
for r in $(seq 1 "$runs"); do
  for side in plain tmpl; do
    t0=$(now)
    "$bento" activate --bundle "$work/$side" -i "$work/host" --root "$work/run-$side-$r" --systemctl true >/dev/null 2>&1
    t1=$(now)
    echo $(( (t1 - t0) / 1000000 )) >>"$work/$side.ms"
  done
done
cmp "$work/run-plain-1/secrets/s$n" "$work/run-tmpl-1/secrets/s$n"
grep -q "secret number" "$work/run-tmpl-1/templates/t$t"
p=$(median <"$work/plain.ms"); m=$(median <"$work/tmpl.ms")
echo "secrets: $n, templates: $t, runs: $runs (medians)"
echo "activate, secrets alone:           ${p} ms"
echo "activate, secrets + templates:     ${m} ms"
awk -v p="$p" -v m="$m" "BEGIN { if (p < 1) p = 1; printf \"ratio: %.2fx the time of the secrets alone (target: within 1.5x)\n\", m / p }"
'
