#!/usr/bin/env bash
# Deploy benchmark: bento vs the upstream way (`rsync -a --delete` of each host's tree).
#
#   bench/deploy.sh [HOSTS] [FILES]     defaults: 1000 hosts x 50 configuration files
#   BENTO=path/to/bento bench/deploy.sh time that binary instead of a fresh release build
#
# 1. A full first deploy of HOSTS hosts (FILES files each, plus one secret per host) into
#    an empty server root, against `rsync -a --delete` of the same trees into another.
# 2. A no-op deploy (nothing changed): target under 1 s.
# Needs: cargo, ssh-keygen, age, rsync.
set -euo pipefail
hosts=${1:-1000}
files=${2:-50}
cd "$(dirname "$0")/.."
if [[ -n ${BENTO:-} ]]; then
  bento=$(realpath "$BENTO")
else
  cargo build --release --quiet
  bento=$PWD/target/release/bento
fi
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install -y rsync)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

fleet=$work/fleet
mkdir -p "$fleet" && (cd "$fleet" && "$bento" init >/dev/null 2>&1)
ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin"
cp "$work/admin.pub" "$fleet/keys/admins/admin.pub"
printf '[deploy]\nsigning_key = "%s"\n' "$work/admin" >"$fleet/bento.toml"
{
  echo 'admins = ["admin"]'
  for i in $(seq 1 "$hosts"); do printf '[secrets.s%d]\nrecipients = ["h%d"]\n' "$i" "$i"; done
} >"$fleet/secrets/secrets.toml"
body=$(head -c 2000 /dev/urandom | base64 -w 76)
for i in $(seq 1 "$hosts"); do
  ssh-keygen -q -t ed25519 -N '' -C "h$i" -f "$work/h$i"
  cp "$work/h$i.pub" "$fleet/keys/hosts/h$i.pub"
  d=$fleet/hosts/h$i
  mkdir -p "$d/modules"
  echo "{ imports = [ ./modules ]; networking.hostName = \"h$i\"; }" >"$d/configuration.nix"
  for f in $(seq 2 "$files"); do printf '# h%d file %d\n%s\n' "$i" "$f" "$body" >"$d/modules/m$f.nix"; done
done
echo "setting up $hosts secrets..." >&2
for i in $(seq 1 "$hosts"); do
  printf 'secret %d' "$i" | "$bento" --fleet "$fleet" secret edit "s$i" 2>/dev/null
done
"$bento" --fleet "$fleet" secret verify >/dev/null

echo "(load average: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "== full first deploy: $hosts hosts x $files files =="
sync
t0=$(now)
"$bento" --fleet "$fleet" deploy --server-root "$work/server" >/dev/null 2>&1
t1=$(now)
sync
mkdir -p "$work/rsync"
t2=$(now)
for i in $(seq 1 "$hosts"); do
  rsync -a --delete -L "$fleet/hosts/h$i/" "$fleet/secrets/s$i.age" "$work/rsync/h$i/"
done
t3=$(now)
bento_ms=$(ms "$t0" "$t1"); rsync_ms=$(ms "$t2" "$t3")
echo "bento deploy (signed, atomic, synced): ${bento_ms} ms"
echo "rsync -a --delete per host:            ${rsync_ms} ms"
awk -v a="$rsync_ms" -v b="$bento_ms" 'BEGIN { if (b < 1) b = 1; printf "ratio: bento is %.1fx the speed of rsync (target: >= 1x)\n", a / b }'

echo
echo "== no-op deploy: $hosts hosts =="
t0=$(now)
"$bento" --fleet "$fleet" deploy --server-root "$work/server" >/dev/null 2>&1
t1=$(now)
t2=$(now)
for i in $(seq 1 "$hosts"); do
  rsync -a --delete -L "$fleet/hosts/h$i/" "$fleet/secrets/s$i.age" "$work/rsync/h$i/"
done
t3=$(now)
echo "bento deploy (nothing changed): $(ms "$t0" "$t1") ms (target: < 1000 ms)"
echo "rsync -a --delete, no change:   $(ms "$t2" "$t3") ms"
