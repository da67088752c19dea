#!/usr/bin/env bash
# Object-storage benchmark: Bento with a Garage node as its server.
#
#   bench/s3.sh [POLLS] [HOSTS]       defaults: 200 polls, 1000 hosts
#   BENTO=path/to/bento bench/s3.sh   time that binary instead of a fresh release build
#
# 1. Server CPU per no-change poll: one host (its own buckets and key, as `bento server
#    setup --s3` prints them), POLLS sequential `bento agent --once` against the generation
#    it applied; Garage's CPU time (user + system of its process, from /proc) over them.
#    Hosts per server core at a 15-minute interval = 900 s / CPU per poll. sshd's figure
#    is bench/poll.sh's (run as root, it is measured here too).
# 2. A deploy of HOSTS hosts (5 configuration files each) into one bucket, a prefix per
#    host (s3://fleet/{host}): the first, then one where nothing changed (target: < 2 s);
#    and the same two into a local server root, for scale.
# Garage listens on loopback only, in a temp dir removed on exit.
# Needs: cargo, garage (scripts/test says where it comes from), ssh-keygen.
set -euo pipefail
polls=${1:-200}
hosts=${2:-1000}
cd "$(dirname "$0")/.."
if ! command -v garage >/dev/null && [ -x ../shared/tools/garage ]; then
  PATH="$(cd ../shared/tools && pwd):$PATH"
fi
command -v garage >/dev/null || { echo "garage is needed (see scripts/test)" >&2; exit 1; }
if [[ -n ${BENTO:-} ]]; then
  bento=$(realpath "$BENTO")
else
  cargo build --release --quiet
  bento=$PWD/target/release/bento
fi
work=$(mktemp -d)
garage_pid=
cleanup() {
  [ -n "$garage_pid" ] && kill "$garage_pid" 2>/dev/null && wait "$garage_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# One Garage node.
s3_port=$(port) rpc_port=$(port) admin_port=$(port)
cat >"$work/garage.toml" <<EOF
metadata_dir = "$work/garage/meta"
data_dir = "$work/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "bench"
EOF
g() { garage -c "$work/garage.toml" "$@"; }
garage -c "$work/garage.toml" server >"$work/garage.log" 2>&1 &
garage_pid=$!
for _ in $(seq 1 100); do g status >/dev/null 2>&1 && break; sleep 0.1; done
g layout assign -z dc1 -c 10G "$(g node id -q | cut -c1-16)" >/dev/null
g layout apply --version 1 >/dev/null
endpoint=http://127.0.0.1:$s3_port

# The admin's key (known values: the bench signs its requests with them).
admin_id=GK00000000000000000000be01
admin_secret=$(printf 'b%.0s' $(seq 64))
g key import --yes -n bento-admin "$admin_id" "$admin_secret" >/dev/null
export AWS_ACCESS_KEY_ID=$admin_id AWS_SECRET_ACCESS_KEY=$admin_secret

# == 1. A no-change poll ==
fleet=$work/fleet1
mkdir -p "$fleet" && (cd "$fleet" && "$bento" init >/dev/null 2>&1)
ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin"
ssh-keygen -q -t ed25519 -N '' -C web1 -f "$work/web1"
cp "$work/admin.pub" "$fleet/keys/admins/admin.pub"
cp "$work/web1.pub" "$fleet/keys/hosts/web1.pub"
url="s3://bento-{host}?endpoint=$endpoint&region=garage&logs=bento-{host}-logs"
printf '[deploy]\nsigning_key = "%s"\ntarget = "%s"\n' "$work/admin" "$url" >"$fleet/bento.toml"
mkdir -p "$fleet/hosts/web1"
echo '{ networking.hostName = "web1"; }' >"$fleet/hosts/web1/configuration.nix"
# What `bento server setup --s3` prints, the admin's key already there.
"$bento" --fleet "$fleet" server setup --s3 | sed 's/#.*//' | while read -r cmd args; do
  [ "$cmd" = garage ] || continue
  case "$args" in
    "key create bento-admin") ;;
    "key create bento-web1") g key import --yes -n bento-web1 GK00000000000000000000be02 "$(printf 'c%.0s' $(seq 64))" >/dev/null ;;
    *) g $args >/dev/null ;;
  esac
done
"$bento" --fleet "$fleet" deploy >/dev/null 2>&1
printf '[default]\naws_access_key_id = GK00000000000000000000be02\naws_secret_access_key = %s\n' \
  "$(printf 'c%.0s' $(seq 64))" >"$work/web1-s3"
chmod 600 "$work/web1-s3"
cat >"$work/agent.toml" <<EOF
host = "web1"
server = "$url"
s3_credentials = "$work/web1-s3"
identity = "$work/web1"
trusted_keys = ["$(cat "$work/admin.pub")"]
state_dir = "$work/state"
secrets_root = "$work/run"
rebuild = "true"
rollback = "false"
current_system = "$work/system"
booted_system = "$work/system"
EOF
"$bento" agent --once --config "$work/agent.toml" >/dev/null 2>"$work/agent.err" \
  || { cat "$work/agent.err" >&2; exit 1; }
[ "$(readlink "$work/state/current")" = bundles/1 ] || { echo "the first agent run did not apply" >&2; exit 1; }
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$garage_pid/stat"; } # Garage's own user + system time
c0=$(ticks); t0=$(now)
for _ in $(seq 1 "$polls"); do
  "$bento" agent --once --config "$work/agent.toml" >/dev/null 2>"$work/agent.err" || { cat "$work/agent.err" >&2; exit 1; }
done
t1=$(now); c1=$(ticks)
cpu_us=$(( (c1 - c0) * 1000000 / hz / polls ))
echo "no-change poll on Garage: $(( (t1 - t0) / 1000 / polls )) us wall, Garage CPU ${cpu_us} us per poll over $polls polls (load: $(cut -d' ' -f1-3 /proc/loadavg))"
awk -v c="$cpu_us" 'BEGIN { if (c < 1) c = 1; printf "hosts per Garage core at a 15-minute interval: %d\n", 900e6 / c }'
if [ "$(id -u)" = 0 ]; then
  echo "sshd, for comparison (bench/poll.sh):"
  BENTO="$bento" bench/poll.sh 20 3 | sed 's/^/  /'
fi

# == 2. A deploy of $hosts hosts ==
fleet=$work/fleet2
mkdir -p "$fleet" && (cd "$fleet" && "$bento" init >/dev/null 2>&1)
cp "$work/admin.pub" "$fleet/keys/admins/admin.pub"
g bucket create fleet >/dev/null
g bucket allow --read --write fleet --key bento-admin >/dev/null
printf '[deploy]\nsigning_key = "%s"\ntarget = "s3://fleet/{host}?endpoint=%s&region=garage"\n' \
  "$work/admin" "$endpoint" >"$fleet/bento.toml"
body=$(head -c 2000 /dev/urandom | base64 -w 76)
echo "laying out $hosts hosts..." >&2
for i in $(seq 1 "$hosts"); do
  ssh-keygen -q -t ed25519 -N '' -C "h$i" -f "$work/h$i"
  cp "$work/h$i.pub" "$fleet/keys/hosts/h$i.pub"
  d=$fleet/hosts/h$i
  mkdir -p "$d/modules"
  echo "{ imports = [ ./modules ]; networking.hostName = \"h$i\"; }" >"$d/configuration.nix"
  for f in 2 3 4 5; do printf '# h%d file %d\n%s\n' "$i" "$f" "$body" >"$d/modules/m$f.nix"; done
done
echo "== deploy of $hosts hosts x 5 files (load: $(cut -d' ' -f1-3 /proc/loadavg)) =="
t0=$(now); "$bento" --fleet "$fleet" deploy >/dev/null 2>"$work/deploy.err" || { cat "$work/deploy.err" >&2; exit 1; }; t1=$(now)
t2=$(now); "$bento" --fleet "$fleet" deploy >/dev/null 2>&1; t3=$(now)
t4=$(now); "$bento" --fleet "$fleet" deploy --server-root "$work/server" >/dev/null 2>&1; t5=$(now)
t6=$(now); "$bento" --fleet "$fleet" deploy --server-root "$work/server" >/dev/null 2>&1; t7=$(now)
echo "to Garage:      first $(ms "$t0" "$t1") ms, unchanged $(ms "$t2" "$t3") ms (target: < 2000 ms)"
echo "to a local root: first $(ms "$t4" "$t5") ms, unchanged $(ms "$t6" "$t7") ms"

# == 3. The same deploy over sftp (root only: sshd with a chroot) ==
if [ "$(id -u)" != 0 ]; then
  echo "over sftp: not measured (run as root for sshd's chroot)"
  exit 0
fi
mkdir -p /srv
root=$(mktemp -d /srv/bento-bench-XXXXXX) # sshd wants a chroot with root-owned parents
chmod 0755 "$root"
sshd_pid=
trap 'cleanup; [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null; rm -rf "$root"' EXIT
uid=64980
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -C publisher -f "$work/publisher"
cp /etc/passwd /etc/group "$work/" && cp /etc/shadow "$work/" 2>/dev/null || : >"$work/shadow"
echo "bento-publish:x:$uid:$uid::/:/usr/sbin/nologin" >>"$work/passwd"
echo "bento-publish:x:$uid:" >>"$work/group"
echo "bento-publish:*:19000:0:99999:7:::" >>"$work/shadow"
mkdir -p "$work/keys" && cp "$work/publisher.pub" "$work/keys/bento-publish" && chmod 0755 "$work/keys"
chmod 0755 "$work" # sshd reads the authorized keys below it as the publishing account
# What `bento server setup` makes for each host: the publishing account owns generations/.
for i in $(seq 1 "$hosts"); do
  mkdir -p "$root/h$i/generations" "$root/h$i/logs"
  chown "$uid:$uid" "$root/h$i/generations"
  ln -s generations/current "$root/h$i/current"
done
sftp_port=$(port)
cat >"$work/sshd_config" <<EOF2
Port $sftp_port
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
MaxStartups 100
Match User bento-publish
  ChrootDirectory $root
  ForceCommand internal-sftp
  DisableForwarding yes
  PermitTTY no
EOF2
unshare --mount --propagation private sh -c "mount --bind $work/passwd /etc/passwd && \
  mount --bind $work/group /etc/group && mount --bind $work/shadow /etc/shadow && \
  mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f $work/sshd_config" 2>"$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$sftp_port") 2>/dev/null && break
  sleep 0.1
done
echo "[127.0.0.1]:$sftp_port $(cat "$work/host_key.pub")" >"$fleet/keys/server_known_hosts"
printf '[deploy]\nsigning_key = "%s"\nlogin_key = "%s"\ntarget = "sftp://bento-publish@127.0.0.1:%s/"\n' \
  "$work/admin" "$work/publisher" "$sftp_port" >"$fleet/bento.toml"
t0=$(now); "$bento" --fleet "$fleet" deploy >/dev/null 2>"$work/deploy.err" || { cat "$work/deploy.err" "$work/sshd.log" >&2; exit 1; }; t1=$(now)
t2=$(now); "$bento" --fleet "$fleet" deploy >/dev/null 2>&1; t3=$(now)
echo "over sftp:      first $(ms "$t0" "$t1") ms, unchanged $(ms "$t2" "$t3") ms"
