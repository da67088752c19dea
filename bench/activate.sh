#!/usr/bin/env bash
# Activation benchmark: `bento activate` vs agenix's way (per secret: one `age -d`
# process, then chmod, chown and mv, as agenix's activation script does).
#
#   sudo bench/activate.sh [SECRETS]        default 300
#
# Same secrets, same host key, same machine, one run. Runs as root inside a private mount
# namespace, so the ramfs mounts vanish afterwards. Needs: cargo, age, ssh-keygen, unshare.
set -euo pipefail
n=${1:-300}
[ "$(id -u)" = 0 ] || { echo "bench/activate.sh mounts ramfs: run it as root" >&2; exit 1; }
cd "$(dirname "$0")/.."
cargo build --release --quiet
bento=$PWD/target/release/bento
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/fleet" && (cd "$work/fleet" && "$bento" init >/dev/null 2>&1)
ssh-keygen -q -t ed25519 -N '' -f "$work/host"
cp "$work/host.pub" "$work/fleet/keys/hosts/web1.pub"
for s in $(seq 1 "$n"); do printf '[secrets.s%d]\nrecipients = ["web1"]\n' "$s"; done >"$work/fleet/secrets/secrets.toml"
mkdir -p "$work/bundle/secrets"
{
  echo '{"format": 1, "host": "web1", "generation": 1, "secrets": ['
  for s in $(seq 1 "$n"); do
    printf 'secret number %d\n' "$s" | "$bento" --fleet "$work/fleet" secret edit "s$s" 2>/dev/null
    cp "$work/fleet/secrets/s$s.age" "$work/bundle/secrets/"
    sum=$(sha256sum "$work/bundle/secrets/s$s.age" | cut -d' ' -f1)
    [ "$s" -gt 1 ] && echo ','
    printf '{"name": "s%d", "file": "secrets/s%d.age", "sha256": "%s", "owner": "daemon", "mode": "0400"}' "$s" "$s" "$sum"
  done
  echo ']}'
} >"$work/bundle/manifest.json"

export bento work n
# A run of bento lasts a few tens of milliseconds, so one busy moment on the machine can
# double it: bento runs five times and the agenix way three, interleaved, each side taken
# by its median. Each run starts from an empty root.
unshare --mount --propagation private bash -euc '
now() { date +%s%N; }
median() { printf "%s\n" "$@" | sort -n | awk "{v[NR] = \$1} END {print v[int((NR + 1) / 2)]}"; }
bento_once() {
  umount "$work/run-bento/secrets.d" 2>/dev/null || true; rm -rf "$work/run-bento"
  local t0 t1
  t0=$(now)
  "$bento" activate --bundle "$work/bundle" -i "$work/host" --root "$work/run-bento" >/dev/null 2>&1
  t1=$(now)
  bento_runs+=($(( (t1 - t0) / 1000000 )))
}
agenix_once() {
  umount "$work/run-agenix" 2>/dev/null || true; rm -rf "$work/run-agenix"
  mkdir -p "$work/run-agenix" && mount -t ramfs -o nodev,nosuid,mode=0751 ramfs "$work/run-agenix"
  local t0 t1 s tmp
  t0=$(now)
  for s in $(seq 1 "$n"); do
    tmp="$work/run-agenix/s$s.tmp"
    (umask u=r,g=,o=; age --decrypt -i "$work/host" -o "$tmp" "$work/bundle/secrets/s$s.age")
    chmod 0400 "$tmp"; chown daemon:daemon "$tmp"; mv -f "$tmp" "$work/run-agenix/s$s"
  done
  t1=$(now)
  agenix_runs+=($(( (t1 - t0) / 1000000 )))
}
bento_runs=() agenix_runs=()
for round in 1 2 3 4 5; do
  bento_once
  if [ $((round % 2)) = 1 ]; then agenix_once; fi
done
cmp "$work/run-bento/secrets/s$n" "$work/run-agenix/s$n"
b=$(median "${bento_runs[@]}"); a=$(median "${agenix_runs[@]}")
echo "secrets: $n (load: $(cut -d" " -f1-3 /proc/loadavg))"
echo "bento activate:                    ${b} ms (median of ${bento_runs[*]})"
echo "agenix way (age -d per secret):    ${a} ms (median of ${agenix_runs[*]})"
awk -v a="$a" -v b="$b" "BEGIN { if (b < 1) b = 1; printf \"ratio: bento is %.1fx faster (target: 100x)\n\", a / b }"
'
