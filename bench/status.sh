#!/usr/bin/env bash
# Status benchmark: `bento status --json` over a large fleet.
#
#   bench/status.sh [HOSTS] [REPORTS]     defaults: 10000 hosts x 10 reports each
#   BENTO=path/to/bento bench/status.sh   time that binary instead of a fresh release build
#   BENCH_DIR=dir bench/status.sh         keep the layout in dir (and reuse it next time)
#
# Lays out a fleet of HOSTS hosts and a server root as agents leave it: per host `current`,
# the current generation's manifest.json and manifest.sig (signed by the fleet's admin, so
# status checks who signed each), and REPORTS reports (each with its log) and the
# agent's heartbeat in logs/.
# Then times `bento status --json` (warm cache, best of 5; target: under 0.5 s), and
# `bento status --html` of the same fleet (each host's 6 newest reports read for its
# timeline; best of 5; target: under 1 s, and a page under 10 MB).
# Needs: cargo, ssh-keygen.
set -euo pipefail
hosts=${1:-10000}
reports=${2:-10}
cd "$(dirname "$0")/.."
if [[ -n ${BENTO:-} ]]; then
  bento=$(realpath "$BENTO")
else
  cargo build --release --quiet
  bento=$PWD/target/release/bento
fi
if [[ -n ${BENCH_DIR:-} ]]; then
  # Keep the layout there, and reuse it when it is already there.
  work=$BENCH_DIR
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

fleet=$work/fleet
server=$work/server
if [[ ! -e $work/laid-out-3-$hosts-$reports ]]; then
rm -rf "$fleet" "$server" "$work/admin" "$work/admin.pub"
mkdir -p "$fleet" "$server"
(cd "$fleet" && "$bento" init >/dev/null 2>&1)
ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin"
mkdir -p "$fleet/keys/admins"
cp "$work/admin.pub" "$fleet/keys/admins/admin.pub"
files='"config/configuration.nix": "'$(printf 'ab%.0s' $(seq 32))'"'
system=/nix/store/$(printf 'x%.0s' $(seq 32))-nixos-system
echo "laying out $hosts hosts x $reports reports…" >&2
t0=$(now)
for ((i = 1; i <= hosts; i++)); do
  h=h$i
  d=$server/$h
  mkdir -p "$fleet/hosts/$h" "$d/generations/$reports" "$d/logs"
  echo '{ }' >"$fleet/hosts/$h/configuration.nix"
  # Status reads host names only, never keys.
  echo "ssh-ed25519 AAAA $h" >"$fleet/keys/hosts/$h.pub"
  echo "$reports" >"$d/current"
  printf '{\n  "format": 1,\n  "host": "%s",\n  "generation": %d,\n  "created": "2026-11-01T00:00:00Z",\n  "git_commit": null,\n  "system": "%s-%s",\n  "files": {\n    %s\n  },\n  "secrets": []\n}\n' \
    "$h" "$reports" "$system" "$h" "$files" >"$d/generations/$reports/manifest.json"
  for ((g = 1; g <= reports; g++)); do
    printf -v t '2026-11-%02dT%02d:%02d:00Z' $(( g % 28 + 1 )) $(( i % 24 )) $(( i % 60 ))
    state=applied
    if (( g == reports && i % 10 == 0 )); then state=failed; fi
    printf -v name 'report-%08d-%s' "$g" "${t//:/}"
    printf '{\n  "format": 1,\n  "host": "%s",\n  "generation": %d,\n  "previous_generation": %d,\n  "state": "%s",\n  "time": "%s",\n  "system_before": null,\n  "system_after": "%s-%s",\n  "system_expected": null,\n  "duration_ms": 4000,\n  "bytes": 12345,\n  "error": null,\n  "secrets_changed": [],\n  "kernel_changed": false,\n  "agent": "0.1.0"\n}\n' \
      "$h" "$g" $(( g - 1 )) "$state" "$t" "$system" "$h" >"$d/logs/$name.json"
    : >"$d/logs/${name/report-/log-}.txt.gz"
  done
  printf '{"format":1,"host":"%s","time":"2026-11-%02dT00:00:00Z","applied":%d,"agent":"0.1.0"}' \
    "$h" $(( reports % 28 + 2 )) "$reports" >"$d/logs/seen.json"
done
# One ssh-keygen per 500 manifests; each gets manifest.json.sig, renamed manifest.sig.
find "$server" -name manifest.json -print0 | xargs -0 -n 500 ssh-keygen -q -Y sign -n bento -f "$work/admin"
find "$server" -name manifest.json.sig -execdir mv manifest.json.sig manifest.sig \;
echo "laid out in $(ms "$t0" "$(now)") ms" >&2
touch "$work/laid-out-3-$hosts-$reports"
fi

# Who signed each current generation is checked once and then cached (in the user's cache
# directory, here one in the work dir): the first read pays for 10,000 signature checks.
export XDG_CACHE_HOME=$work/cache
rm -rf "$work/cache"
# The best of 5 runs of a command, in ms.
best_of_5() {
  local best= t0 took
  for _ in 1 2 3 4 5; do
    t0=$(now)
    "$@"
    took=$(ms "$t0" "$(now)")
    if [[ -z $best ]] || (( took < best )); then best=$took; fi
  done
  echo "$best"
}
run() { "$bento" --fleet "$fleet" status --json --server-root "$server" >"$work/out.json" || true; }
run # warm the page cache
rm -rf "$work/cache"
t0=$(now)
run
echo "bento status --json, every signature checked (no cache): $(ms "$t0" "$(now)") ms"
best=$(best_of_5 run)
rows=$(grep -c '"host":' "$work/out.json")
signed=$(grep -c '"admin"' "$work/out.json" || true)
echo "hosts whose current generation status names as signed by admin: $signed"
echo "bento status --json: $rows hosts x $reports reports in $best ms (best of 5; target < 500 ms)"

html() { "$bento" --fleet "$fleet" status --html "$work/fleet.html" --server-root "$server" 2>/dev/null || true; }
html
best=$(best_of_5 html)
size=$(stat -c %s "$work/fleet.html")
echo "bento status --html: $hosts hosts in $best ms (best of 5; target < 1000 ms), $(( size / 1024 )) KiB (target < 10240 KiB)"
