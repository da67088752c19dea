#!/usr/bin/env bash
# Rollout benchmark: `bento rollout` of HOSTS hosts in 3 waves to a local server root, with
# real agents (`bento agent --once`, no-op rebuild) pulling as the waves are published.
#
#   bench/rollout.sh [HOSTS] [RUNS]         defaults: 100 hosts; 7 runs per health-check side
#   BENTO=path/to/bento bench/rollout.sh    time that binary instead of a fresh release build
#
# The fleet: host001…hostNNN, each with its own ed25519 key and configuration; waves
# [["host001"], ["@early"] (host002…host010), ["*"]], wait = "10min". A driver loop runs
# the agents of every host over and over (4 at a time) while the rollout runs, so each
# wave's hosts pull and report shortly after it is published.
#
# 1. Per wave boundary: the time from the last report of wave N landing on the server (the
#    newest report file's ctime among its hosts: when it got its name) to wave N+1's
#    publish (the earliest ctime of `current` among its hosts: when it was renamed into
#    place; its mtime is when it was staged, before the syncs); split, with the rollout's
#    own output time-stamped as it comes and the mtimes of the new generations' files, into
#    noticing the wave healthy, staging the next wave and switching it. Target: under 1 s
#    plus one status read, measured separately (`bento status --json` of the whole root,
#    median of 5).
# 2. The cost of health checks to an agent run applying a new generation: host001's agent
#    without [health], and with [health] commands = [["true"]], settle = "1s" (RUNS each,
#    interleaved, medians). settle is at least 1 s by design: the cost beyond it (run time
#    minus 1 s, minus the run without checks) is printed apart.
# No root needed. Needs: cargo, ssh-keygen.
set -euo pipefail
hosts=${1:-100}
runs=${2:-7}
(( hosts >= 11 )) || { echo "bench/rollout.sh needs at least 11 hosts (3 waves)" >&2; exit 1; }
cd "$(dirname "$0")/.."
if [[ -n ${BENTO:-} ]]; then
  bento=$(realpath "$BENTO")
else
  cargo build --release --quiet
  bento=$PWD/target/release/bento
fi
work=$(mktemp -d)
driver=
cleanup() {
  if [[ -n $driver ]]; then
    touch "$work/stop"
    wait "$driver" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

now() { echo "${EPOCHREALTIME/./}000"; } # nanoseconds, to the microsecond, without a fork
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
mtime_ns() { stat -c '%.9Y' "$@" | tr -d . ; } # one line per file, nanoseconds since the epoch
ctime_ns() { stat -c '%.9Z' "$@" | tr -d . ; } # the same for the inode change: a rename into place
name() { printf 'host%03d' "$1"; }

fleet=$work/fleet
server=$work/server
agents=$work/agents
mkdir -p "$fleet" "$server" "$agents" && (cd "$fleet" && "$bento" init >/dev/null 2>&1)
ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin"
cp "$work/admin.pub" "$fleet/keys/admins/admin.pub"
admin_pub=$(cat "$work/admin.pub")
early=$(for i in $(seq 2 10); do printf '"%s", ' "$(name "$i")"; done)
printf '[deploy]\nsigning_key = "%s"\n\n[rollout]\nwaves = [["host001"], ["@early"], ["*"]]\nwait = "10min"\n' \
  "$work/admin" >"$fleet/bento.toml"
printf 'admins = ["admin"]\n\n[groups]\nearly = [%s]\n' "${early%, }" >"$fleet/secrets/secrets.toml"
echo "setting up $hosts hosts…" >&2
all=()
for i in $(seq 1 "$hosts"); do
  h=$(name "$i")
  all+=("$h")
  a=$agents/$h
  mkdir -p "$fleet/hosts/$h" "$a"
  ssh-keygen -q -t ed25519 -N '' -C "$h" -f "$a/key"
  cp "$a/key.pub" "$fleet/keys/hosts/$h.pub"
  echo "{ networking.hostName = \"$h\"; }" >"$fleet/hosts/$h/configuration.nix"
  mkdir -p "$a/system-0" && ln -s system-0 "$a/system"
  cat >"$a/agent.toml" <<EOF
host = "$h"
server = "file://$server"
identity = "$a/key"
trusted_keys = ["$admin_pub"]
state_dir = "$a/state"
secrets_root = "$a/run"
rebuild = "true"
rollback = "true"
activate = "true"
current_system = "$a/system"
booted_system = "$a/system"
EOF
done

# One agent run: its end time and how it went, one line appended per run.
cat >"$work/agent-run" <<EOF
#!/usr/bin/env bash
"$bento" agent --once --config "$agents/\$1/agent.toml" >/dev/null 2>"$agents/\$1/err"
rc=\$?
echo "\$1 \$(date +%s%N) \$rc" >>"$work/runs.log"
EOF
chmod +x "$work/agent-run"
: >"$work/runs.log"
printf '%s\n' "${all[@]}" >"$work/hosts"
drive() { # every host's agent, 4 at a time, pass after pass, until $work/stop exists
  while [[ ! -e $work/stop ]]; do
    xargs -P 4 -n 1 "$work/agent-run" <"$work/hosts"
    echo "pass $(now)" >>"$work/passes.log"
  done
}

load=$(cut -d' ' -f1-3 /proc/loadavg)
drive &
driver=$!
t0=$(now)
"$bento" --fleet "$fleet" rollout --server-root "$server" 2>"$work/rollout.err" \
  | while IFS= read -r line; do echo "$(now) $line"; done >"$work/rollout.out" \
  || { cat "$work/rollout.out" "$work/rollout.err" >&2; exit 1; }
t1=$(now)
touch "$work/stop"
wait "$driver"
driver=
grep -q 'wave 3/3: healthy' "$work/rollout.out" || { cat "$work/rollout.out" "$work/rollout.err" >&2; exit 1; }

waves=("host001" "$(printf '%s\n' "${all[@]:1:9}")" "$(printf '%s\n' "${all[@]:10}")")
last_report() { # HOSTS (newline-separated): when the last of their reports landed
  local h files=()
  for h in $1; do files+=("$server/$h"/logs/report-*.json); done
  ctime_ns "${files[@]}" | sort -n | tail -1
}
first_current() { # HOSTS: when the first of their `current` was renamed into place
  local h files=()
  for h in $1; do files+=("$server/$h/current"); done
  ctime_ns "${files[@]}" | sort -n | head -1
}
last_current() { # HOSTS: when the last of their `current` was renamed into place
  local h files=()
  for h in $1; do files+=("$server/$h/current"); done
  ctime_ns "${files[@]}" | sort -n | tail -1
}
first_written() { # HOSTS: the earliest file of their new generations written
  local h files=()
  for h in $1; do files+=("$server/$h/generations/$(cat "$server/$h/current")"/*); done
  mtime_ns "${files[@]}" | sort -n | head -1
}
said() { awk -v s="$1" '$0 ~ s { print $1; exit }' "$work/rollout.out"; } # when the rollout said it

# One status read of the whole root: the rollout makes one every 500 ms while it waits.
reads=()
for _ in 1 2 3 4 5 6; do
  s0=$(now)
  "$bento" --fleet "$fleet" status --json --server-root "$server" >/dev/null || true
  reads+=($(( ($(now) - s0) / 1000 )))
done
read_us=$(median "${reads[@]:1}")
target_ms=$(( 1000 + (read_us + 999) / 1000 ))
ms() { awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e6 }'; }

passes=$(grep -c '^pass' "$work/passes.log" || true)
agent_runs=$(wc -l <"$work/runs.log")
echo "rollout of $hosts hosts in 3 waves (1, 9, $(( hosts - 10 )) hosts): $(( (t1 - t0) / 1000000 )) ms in all (load average: $load)"
echo "driver: $agent_runs agent runs in $passes passes over all hosts, 4 at a time: $(( (t1 - t0) / 1000000 / (passes > 0 ? passes : 1) )) ms per pass"
echo "one status read of $hosts hosts (bento status --json, median of 5 after a warm-up): $(ms $(( read_us * 1000 ))) ms"
for n in 1 2 3; do
  printf 'wave %d (%d host(s)): from its first current to its last report %s ms (the agents pulling)\n' "$n" \
    "$(wc -w <<<"${waves[n - 1]}")" "$(ms $(( $(last_report "${waves[n - 1]}") - $(first_current "${waves[n - 1]}") )))"
done
for n in 1 2; do
  landed=$(last_report "${waves[n - 1]}")
  healthy=$(said "wave $n/3: healthy")
  written=$(first_written "${waves[n]}")
  published=$(first_current "${waves[n]}")
  done_at=$(last_current "${waves[n]}")
  gap=$(( (published - landed) / 1000000 ))
  verdict=met; (( gap < target_ms )) || verdict="NOT met"
  printf 'wave %d -> %d: last report to next publish %s ms (target: < 1 s + one status read = %d ms: %s)\n' \
    "$n" $(( n + 1 )) "$(ms $(( published - landed )))" "$target_ms" "$verdict"
  printf '        said healthy at +%s ms; wave %d: first file staged +%s ms, first current switched +%s ms, last +%s ms\n' \
    "$(ms $(( healthy - landed )))" $(( n + 1 )) "$(ms $(( written - landed )))" "$(ms $(( published - landed )))" \
    "$(ms $(( done_at - landed )))"
done

# Health checks: host001 applies a new generation per run, without and with [health].
a=$agents/host001
cp "$a/agent.toml" "$a/plain.toml"
{ cat "$a/agent.toml"; printf '\n[health]\ncommands = [["true"]]\nsettle = "1s"\ntimeout = "5s"\n'; } >"$a/health.toml"
apply() { # CONFIG N: microseconds of one agent run applying a fresh generation (the N-th change) of host001
  echo "{ networking.hostName = \"host001\"; environment.etc.bench.text = \"$2\"; }" \
    >"$fleet/hosts/host001/configuration.nix"
  "$bento" --fleet "$fleet" deploy --server-root "$server" host001 >/dev/null 2>&1
  local g s
  g=$(cat "$server/host001/current")
  s=$(now)
  "$bento" agent --once --config "$1" >/dev/null 2>"$a/err" || { cat "$a/err" >&2; exit 1; }
  echo $(( ($(now) - s) / 1000 ))
  [[ $(readlink "$a/state/current") == "bundles/$g" ]] || { echo "host001 did not apply generation $g" >&2; exit 1; }
}
plain=() health=()
for r in $(seq 1 "$runs"); do
  plain+=("$(apply "$a/plain.toml" "p$r")")
  health+=("$(apply "$a/health.toml" "h$r")")
done
p=$(median "${plain[@]}") c=$(median "${health[@]}")
echo "one bento agent --once of host001 applying a generation just deployed, medians of $runs:"
echo "  without [health]:                           $(ms $(( p * 1000 ))) ms"
echo "  with commands = [[\"true\"]], settle = \"1s\":  $(ms $(( c * 1000 ))) ms = 1000 ms settle + $(ms $(( (c - 1000000) * 1000 ))) ms"
echo "  the health checks beyond the settle time:   $(ms $(( (c - 1000000 - p) * 1000 ))) ms (settle is 1 s at least, by design)"
