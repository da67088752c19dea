#!/usr/bin/env bash
# Closure benchmark: a closure host's first pull of a whole system (`bento agent --once` in
# closure mode, fetching the store paths its store lacks from its own cache through its
# sftp chroot, importing them signed, setting the profile and switching) against
#   (a) `nix copy --from file://<root>/cache` of the same signed cache on local disk (the
#       floor: reading and unpacking the same NARs, checking the same signatures), and
#   (b) `nix copy --from ssh://` of the same paths from the admin's store over loopback
#       ssh (`nix-store --serve` on the far side: what push tools do);
# then one store path changed: the host's update (the changed path and the system).
#
#   sudo bench/closure.sh [ROUNDS]        default: 1 round
#
# The closure: PATHS=200 store paths (PATHS-1 independent leaves of MB_PER_PATH=1 MB of
# /dev/urandom each, so xz cannot shrink them, and the system referring to all of them, with
# a bin/switch-to-configuration that records its call), built with `nix-build` and
# `/bin/sh` builders; published by `bento deploy` with [cache] compression COMPRESSION=xz.
# Each round starts all three sides from fresh, empty stores (bento, then (a), then (b));
# each side is taken by its median round. The update is measured ROUNDS times, each with a
# new leaf, each beside a no-change poll of the same agent.
#
# Every Nix store used (the admin's, the host's, one for each of (a) and (b)) is a temp dir
# bind-mounted on /nix in a private mount namespace of the commands that use it
# (`unshare -m`): the machine's own /nix is never touched. sshd listens on 127.0.0.1 only,
# inside a private mount namespace with private passwd/group/shadow copies, with two users:
# bento-web1 (chrooted, sftp-only) and, for (b), a uid-0 login whose forced command is
# `nix-store --serve --write` in the admin's store; both key-only, with keys made here. It
# is killed and every directory removed on exit.
#
# Printed: the three times, the ratios bento/(a) (target: within 1.3x) and bento/(b)
# (target: below 1x), the update time against one no-change poll (target: under 1 s plus
# one poll), and the bytes the agent's report counts against the host cache's size. Also,
# for reference only: the agent's time split into phases (its nix, nix-store and nix-env
# are wrappers that log when each call starts, then exec the real one), and OpenSSH's own
# sftp client copying web1's whole cache through the same chroot (`get -r`, nothing
# imported): the transport's cost on this machine.
# BENTO=FILE measures that bento binary instead of building this tree's.
# Needs: root, cargo, nix (nix-build, nix-store, nix-env), sshd, ssh, ssh-keygen, unshare.
set -euo pipefail
rounds=${1:-1}
paths=${PATHS:-200}
mb=${MB_PER_PATH:-1}
compression=${COMPRESSION:-xz}
[ "$(id -u)" = 0 ] || { echo "bench/closure.sh mounts Nix stores and starts sshd with a chroot: run it as root" >&2; exit 1; }
[ "$paths" -ge 2 ] || { echo "PATHS must be at least 2 (one leaf and the system)" >&2; exit 1; }
cd "$(dirname "$0")/.."
if [ -z "${BENTO:-}" ]; then cargo build --release --quiet; fi
bento=${BENTO:-$PWD/target/release/bento} # BENTO=/path/to/bento measures another build
leaves=$((paths - 1))
leaf_bytes=$(awk -v m="$mb" 'BEGIN { printf "%d", m * 1000000 }')
work=$(mktemp -d)
chmod 0755 "$work" # sshd reads the authorized keys below it as the sftp user
mkdir -p /srv
root=$(mktemp -d /srv/bento-bench-XXXXXX) # sshd wants a chroot with root-owned parents
chmod 0755 "$root"
sshd_pid=
cleanup() {
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null && wait "$sshd_pid" 2>/dev/null
  rm -rf "$work" "$root"
}
trap cleanup EXIT

# Nix settings for every store here: no build users, no sandbox, no substituter.
nix_config='build-users-group =
sandbox = false
substituters =
experimental-features = nix-command'
export NIX_CONFIG=$nix_config
# instore STORE CMD...: CMD in a private mount namespace where the directory STORE is /nix.
instore() {
  local store=$1
  shift
  mkdir -p "$store"
  # shellcheck disable=SC2016 # expanded by the inner sh
  unshare -m --propagation private sh -c 'mount --bind "$0" /nix && exec "$@"' "$store" "$@" </dev/null
}
admin=$work/admin-nix

# The fleet: web1 in closure mode, its system built by nix-build from its configuration.
mkdir -p "$work/fleet" && (cd "$work/fleet" && "$bento" init >/dev/null 2>&1)
ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin"
ssh-keygen -q -t ed25519 -N '' -C web1 -f "$work/web1"
ssh-keygen -q -t ed25519 -N '' -C nixserve -f "$work/nixserve"
cp "$work/web1.pub" "$work/fleet/keys/hosts/web1.pub"
cp "$work/admin.pub" "$work/fleet/keys/admins/admin.pub"
instore "$admin" nix-store --generate-binary-cache-key bento-bench-1 "$work/cache.sec" "$work/cache.pub"
cache_pub=$(cat "$work/cache.pub")
# shellcheck disable=SC2016 # the build script's own $3
printf '#!/bin/sh\nexec nix-build --max-jobs 2 --no-out-link "${3#nixos-config=}"\n' >"$work/build.sh"
chmod +x "$work/build.sh"
cat >"$work/fleet/bento.toml" <<EOF
[deploy]
signing_key = "$work/admin"
[build]
command = "$work/build.sh build"
[cache]
signing_key = "$work/cache.sec"
compression = "$compression"
[hosts.web1]
mode = "closure"
EOF
mkdir -p "$work/fleet/hosts/web1"
# set_system REV: web1's configuration, leaf 0's content depending on REV.
set_system() {
  cat >"$work/fleet/hosts/web1/configuration.nix" <<EOF
let
  mk = name: script: derivation {
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    PATH = "/usr/bin:/bin"; args = [ "-c" script ];
  };
  leaf = i: mk "leaf-\${toString i}"
    "\${if i == 0 then "echo rev-$1 >/dev/null; " else ""}head -c $leaf_bytes /dev/urandom > \$out";
  leaves = builtins.genList leaf $leaves;
in mk "nixos-system-web1" ''
  mkdir -p \$out/bin
  echo \${toString leaves} > \$out/uses
  cat > \$out/bin/switch-to-configuration <<EOS
#!/bin/sh
sys=\\\$(dirname \\\$(dirname \\\$0))
echo "\\\$sys \\\$*" >> $work/switched
ln -sfn \\\$sys $work/current-system
EOS
  chmod +x \$out/bin/switch-to-configuration
''
EOF
}
# build_and_deploy: builds web1, signs its closure in the admin's store (for (b)), deploys
# into the server root; prints the system.
build_and_deploy() {
  instore "$admin" "$bento" --fleet "$work/fleet" build web1 >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; exit 1; }
  instore "$admin" "$bento" --fleet "$work/fleet" deploy --server-root "$root" >"$work/deploy.log" 2>&1 \
    || { cat "$work/deploy.log" >&2; exit 1; }
  local system
  system=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["hosts"]["web1"]["system"])' \
    "$work/fleet/.bento/expected.json")
  instore "$admin" nix store sign --key-file "$work/cache.sec" -r "$system" >>"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; exit 1; }
  echo "$system"
}
set_system 0
t0=$(date +%s)
system=$(build_and_deploy)
echo "built and deployed $paths store paths in $(( $(date +%s) - t0 )) s" >&2

# sshd: the test suite's setup (tests/e2e/sshd.rs), plus the uid-0 login for (b).
uid=64991
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
cp /etc/passwd /etc/group "$work/"
cp /etc/shadow "$work/" 2>/dev/null || : >"$work/shadow"
echo "bentosftp:x:64990:" >>"$work/group"
echo "bento-web1:x:$uid:64990::/:/usr/sbin/nologin" >>"$work/passwd"
echo "bento-web1:*:19000:0:99999:7:::" >>"$work/shadow"
echo "bento-nixserve:x:0:0::/:/bin/sh" >>"$work/passwd"
echo "bento-nixserve:*:19000:0:99999:7:::" >>"$work/shadow"
mkdir -p "$work/keys" && chmod 0755 "$work/keys"
cp "$work/web1.pub" "$work/keys/bento-web1" && cp "$work/nixserve.pub" "$work/keys/bento-nixserve"
chown "$uid" "$root/web1/logs"
cat >"$work/serve.sh" <<EOF
#!/bin/sh
export NIX_CONFIG='$nix_config'
exec unshare -m --propagation private sh -c 'mount --bind "\$0" /nix && exec nix-store --serve --write' "$admin"
EOF
chmod +x "$work/serve.sh"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers bento-web1 bento-nixserve
AuthorizedKeysFile $work/keys/%u
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
Match User bento-web1
  ChrootDirectory $root/web1
  ForceCommand internal-sftp
  DisableForwarding yes
  PermitTTY no
Match User bento-nixserve
  ForceCommand $work/serve.sh
  DisableForwarding yes
  PermitTTY no
EOF
# `unshare` without --fork execs: $! is sh, then sshd itself.
unshare --mount --propagation private sh -c "mount --bind $work/passwd /etc/passwd && \
  mount --bind $work/group /etc/group && mount --bind $work/shadow /etc/shadow && \
  mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f $work/sshd_config" 2>"$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "[127.0.0.1]:$port $(cat "$work/host_key.pub")" >"$work/known_hosts"

# The agent's nix, nix-store and nix-env: the real ones, each call's start time logged, to
# split the agent's time into its phases.
mkdir -p "$work/nixbin"
for tool in nix nix-store nix-env; do
  # shellcheck disable=SC2016 # the wrapper's own $(date) and $@
  printf '#!/bin/sh\necho "$(date +%%s%%N) %s" >>%s\nexec %s "$@"\n' \
    "$tool" "$work/phases" "$(command -v "$tool")" >"$work/nixbin/$tool"
  chmod +x "$work/nixbin/$tool"
done

# web1's agent, in closure mode, pinning the cache key; its store is $work/host-nix.
cat >"$work/agent.toml" <<EOF
host = "web1"
server = "sftp://bento-web1@127.0.0.1:$port"
identity = "$work/web1"
known_hosts = "$work/known_hosts"
trusted_keys = ["$(cat "$work/admin.pub")"]
state_dir = "$work/state"
secrets_root = "$work/run"
rebuild = "false"
rollback = "false"
current_system = "$work/current-system"
booted_system = "$work/current-system"
mode = "closure"
cache_public_keys = ["$cache_pub"]
nix = "$work/nixbin/nix"
EOF
export NIX_SSHOPTS="-F /dev/null -p $port -i $work/nixserve -o IdentitiesOnly=yes -o BatchMode=yes \
-o StrictHostKeyChecking=yes -o UserKnownHostsFile=$work/known_hosts -o GlobalKnownHostsFile=/dev/null"

now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
# agent: one `bento agent --once --json` in the host's store; its report in $work/report.json,
# its wall time in $agent_ms, and its phases (see `phases`) in $agent_phases.
agent() {
  local t0 t1
  rm -f "$work/phases"
  t0=$(now)
  if ! instore "$work/host-nix" "$bento" agent --once --json --config "$work/agent.toml" \
    >"$work/report.json" 2>"$work/agent.err"; then
    cat "$work/agent.err" "$work/report.json" "$work/sshd.log" >&2
    exit 1
  fi
  t1=$(now)
  agent_ms=$(( (t1 - t0) / 1000000 ))
  agent_phases=$(phases "$t0" "$t1")
}
# phases T0 T1: of an agent run from T0 to T1 (ns) that fetched, in ms: connecting and
# reading the bundle (to the first nix-store call), fetching the .narinfos and NARs (to the
# nix copy), importing them (to nix-env), then the profile, switch, reachability check and
# report.
phases() {
  [ -s "$work/phases" ] || { echo "0 0 0 0"; return; }
  awk -v t0="$1" -v t1="$2" '
    $2 == "nix-store" && !c { c = $1 }
    $2 == "nix" && !i { i = $1 }
    $2 == "nix-env" && !e { e = $1 }
    END { if (!i) { print "0 0 0 0"; exit }
          printf "%d %d %d %d\n", (c - t0) / 1e6, (i - c) / 1e6, (e - i) / 1e6, (t1 - e) / 1e6 }' "$work/phases"
}
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' "$work/report.json" "$1"; }
check_switched() { # SYSTEM
  [ "$(readlink "$work/current-system")" = "$1" ] || { echo "the agent did not switch to $1" >&2; exit 1; }
}
fresh() { rm -rf "$work/host-nix" "$work/state" "$work/run" "$work/current-system" "$work/floor-nix" "$work/ssh-nix"; }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# medians LINE...: the median of each of the four columns of the lines ("a b c d" each).
medians() {
  local k col out=()
  for k in 1 2 3 4; do
    mapfile -t col < <(printf '%s\n' "$@" | awk -v k="$k" '{ print $k }')
    out+=("$(median "${col[@]}")")
  done
  echo "${out[*]}"
}
echo "get -r /cache $work/sftp-get" >"$work/sftp-batch"

cache_bytes=$(find "$root/web1/cache" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
nar_count=$(find "$root/web1/cache/nar" -type f | wc -l)
bento_ms=() floor_ms=() ssh_ms=() sftp_ms=() bento_phases=()
for r in $(seq 1 "$rounds"); do
  fresh
  agent; bento_ms+=("$agent_ms"); bento_phases+=("$agent_phases")
  check_switched "$system"
  first_bytes=$(field bytes) first_note=$(field note)
  [ "$first_note" = "$paths store paths fetched" ] || { echo "round $r: the agent said: $first_note" >&2; exit 1; }

  t=$(now)
  instore "$work/floor-nix" nix copy --option trusted-public-keys "$cache_pub" \
    --from "file://$root/cache" "$system" 2>"$work/floor.err" || { cat "$work/floor.err" >&2; exit 1; }
  floor_ms+=("$(ms_since "$t")")

  t=$(now)
  instore "$work/ssh-nix" nix copy --option trusted-public-keys "$cache_pub" \
    --from "ssh://bento-nixserve@127.0.0.1" "$system" 2>"$work/ssh.err" \
    || { cat "$work/ssh.err" "$work/sshd.log" >&2; exit 1; }
  ssh_ms+=("$(ms_since "$t")")
  for side in floor ssh; do
    instore "$work/$side-nix" nix-store --check-validity "$system" \
      || { echo "($side) left $system invalid" >&2; exit 1; }
  done
  rm -rf "$work/floor-nix" "$work/ssh-nix"

  # For reference, not a target: OpenSSH's own sftp client (its reads pipelined) copying
  # web1's whole cache through the same chroot, importing nothing.
  t=$(now)
  sftp -q -b "$work/sftp-batch" -i "$work/web1" -P "$port" -o BatchMode=yes -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$work/known_hosts" \
    -o GlobalKnownHostsFile=/dev/null bento-web1@127.0.0.1 >/dev/null
  sftp_ms+=("$(ms_since "$t")")
  rm -rf "$work/sftp-get"
  echo "round $r: bento ${bento_ms[-1]} ms, (a) ${floor_ms[-1]} ms, (b) ${ssh_ms[-1]} ms, sftp get ${sftp_ms[-1]} ms" >&2
done

# One path changed: leaf 0 gets new content; the host fetches it and the system.
update_ms=() poll_ms=() update_bytes=() update_phases=()
for r in $(seq 1 "$rounds"); do
  set_system "$r"
  system=$(build_and_deploy)
  agent; update_ms+=("$agent_ms"); update_phases+=("$agent_phases")
  check_switched "$system"
  note=$(field note); update_bytes+=("$(field bytes)")
  [ "$note" = "2 store paths fetched" ] || { echo "update $r: the agent said: $note" >&2; exit 1; }
  agent; poll_ms+=("$agent_ms") # nothing new: one poll
  [ "$(field note)" = None ] || { echo "the no-change poll said: $(field note)" >&2; exit 1; }
done
[ "$(wc -l <"$work/switched")" = $((rounds * 2)) ] || { echo "switches: $(cat "$work/switched")" >&2; exit 1; }

b=$(median "${bento_ms[@]}") a=$(median "${floor_ms[@]}") s=$(median "${ssh_ms[@]}") g=$(median "${sftp_ms[@]}")
u=$(median "${update_ms[@]}") p=$(median "${poll_ms[@]}") ub=$(median "${update_bytes[@]}")
bp=$(medians "${bento_phases[@]}") up=$(medians "${update_phases[@]}")
echo "closure: $paths store paths ($leaves leaves of $leaf_bytes bytes + the system), $compression;" \
  "$rounds round(s) (load: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores)"
awk -v b="$b" -v a="$a" -v s="$s" -v g="$g" -v runs_b="${bento_ms[*]}" -v runs_a="${floor_ms[*]}" \
  -v runs_s="${ssh_ms[*]}" -v runs_g="${sftp_ms[*]}" -v bp="$bp" -v up="$up" \
  -v cache="$cache_bytes" -v nars="$nar_count" -v got="$first_bytes" -v u="$u" -v p="$p" -v ub="$ub" \
  -v runs_u="${update_ms[*]}" 'BEGIN {
  split(bp, B, " "); split(up, U, " ")
  printf "bento agent --once, sftp chroot:  %6.2f s (rounds, ms: %s)\n", b / 1000, runs_b
  printf "  connect + bundle %.2f s, fetch over sftp %.2f s, import (nix copy) %.2f s, profile + switch + report %.2f s\n", B[1] / 1000, B[2] / 1000, B[3] / 1000, B[4] / 1000
  printf "(a) nix copy --from file://:      %6.2f s (rounds, ms: %s)\n", a / 1000, runs_a
  printf "(b) nix copy --from ssh://:       %6.2f s (rounds, ms: %s)\n", s / 1000, runs_s
  printf "(reference) sftp get -r /cache:   %6.2f s (OpenSSH client, nothing imported; rounds, ms: %s)\n", g / 1000, runs_g
  printf "ratio bento/(a): %.2fx (target: <= 1.3x: %s)\n", b / a, b <= 1.3 * a ? "met" : "NOT met"
  printf "ratio bento/(b): %.2fx (target: < 1x: %s)\n", b / s, b < s ? "met" : "NOT met"
  printf "bytes: the agent counted %.1f MB over sftp; web1/cache holds %.1f MB (%d NARs): %.3fx\n", got / 1e6, cache / 1e6, nars, got / cache
  printf "one path changed: %.2f s (rounds, ms: %s), %.1f kB over sftp; a no-change poll: %.2f s\n", u / 1000, runs_u, ub / 1e3, p / 1000
  printf "  connect + bundle %.2f s, fetch %.2f s, import %.2f s, profile + switch + report %.2f s\n", U[1] / 1000, U[2] / 1000, U[3] / 1000, U[4] / 1000
  printf "target: under 1 s + one poll = %.2f s: %s\n", 1 + p / 1000, u < 1000 + p ? "met" : "NOT met"
}'
