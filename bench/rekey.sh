#!/usr/bin/env bash
# Rekey benchmark: bento vs the agenix way (one `age -d | age -R …` pipeline per secret).
#
#   bench/rekey.sh [SECRETS] [NOOP_SECRETS] [LOAD_MB]   defaults: 200, 1000, 4096
#
# 1. A fleet of 11 hosts + 1 admin (12 recipients) and SECRETS secrets; one host joins the
#    group every secret goes to, so every secret is stale. bento rekeys them; the agenix way
#    decrypts and re-encrypts each one with the age CLI. Same work, same machine, one run:
#    five bento runs and three of the age loop, interleaved, compared by their medians.
# 2. The same rekey while another program writes to the same filesystem: `dd` rewriting a
#    LOAD_MB file in a loop beside it. bento syncs only the files it wrote (and their
#    directories), so it should not wait for the other program's data: compared with the
#    quiet median (target: within 1.5x). LOAD_MB=0 skips this part.
# 3. A rekey where nothing is stale, over NOOP_SECRETS secrets.
# Needs: cargo, age, ssh-keygen, dd.
set -euo pipefail
n=${1:-200}
noop_n=${2:-1000}
load_mb=${3:-4096}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bento=$PWD/target/release/bento
work=$(mktemp -d)
loader=
stop_loader() { # the writer ends after its current 256 MB
  [ -n "$loader" ] || return 0
  touch "$work/stop-load"; wait "$loader" 2>/dev/null || true; loader=
}
trap 'stop_loader; rm -rf "$work"' EXIT

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

make_fleet() { # DIR COUNT
  local dir=$1 count=$2
  mkdir -p "$dir" && (cd "$dir" && "$bento" init >/dev/null 2>&1)
  ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin" <<<y >/dev/null 2>&1 || true
  cp "$work/admin.pub" "$dir/keys/admins/admin.pub"
  local hosts=()
  for i in $(seq 1 12); do
    [ -f "$work/host$i" ] || ssh-keygen -q -t ed25519 -N '' -C "host$i" -f "$work/host$i"
    cp "$work/host$i.pub" "$dir/keys/hosts/host$i.pub"
    [ "$i" -le 11 ] && hosts+=("\"host$i\"")
  done
  {
    echo 'admins = ["admin"]'
    echo '[groups]'
    echo "all = [$(IFS=,; echo "${hosts[*]}")]"
    for s in $(seq 1 "$count"); do printf '[secrets.s%d]\nrecipients = ["@all"]\n' "$s"; done
  } >"$dir/secrets/secrets.toml"
  for s in $(seq 1 "$count"); do
    printf 'secret number %d\n' "$s" | "$bento" --fleet "$dir" secret edit "s$s" 2>/dev/null
  done
}

echo "== rekey after a host joins: $n secrets x 12 recipients =="
make_fleet "$work/stale" "$n"
sed -i 's/^all = \[\(.*\)\]$/all = [\1,"host12"]/' "$work/stale/secrets/secrets.toml"
recipients=(-R "$work/admin.pub")
for i in $(seq 1 12); do recipients+=(-R "$work/host$i.pub"); done

# Each side runs on a fresh copy of the stale fleet, starting with nothing left to flush
# (under load, only the copy is flushed: a full `sync` would wait for the writer).
fresh_copy() {
  rm -rf "$work/run" && cp -a "$work/stale" "$work/run"
  if [ -n "$loader" ]; then find "$work/run" -print0 | xargs -0 sync --; else sync; fi
}
bento_once() { # appends its time to bento_runs
  fresh_copy
  local t0 t1
  t0=$(now)
  "$bento" --fleet "$work/run" secret rekey -i "$work/admin" 2>/dev/null
  t1=$(now)
  "$bento" --fleet "$work/run" secret verify >/dev/null 2>&1 || { echo "bento rekey left stale secrets" >&2; exit 1; }
  bento_runs+=("$(ms "$t0" "$t1")")
}
age_once() { # appends its time to age_runs
  fresh_copy
  local t0 t1 f
  t0=$(now)
  for s in $(seq 1 "$n"); do
    f="$work/run/secrets/s$s.age"
    age -d -i "$work/admin" "$f" | age "${recipients[@]}" -o "$f.tmp" && mv "$f.tmp" "$f"
  done
  t1=$(now)
  age -d -i "$work/host12" "$work/run/secrets/s1.age" >/dev/null
  age_runs+=("$(ms "$t0" "$t1")")
}
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# A run of bento lasts a tenth of a second, so one busy moment on the machine can double
# it: bento runs five times and the age loop three, interleaved, each side taken by its
# median.
bento_runs=() age_runs=()
for round in 1 2 3 4 5; do
  bento_once
  if [ $((round % 2)) = 1 ]; then age_once; fi
done
bento_ms=$(median "${bento_runs[@]}"); age_ms=$(median "${age_runs[@]}")
echo "bento secret rekey:        ${bento_ms} ms (median of ${bento_runs[*]})"
echo "age -d | age -R, per file: ${age_ms} ms (median of ${age_runs[*]})"
awk -v a="$age_ms" -v b="$bento_ms" 'BEGIN { if (b < 1) b = 1; printf "ratio: bento is %.1fx faster (target: 40x)\n", a / b }'

if [ "$load_mb" -gt 0 ]; then
  echo
  echo "== the same rekey while dd rewrites a ${load_mb} MB file on the same filesystem =="
  quiet_ms=$bento_ms
  # 256 MB at a time over a LOAD_MB file (not truncated: earlier writes stay dirty), until
  # the stop file appears.
  (
    i=0
    while [ ! -e "$work/stop-load" ]; do
      dd if=/dev/zero of="$work/load.bin" bs=1M count=256 seek=$(( i * 256 % load_mb )) conv=notrunc status=none
      i=$((i + 1))
    done
  ) &
  loader=$!
  sleep 2 # let the writer fill the page cache and start writeback
  bento_runs=()
  for round in 1 2 3 4 5; do bento_once; done
  stop_loader
  rm -f "$work/load.bin"
  load_ms=$(median "${bento_runs[@]}")
  echo "bento secret rekey, quiet:      ${quiet_ms} ms"
  echo "bento secret rekey, under load: ${load_ms} ms (median of ${bento_runs[*]})"
  awk -v q="$quiet_ms" -v l="$load_ms" 'BEGIN { if (q < 1) q = 1; printf "ratio: %.2fx its quiet time (target: within 1.5x)\n", l / q }'
fi

echo
echo "== rekey with nothing stale: $noop_n secrets =="
make_fleet "$work/noop" "$noop_n"
t0=$(now)
"$bento" --fleet "$work/noop" secret rekey 2>/dev/null
t1=$(now)
echo "bento secret rekey (nothing stale): $(ms "$t0" "$t1") ms (target: well under 1000 ms)"
