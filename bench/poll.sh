#!/usr/bin/env bash
# Poll benchmark: a bento no-change poll (`bento agent --once` against the generation it
# has already applied) vs upstream Bento's poll (one `sftp -b` session reading one file),
# against one local OpenSSH server.
#
#   sudo bench/poll.sh [POLLS] [ROUNDS]        defaults: 20 polls, 5 rounds
#
# sshd listens on 127.0.0.1 only, with one chrooted, sftp-only, key-only user, inside a
# private mount namespace (its passwd/group/shadow are private copies: nothing is added to
# the machine); it is killed and its directories removed on exit. Each round runs POLLS
# sequential polls of each side, interleaved; each side is taken by its median round.
#
# Printed per side: milliseconds per poll (wall clock), and the CPU time sshd spent per
# poll (its children's user + system time, read from /proc). The server's capacity is
# polls per second per server core = 1 / sshd CPU per poll; at a 15-minute interval
# each core serves 900 s / (sshd CPU per poll) hosts.
# BENTO=FILE measures that bento binary instead of building this tree's.
# Needs: root, cargo, sshd, sftp, ssh-keygen, unshare.
set -euo pipefail
polls=${1:-20}
rounds=${2:-5}
[ "$(id -u)" = 0 ] || { echo "bench/poll.sh starts sshd with a chroot: run it as root" >&2; exit 1; }
cd "$(dirname "$0")/.."
if [ -z "${BENTO:-}" ]; then cargo build --release --quiet; fi
bento=${BENTO:-$PWD/target/release/bento} # BENTO=/path/to/bento measures another build
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

# A fleet of one host, deployed into the server root.
mkdir -p "$work/fleet" && (cd "$work/fleet" && "$bento" init >/dev/null 2>&1)
ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin"
ssh-keygen -q -t ed25519 -N '' -C web1 -f "$work/web1"
cp "$work/web1.pub" "$work/fleet/keys/hosts/web1.pub"
cp "$work/admin.pub" "$work/fleet/keys/admins/admin.pub" # the signing key is an admin's
printf '[deploy]\nsigning_key = "%s"\n' "$work/admin" >"$work/fleet/bento.toml"
mkdir -p "$work/fleet/hosts/web1"
echo '{ networking.hostName = "web1"; }' >"$work/fleet/hosts/web1/configuration.nix"
"$bento" --fleet "$work/fleet" deploy --server-root "$root" >/dev/null 2>&1

# sshd: the test suite's setup (tests/e2e/sshd.rs).
uid=64991
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
cp /etc/passwd /etc/group "$work/" && cp /etc/shadow "$work/" 2>/dev/null || : >"$work/shadow"
echo "bentosftp:x:64990:" >>"$work/group"
echo "bento-web1:x:$uid:64990::/:/usr/sbin/nologin" >>"$work/passwd"
echo "bento-web1:*:19000:0:99999:7:::" >>"$work/shadow"
mkdir -p "$work/keys" && cp "$work/web1.pub" "$work/keys/bento-web1" && chmod 0755 "$work/keys"
chown "$uid" "$root/web1/logs"
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
AuthorizedKeysFile $work/keys/%u
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
Match User bento-web1
  ChrootDirectory $root/web1
  ForceCommand internal-sftp
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

cat >"$work/agent.toml" <<EOF
host = "web1"
server = "sftp://bento-web1@127.0.0.1:$port"
identity = "$work/web1"
known_hosts = "$work/known_hosts"
trusted_keys = ["$(cat "$work/admin.pub")"]
state_dir = "$work/state"
secrets_root = "$work/run"
rebuild = "true"
rollback = "false"
current_system = "$work/system"
booted_system = "$work/system"
EOF
"$bento" agent --once --config "$work/agent.toml" >/dev/null 2>"$work/agent.err" \
  || { cat "$work/agent.err" "$work/sshd.log" >&2; exit 1; } # applies generation 1
[ "$(readlink "$work/state/current")" = bundles/1 ] || { echo "the first agent run did not apply" >&2; exit 1; }

# Upstream Bento's poll: the same ssh options (pinned key, batch mode), one file read.
echo "get current $work/current.sftp" >"$work/batch"
sftp_poll() {
  sftp -q -b "$work/batch" -i "$work/web1" -P "$port" -o BatchMode=yes -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$work/known_hosts" \
    -o GlobalKnownHostsFile=/dev/null bento-web1@127.0.0.1 >/dev/null
}
bento_poll() {
  "$bento" agent --once --config "$work/agent.toml" >/dev/null 2>"$work/agent.err" \
    || { cat "$work/agent.err" >&2; exit 1; }
}

now() { date +%s%N; }
ticks() { awk '{print $16 + $17}' "/proc/$sshd_pid/stat"; } # sshd's reaped children: user + system
hz=$(getconf CLK_TCK)
round() { # SIDE: prints "wall_us_per_poll sshd_cpu_us_per_poll"
  local t0 t1 c0 c1
  c0=$(ticks); t0=$(now)
  for _ in $(seq 1 "$polls"); do "$1"; done
  t1=$(now); c1=$(ticks)
  echo "$(( (t1 - t0) / 1000 / polls )) $(( (c1 - c0) * 1000000 / hz / polls ))"
}
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

bento_wall=() bento_cpu=() sftp_wall=() sftp_cpu=()
for _ in $(seq 1 "$rounds"); do
  read -r w c < <(round bento_poll); bento_wall+=("$w"); bento_cpu+=("$c")
  read -r w c < <(round sftp_poll); sftp_wall+=("$w"); sftp_cpu+=("$c")
done
[ "$(cat "$work/current.sftp")" = "$(cat "$root/web1/current")" ]
[ -s "$root/web1/logs/seen.json" ] || { echo "the agent left no heartbeat" >&2; exit 1; }
bw=$(median "${bento_wall[@]}") bc=$(median "${bento_cpu[@]}")
sw=$(median "${sftp_wall[@]}") sc=$(median "${sftp_cpu[@]}")
echo "polls: $rounds rounds of $polls sequential no-change polls per side (load: $(cut -d' ' -f1-3 /proc/loadavg))"
awk -v w="$bw" -v c="$bc" -v runs="${bento_wall[*]}" \
  'BEGIN { printf "bento agent --once:  %6.2f ms/poll, sshd CPU %5.2f ms/poll (rounds, us/poll: %s)\n", w / 1000, c / 1000, runs }'
awk -v w="$sw" -v c="$sc" -v runs="${sftp_wall[*]}" \
  'BEGIN { printf "sftp -b, one file:   %6.2f ms/poll, sshd CPU %5.2f ms/poll (rounds, us/poll: %s)\n", w / 1000, c / 1000, runs }'
awk -v b="$bw" -v s="$sw" -v bc="$bc" -v sc="$sc" 'BEGIN {
  printf "ratio: a bento poll costs %.2fx an sftp poll in wall time, %.2fx in sshd CPU (target: <= 1.2x)\n", b / s, bc / (sc > 0 ? sc : 1)
  printf "sequential polls per second (one client): bento %.0f, sftp %.0f\n", 1e6 / b, 1e6 / s
  if (bc > 0) printf "server capacity: %.0f bento polls/s per sshd core; at a 15-minute interval, %.0f hosts per core\n", 1e6 / bc, 900 * 1e6 / bc
}'
