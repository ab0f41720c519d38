#!/usr/bin/env bash
# Benchmark: pam_mfa + mfad side by side with google-authenticator-libpam and
# pam_oath, through one PAM client (tests/src/bin/pam_bench/: a loop of
# pam_authenticate answering each prompt with the next HOTP code from
# oathtool), in one run on one machine. Prints one table plus the ratios
# ours / google-authenticator and the targets met or not.
# Then the fleet: mfad on PostgreSQL (a scratch cluster of this run's own),
# one daemon and two daemons on one database, and the fleet targets.
# First, and again at the end, it measures the floor under a login on this
# machine and the scratch file system: one fdatasync of a small write, one
# SQLite WAL commit of one row (mfad's pragmas), one Unix socket round trip
# (bench_floor, floor_sqlite.py); the report gives our figures against them.
# Beside ours, the same module against the ideal daemon (bench_ideal: canned
# answers and one fdatasync per verified login, nothing else): what any
# daemon costs this client at the least; and against the ideal daemon doing
# the I/O the product itself must do, a SQLite commit instead of the bare
# fdatasync and audit lines to the syslog sink (two per login as mfad's, or
# one): what a daemon with this store and this audit trail costs at least.
#
#   bench/run.sh [--quick] [--keep] [--profile | --rounds R]   # as root, on Debian 12
#
#   --quick    small sizes (a smoke run of a few minutes)
#   --keep     keep the scratch directory (results.jsonl, logs, stores)
#   --rounds R instead of the scenarios: the speed targets' three scenarios
#              (sequential, 32 clients, no code) in R interleaved rounds,
#              each running ours, google-authenticator and the ideal
#              daemons once, in an order rotating from round to round, so
#              that the machine's drift touches them alike; the targets
#              judged by the median of the rounds' ratios (bench/rounds.py)
#   --profile  instead of the scenarios (same setup, no PostgreSQL): perf
#              record of mfad (DWARF call stacks) during a sequential run
#              and a 32-client run, strace of one login; writes
#              bench/profile-*.txt and bench/strace-login.txt (this is what
#              bench/profile.sh runs)
#
# Everything lives in a scratch directory (BENCH_DIR, default /var/tmp: on
# disk, so fsync costs what it costs): mfad's config and store, the three PAM
# services (read through libpam-wrapper: the machine's /etc/pam.d is never
# touched), google-authenticator's per-user files and pam_oath's users file,
# and the PostgreSQL cluster (initdb as postgres, Unix socket only, stopped
# at exit).
# If /dev/log does not exist, a sink is bound there for the run (and removed
# afterwards), so modules that call syslog(3) do not fall back to the console.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0 KEEP=0 PROFILE=0 INTERLEAVED=0
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --profile) PROFILE=1 ;;
    --rounds)
      INTERLEAVED=${2:-}
      [[ $INTERLEAVED =~ ^[1-9][0-9]*$ ]] || { echo "--rounds needs a number of rounds, at least 1" >&2; exit 2; }
      shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
((PROFILE && INTERLEAVED)) && { echo "--profile and --rounds are two different runs: give one" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "bench/run.sh: run as root" >&2; exit 1; }

# ---------------------------------------------------------------- sizes
declare -A TP_CALLS # calls per client, by number of clients
if ((QUICK)); then
  SEQ_CALLS=200 ROUNDS=50 NOCODE_CALLS=500 SCALE_CALLS=200
  TP_CALLS=([1]=200 [8]=50 [32]=25)
  SCALE_OURS=(1 10000) SCALE_OATH=(1 1000 10000)
  FLOOR_SYNC=500 FLOOR_RTT=5000 PROFILE_SEQ_CALLS=500
  ROUND_SEQ_CALLS=100 ROUND_TP32_CALLS=20 ROUND_NOCODE_CALLS=200
else
  SEQ_CALLS=2000 ROUNDS=1000 NOCODE_CALLS=5000 SCALE_CALLS=2000
  TP_CALLS=([1]=2000 [8]=500 [32]=250)
  SCALE_OURS=(1 10000 1000000) SCALE_OATH=(1 1000 100000)
  FLOOR_SYNC=2000 FLOOR_RTT=20000 PROFILE_SEQ_CALLS=5000
  # Per module and round (32 clients: per client).
  ROUND_SEQ_CALLS=500 ROUND_TP32_CALLS=100 ROUND_NOCODE_CALLS=1000
fi
# pam_oath rewrites its whole users file on every login: fewer calls on big files.
oath_scale_calls() { if (($1 >= 100000)); then echo 200; elif (($1 >= 10000)); then echo 500; else echo "$SCALE_CALLS"; fi; }

# ---------------------------------------------------------------- packages and build
packages=(libpam-google-authenticator libpam-oath oathtool libpam-wrapper libpam0g-dev libclang-dev python3 postgresql)
if ((PROFILE)); then packages+=(linux-perf strace pamtester); fi
. "$ROOT/tests/ensure-packages.sh"
ensure_packages "${packages[@]}"

echo "== build (release)"
cargo build --release --locked --workspace
# The commit measured: the one built, whatever happens to the tree later.
BUILT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+changes')
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
BIN=$(cd "$BIN" && pwd)
WRAPPER=$(dpkg -L libpam-wrapper | grep '/libpam_wrapper\.so$' | head -1)

# ---------------------------------------------------------------- scratch and cleanup
SCRATCH=$(mktemp -d "${BENCH_DIR:-/var/tmp}/mfa-bench.XXXXXX")
chmod 755 "$SCRATCH"
RESULTS=$SCRATCH/results.jsonl
PIDS=()       # processes this script started, ended by id at exit
OUR_DEVLOG=0  # 1 when this run bound /dev/log
PG_STARTED=0  # 1 while this run's PostgreSQL cluster runs
ACCOUNTS=()   # the system accounts this run created, removed at exit
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if ((PG_STARTED)); then pg_stop || true; fi
  if ((OUR_DEVLOG)) && [[ -S /dev/log ]]; then rm -f /dev/log; fi
  for user in "${ACCOUNTS[@]}"; do userdel "$user" 2>/dev/null || true; done
  if ((KEEP)); then echo "== scratch kept in $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT

wait_for_socket() {
  local i
  for ((i = 0; i < 300; i++)); do [[ -S $1 ]] && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2
  return 1
}

# One JSON line from KEY VALUE pairs (numbers stay numbers).
json_line() {
  python3 -c 'import json, sys
a = sys.argv[1:]
print(json.dumps({k: int(v) if v.isdigit() else v for k, v in zip(a[::2], a[1::2])}))' "$@"
}

# ---------------------------------------------------------------- the floor
# measure_floors WHEN: the floor under a login on this machine, in the
# scratch directory (the stores' file system): bench_floor (fdatasync of a
# small write, a Unix socket round trip) and floor_sqlite.py (one SQLite WAL
# commit with mfad's pragmas); JSON lines tagged "when", kept in results.jsonl.
measure_floors() {
  local when=$1 lines
  if ! lines=$("$BIN/bench_floor" "$SCRATCH" --sync-iterations "$FLOOR_SYNC" --rtt-iterations "$FLOOR_RTT" &&
    python3 bench/floor_sqlite.py "$SCRATCH" "$FLOOR_SYNC"); then
    echo "   FAILED (the message above)"
    json_line kind skipped what "the floor ($when)" reason "bench_floor or floor_sqlite.py failed" >>"$RESULTS"
    return 0
  fi
  python3 -c 'import json, sys
for line in sys.argv[2].splitlines():
    d = json.loads(line)
    d["when"] = sys.argv[1]
    print(json.dumps(d))
    print("   {floor:<16} median {median_us:>8.1f} us  p99 {p99_us:>8.1f} us  ({what})".format(**d), file=sys.stderr)
' "$when" "$lines" 2>&1 >>"$RESULTS"
}

# ---------------------------------------------------------------- syslog sinks
sinks=("$SCRATCH/mfad-log")
if [[ -e /dev/log || -L /dev/log ]]; then
  echo "== /dev/log exists: left as it is"
  python3 -c 'import socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).connect("/dev/log")' 2>/dev/null ||
    echo "   warning: nothing answers on /dev/log: modules that log will fall back to the console"
else
  echo "== /dev/log absent: binding a sink there for the run"
  sinks+=(/dev/log)
  OUR_DEVLOG=1
fi
python3 bench/log_sink.py "${sinks[@]}" &
PIDS+=($!)
for s in "${sinks[@]}"; do wait_for_socket "$s"; done

# ---------------------------------------------------------------- PostgreSQL
# The fleet's database: a scratch cluster of this run's own (TESTING.md,
# "PostgreSQL for tests"), in the scratch directory (on disk), reached over a
# Unix socket only, with the server's defaults for durability (fsync on,
# synchronous_commit on; mfad also sets synchronous_commit = on itself).
PG_BINDIR=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
PG=$SCRATCH/pg PG_PORT=55432
pg_ctl() { runuser -u postgres -- "$PG_BINDIR/pg_ctl" -D "$PG/data" "$@"; }
pg_stop() { pg_ctl -m fast -w -t 60 stop >/dev/null && PG_STARTED=0; }
pg_start() {
  mkdir -p "$PG" && chown postgres "$PG"
  runuser -u postgres -- "$PG_BINDIR/initdb" -D "$PG/data" -A trust -U mfad -E UTF8 --locale=C \
    --no-sync --no-instructions >"$PG/initdb.out" 2>&1 || { cat "$PG/initdb.out" >&2; return 1; }
  cat >>"$PG/data/postgresql.conf" <<EOF
# bench/run.sh
listen_addresses = ''
unix_socket_directories = '$PG'
port = $PG_PORT
fsync = on
synchronous_commit = on
EOF
  pg_ctl -l "$PG/log" -w -t 60 start >/dev/null || { tail -20 "$PG/log" >&2; return 1; }
  PG_STARTED=1
  "$PG_BINDIR/psql" -X -q -h "$PG" -p "$PG_PORT" -U mfad -d postgres -c 'CREATE DATABASE mfa'
}
PG_URL="host=$PG port=$PG_PORT user=mfad dbname=mfa"

# ---------------------------------------------------------------- mfad
# start_mfad DIR [STORE]: a daemon with its config in DIR; its [store] section
# is STORE, by default a SQLite store and key file in DIR. Sets MFAD_PID.
# Its audit lines go to the run's sink, or to the socket MFAD_SYSLOG names.
start_mfad() {
  local dir=$1 store=${2:-}
  [[ -n $store ]] || store="path = \"$dir/mfad.db\"
key_file = \"$dir/secret.key\""
  mkdir -p "$dir"
  cat >"$dir/mfad.toml" <<EOF
enabled = true
socket = "$dir/mfad.sock"
default_level = "always"
default_type = "hotp"
# One code per login conversation, as the peers do.
max_tries = 1

[lockout]
# The contested scenario makes the losers' replays fail by design; the peers
# have no lockout, so neither does this run.
max_failures = 1000000

[store]
$store
EOF
  "$BIN/mfad" --config "$dir/mfad.toml" --syslog-socket "${MFAD_SYSLOG:-$SCRATCH/mfad-log}" >"$dir/mfad.out" 2>&1 &
  MFAD_PID=$!
  PIDS+=("$MFAD_PID")
  wait_for_socket "$dir/mfad.sock" || { cat "$dir/mfad.out" >&2; return 1; }
}
stop_mfad() {
  kill -TERM "$1"
  wait "$1" 2>/dev/null || true
}

MAIN=$SCRATCH/mfad
start_mfad "$MAIN"
MAIN_PID=$MFAD_PID
mfactl() { "$BIN/mfactl" --socket "$MAIN/mfad.sock" "$@"; }

# ---------------------------------------------------------------- PAM services
OURS="pam_mfa (ours)" GA="google-authenticator" OATH="pam_oath" PERMIT="pam_permit (baseline)"
SVC=$SCRATCH/pam.d
mkdir -p "$SVC" "$SCRATCH/ga"
service() { local name=$1; shift; printf '%s\n' "$@" >"$SVC/$name"; }
service mfa "auth required $BIN/libpam_mfa.so socket=$MAIN/mfad.sock"
service ga "auth required pam_google_authenticator.so secret=$SCRATCH/ga/\${USER} user=root no_increment_hotp"
service oath "auth required pam_oath.so usersfile=$SCRATCH/users.oath window=20"
service mfa-nocode "auth required $BIN/libpam_mfa.so socket=$MAIN/mfad.sock" "auth required pam_permit.so"
service permit "auth required pam_permit.so"
service other "auth required pam_deny.so"

# enroll_at SOCKET USER: USER enrolled (HOTP, confirmed with the code at
# counter 0) through the mfad at SOCKET, next counter 1; sets SECRET.
SECRETS=$SCRATCH/secrets
enroll_at() {
  local socket=$1 user=$2
  SECRET=$("$BIN/mfactl" --socket "$socket" --json user setup "$user" --type hotp |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')
  "$BIN/mfactl" --socket "$socket" user setup "$user" --confirm "$(oathtool -b --hotp -c 0 "$SECRET")" >/dev/null
  echo "$user $SECRET 1" >>"$SECRETS"
}
# enroll USER: the same fresh secret for all three modules, next counter 1.
touch "$SCRATCH/users.oath" && chmod 600 "$SCRATCH/users.oath"
enroll() {
  local user=$1 secret
  enroll_at "$MAIN/mfad.sock" "$user"
  secret=$SECRET
  # google-authenticator: HOTP_COUNTER is the next counter accepted.
  printf '%s\n" HOTP_COUNTER 1\n" WINDOW_SIZE 10\n' "$secret" >"$SCRATCH/ga/$user"
  chmod 600 "$SCRATCH/ga/$user"
  # pam_oath: no counter field yet (none used); the window reaches counter 1.
  echo "HOTP $user - $(printf '%s' "$secret" | base32 -d | od -An -v -tx1 | tr -d ' \n')" >>"$SCRATCH/users.oath"
}

pam_bench() {
  PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=$SVC LD_PRELOAD=$WRAPPER "$BIN/pam_bench" "$@"
}
# run LABEL MODULE SERVICE ARGS...: one pam_bench run, kept in results.jsonl.
# With CPU_PID set (a daemon's pid), pam_bench also says where the machine's
# CPU time went while its workers ran (--cpu-of).
run() {
  local label=$1 module=$2 svc=$3 line
  shift 3
  if [[ -n ${CPU_PID:-} ]]; then set -- "$@" --cpu-of "$CPU_PID"; fi
  if ! line=$(pam_bench --scenario "$label" --module "$module" --service "$svc" "$@"); then
    echo "   $label / $module: FAILED (pam_bench's message above)"
    json_line kind skipped what "$label / $module${ROUND:+, round $ROUND}" reason "pam_bench failed" >>"$RESULTS"
    return 0
  fi
  # In --rounds, the line says which round it is of.
  if [[ -n ${ROUND:-} ]]; then
    line=$(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); d["round"] = int(sys.argv[2]); print(json.dumps(d))' \
      "$line" "$ROUND")
  fi
  echo "$line" >>"$RESULTS"
  printf '   %-32s %-22s %s\n' "$label" "$module" \
    "$(python3 -c 'import json, sys
d = json.loads(sys.argv[1])
print("ok {successes} fail {failures} median {median_us} us p99 {p99_us} us {throughput_per_s}/s".format(**d),
      "accepted per round {}".format(d["accepted_per_round"]) if "accepted_per_round" in d else "",
      "by service {}".format(d["successes_by_service"]) if "successes_by_service" in d else "")' "$line")"
}
three() { # three LABEL ARGS...: the same run on ours, google-authenticator, pam_oath
  local label=$1
  shift
  run "$label" "$OURS" mfa "$@"
  run "$label" "$GA" ga "$@"
  run "$label" "$OATH" oath "$@"
}

# The users the scenarios log in as are accounts of this machine, as the
# users of SSH and sudo are: NSS finds them in /etc/passwd. A name NSS does
# not know makes nss-systemd search its userdb directories on every lookup
# (31 files opened, about 90 µs of mfad's CPU per login here), which a
# login for a real account never pays. System accounts without a home or
# a shell, removed at exit; one already there is used and left.
accounts() {
  local user
  for user in "$@"; do
    getent passwd "$user" >/dev/null && continue
    useradd --system --no-create-home --no-user-group --gid nogroup --shell /usr/sbin/nologin "$user"
    ACCOUNTS+=("$user")
  done
}
echo "== system accounts for the benchmark users"
accounts seq1 warm1 strace1 not_enrolled pgseq1 fleetcon con2 con8 con32
for p in 1 8 32; do for ((i = 1; i <= p; i++)); do accounts "tp${p}_$i"; done; done
for ((i = 1; i <= 32; i++)); do accounts "pgtp32_$i" "fleet_$i"; done
# The user each scale population logs in as: its last (bench/gen_users.py).
for n in "${SCALE_OURS[@]}"; do
  width=$((${#n} > 7 ? ${#n} : 7))
  accounts "$(printf "u%0${width}d" "$n")"
done

echo "== enrolling the benchmark users"
enroll seq1
for p in 1 8 32; do for ((i = 1; i <= p; i++)); do enroll "tp${p}_$i"; done; done
for p in 2 8 32; do enroll "con$p"; done

# ---------------------------------------------------------------- --profile
# The profiles instead of the scenarios (bench/profile.sh), then the end.
if ((PROFILE)); then
  . "$ROOT/bench/profile.sh"
  exit 0
fi

# ---------------------------------------------------------------- the fleet
# Two "hosts" on this machine: two mfad processes with their own configs and
# sockets, the same database and the same key file; one PAM service each.
# Host A alone serves the one-daemon PostgreSQL rows. Users are enrolled
# through host A only: host B sees them because nothing is kept per host.
# The fleet rows run right after the SQLite rows they are compared with, so
# that both meet the machine in the same state.
OURS_PG="pam_mfa (ours), PostgreSQL" OURS_FLEET="pam_mfa (ours), PostgreSQL, 2 hosts"
FLEET=0
FLEET_A=$SCRATCH/fleet-a FLEET_B=$SCRATCH/fleet-b
fleet_store="backend = \"postgres\"
url = \"$PG_URL\"
key_file = \"$SCRATCH/fleet.key\""
echo "== PostgreSQL: scratch cluster and two mfad on one database"
if ((INTERLEAVED)); then
  echo "   not in --rounds: the fleet has no speed target against google-authenticator"
elif [[ -z $PG_BINDIR ]]; then
  echo "   skipped: no /usr/lib/postgresql/*/bin"
  json_line kind skipped what "the fleet rows (PostgreSQL)" reason "PostgreSQL is not installed" >>"$RESULTS"
elif ! pg_start; then
  echo "   skipped: the PostgreSQL cluster did not start (above)"
  json_line kind skipped what "the fleet rows (PostgreSQL)" reason "the scratch PostgreSQL cluster did not start" >>"$RESULTS"
elif ! { start_mfad "$FLEET_A" "$fleet_store" && start_mfad "$FLEET_B" "$fleet_store"; }; then
  echo "   skipped: mfad on PostgreSQL did not start (above)"
  json_line kind skipped what "the fleet rows (PostgreSQL)" reason "mfad on PostgreSQL did not start" >>"$RESULTS"
else
  FLEET=1
  PG_VERSION=$("$PG_BINDIR/postgres" --version | sed 's/^postgres (PostgreSQL) //')
  service mfa-pg-a "auth required $BIN/libpam_mfa.so socket=$FLEET_A/mfad.sock"
  service mfa-pg-b "auth required $BIN/libpam_mfa.so socket=$FLEET_B/mfad.sock"
  enroll_at "$FLEET_A/mfad.sock" pgseq1
  for ((i = 1; i <= 32; i++)); do enroll_at "$FLEET_A/mfad.sock" "pgtp32_$i"; done
  for ((i = 1; i <= 32; i++)); do enroll_at "$FLEET_A/mfad.sock" "fleet_$i"; done
  enroll_at "$FLEET_A/mfad.sock" fleetcon
fi
# fleet LABEL MODULE SERVICES ARGS...: a run on the fleet, when it started.
fleet() { if ((FLEET)); then run "$@"; fi; }

# ---------------------------------------------------------------- machine
SIZES="$([[ $QUICK == 1 ]] && echo quick || echo full): sequential $SEQ_CALLS calls, throughput ${TP_CALLS[1]}/${TP_CALLS[8]}/${TP_CALLS[32]} calls per client, contested $ROUNDS rounds, no-code $NOCODE_CALLS calls"
if ((INTERLEAVED)); then
  SIZES="$([[ $QUICK == 1 ]] && echo quick || echo full): $INTERLEAVED rounds of sequential $ROUND_SEQ_CALLS calls, 32 clients x $ROUND_TP32_CALLS calls, no-code $ROUND_NOCODE_CALLS calls"
fi
# Written at the end, with the load average before and after (it counts the
# run's own processes too: 32 clients in the 32-client rows).
machine_line() {
  json_line kind machine date "$STARTED_AT" nproc "$(nproc)" \
    cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    kernel "$(uname -r)" os "$(. /etc/os-release && echo "$PRETTY_NAME")" \
    fs "$(df --output=source,fstype "$SCRATCH" | tail -1 | tr -s ' ')" \
    commit "$BUILT" \
    peers "libpam-google-authenticator $(dpkg-query -W -f='${Version}' libpam-google-authenticator), libpam-oath $(dpkg-query -W -f='${Version}' libpam-oath)" \
    postgres "${PG_VERSION:-not run}" \
    sizes "$SIZES" \
    load_start "$LOAD_START" load_end "$(cut -d' ' -f1-3 /proc/loadavg)" elapsed_s "$SECONDS"
}
# ---------------------------------------------------------------- the ideal daemon
# pam_mfa against a daemon that does only a login's I/O (bench_ideal): its
# requests read, answers encoded once, one fdatasync per verified login
# shared by concurrent logins as mfad's commits are. It accepts any code.
IDEAL="ideal daemon (I/O only)"
"$BIN/bench_ideal" "$SCRATCH/ideal.sock" "$SCRATCH/ideal.state" &
IDEAL_PID=$!
PIDS+=("$IDEAL_PID")
"$BIN/bench_ideal" "$SCRATCH/ideal-nocode.sock" "$SCRATCH/ideal-nocode.state" --no-code &
PIDS+=($!)
# The same with the product's own I/O: a SQLite commit (mfad's pragmas) and
# the audit lines, to mfad's sink; two lines per login as mfad's, or one.
IDEAL_LINES="ideal + SQLite + 2 audit lines"
IDEAL_LINE="ideal + SQLite + 1 audit line"
"$BIN/bench_ideal" "$SCRATCH/ideal-lines.sock" "$SCRATCH/ideal-lines.db" --sqlite --syslog "$SCRATCH/mfad-log" &
IDEAL_LINES_PID=$!
PIDS+=("$IDEAL_LINES_PID")
"$BIN/bench_ideal" "$SCRATCH/ideal-line.sock" "$SCRATCH/ideal-line.db" --sqlite --syslog "$SCRATCH/mfad-log" --one-line &
IDEAL_LINE_PID=$!
PIDS+=("$IDEAL_LINE_PID")
# A login that needs no code with the product's I/O: its one audit line.
IDEAL_NOCODE_LINE="ideal + 1 audit line"
"$BIN/bench_ideal" "$SCRATCH/ideal-nocode-line.sock" "$SCRATCH/ideal-nocode-line.state" --no-code \
  --syslog "$SCRATCH/mfad-log" &
PIDS+=($!)
for name in ideal ideal-nocode ideal-lines ideal-line ideal-nocode-line; do
  wait_for_socket "$SCRATCH/$name.sock"
done
service ideal "auth required $BIN/libpam_mfa.so socket=$SCRATCH/ideal.sock"
service ideal-nocode "auth required $BIN/libpam_mfa.so socket=$SCRATCH/ideal-nocode.sock" "auth required pam_permit.so"
service ideal-lines "auth required $BIN/libpam_mfa.so socket=$SCRATCH/ideal-lines.sock"
service ideal-line "auth required $BIN/libpam_mfa.so socket=$SCRATCH/ideal-line.sock"
service ideal-nocode-line "auth required $BIN/libpam_mfa.so socket=$SCRATCH/ideal-nocode-line.sock" \
  "auth required pam_permit.so"

STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC') LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
SECONDS=0

# ---------------------------------------------------------------- scenarios
# A daemon in service writes its WAL over the blocks the WAL already has:
# SQLite starts it over after each checkpoint (every 1,000 commits). A new
# store's WAL grows until its first checkpoint, and each of those commits'
# fsync also writes the file's new size, one more disk write. The
# scenarios measure the steady state: first 1,100 logins, not recorded.
echo "== warming mfad's store: 1,100 logins (past the WAL's first checkpoint)"
enroll_at "$MAIN/mfad.sock" warm1
pam_bench --service mfa --users warm1 --secret-file "$SECRETS" --iterations 1100 >/dev/null ||
  echo "   warning: the warm-up failed (pam_bench's message above)"

echo "== the floor, at the start: $FLOOR_SYNC syncs and SQLite commits, $FLOOR_RTT socket round trips"
measure_floors start

# ---------------------------------------------------------------- --rounds
# The speed targets' scenarios in interleaved rounds instead of the
# scenarios, then the end. Round n (from 0) runs every module of a scenario
# once, from the (n mod modules)-th on, so each module in turn goes first;
# its users' codes start where round n-1's ended (the secrets file's
# counters moved on by the calls per round).
if ((INTERLEAVED)); then
  rotated() { # rotated N ITEMS...: ITEMS from the (N mod count)-th on, then the rest
    local n=$1
    shift
    local k=$((n % $#))
    printf '%s\n' "${@:k+1}" "${@:1:k}"
  }
  tp32_users=$(printf 'tp32_%s,' {1..32})
  # "MODULE SERVICE": the service is the last word.
  code_modules=("$OURS mfa" "$GA ga" "$IDEAL ideal" "$IDEAL_LINES ideal-lines" "$IDEAL_LINE ideal-line")
  nocode_modules=("$OURS mfa-nocode" "$IDEAL ideal-nocode" "$IDEAL_NOCODE_LINE ideal-nocode-line")
  for ((n = 0; n < INTERLEAVED; n++)); do
    echo "== round $((n + 1)) of $INTERLEAVED"
    awk -v seq=$((n * ROUND_SEQ_CALLS)) -v tp=$((n * ROUND_TP32_CALLS)) \
      '{ print $1, $2, $3 + ($1 ~ /^tp32_/ ? tp : seq) }' "$SECRETS" >"$SCRATCH/secrets.round"
    while read -r entry; do
      ROUND=$n run "(a) sequential, 1 user" "${entry% *}" "${entry##* }" --users seq1 --secret-file "$SCRATCH/secrets.round" \
        --iterations "$ROUND_SEQ_CALLS" </dev/null
    done < <(rotated "$n" "${code_modules[@]}")
    while read -r entry; do
      ROUND=$n run "(b) throughput, 32 clients" "${entry% *}" "${entry##* }" --users "$tp32_users" \
        --secret-file "$SCRATCH/secrets.round" --procs 32 --iterations "$ROUND_TP32_CALLS" </dev/null
    done < <(rotated "$n" "${code_modules[@]}")
    while read -r entry; do
      ROUND=$n run "(f) no-code round trip" "${entry% *}" "${entry##* }" --users not_enrolled --no-code \
        --iterations "$ROUND_NOCODE_CALLS" </dev/null
    done < <(rotated "$n" "${nocode_modules[@]}")
  done
  echo "== the floor, at the end"
  measure_floors end
  machine_line >>"$RESULTS"
  echo
  python3 bench/rounds.py "$RESULTS"
  exit 0
fi

echo "== (a) sequential durable verification, 1 user, $SEQ_CALLS calls"
three "(a) sequential, 1 user" --users seq1 --secret-file "$SECRETS" --iterations "$SEQ_CALLS"
run "(a) sequential, 1 user" "$IDEAL" ideal --users seq1 --secret-file "$SECRETS" --iterations "$SEQ_CALLS"
run "(a) sequential, 1 user" "$IDEAL_LINES" ideal-lines --users seq1 --secret-file "$SECRETS" --iterations "$SEQ_CALLS"
run "(a) sequential, 1 user" "$IDEAL_LINE" ideal-line --users seq1 --secret-file "$SECRETS" --iterations "$SEQ_CALLS"
fleet "(a) sequential, 1 user" "$OURS_PG" mfa-pg-a --users pgseq1 --secret-file "$SECRETS" --iterations "$SEQ_CALLS"

echo "== (b) throughput, concurrent clients on distinct users"
for p in 1 8 32; do
  users=$(for ((i = 1; i <= p; i++)); do printf 'tp%s_%s,' "$p" "$i"; done)
  if ((p == 1)); then plural=; else plural=s; fi
  # At 32 clients the CPU is the limit: where its time goes (for the
  # peers, CPU_PID is mfad, idle then).
  cpu_ours= cpu_ideal=
  if ((p == 32)); then cpu_ours=$MAIN_PID cpu_ideal=$IDEAL_PID; fi
  CPU_PID=$cpu_ours three "(b) throughput, $p client$plural" --users "$users" --secret-file "$SECRETS" \
    --procs "$p" --iterations "${TP_CALLS[$p]}"
  CPU_PID=$cpu_ideal run "(b) throughput, $p client$plural" "$IDEAL" ideal --users "$users" --secret-file "$SECRETS" \
    --procs "$p" --iterations "${TP_CALLS[$p]}"
  if ((p == 32)); then
    CPU_PID=$IDEAL_LINES_PID run "(b) throughput, $p clients" "$IDEAL_LINES" ideal-lines --users "$users" \
      --secret-file "$SECRETS" --procs "$p" --iterations "${TP_CALLS[$p]}"
    CPU_PID=$IDEAL_LINE_PID run "(b) throughput, $p clients" "$IDEAL_LINE" ideal-line --users "$users" \
      --secret-file "$SECRETS" --procs "$p" --iterations "${TP_CALLS[$p]}"
  fi
done
fleet "(b) throughput, 32 clients" "$OURS_PG" mfa-pg-a \
  --users "$(printf 'pgtp32_%s,' {1..32})" --secret-file "$SECRETS" --procs 32 --iterations "${TP_CALLS[32]}"
# Worker i goes through host A when i is even, B when odd: 16 clients on each.
fleet "(b) throughput, 32 clients" "$OURS_FLEET" mfa-pg-a,mfa-pg-b \
  --users "$(printf 'fleet_%s,' {1..32})" --secret-file "$SECRETS" --procs 32 --iterations "${TP_CALLS[32]}"

echo "== (c) scale"
label_users() { python3 -c 'import sys; n = int(sys.argv[1]); print(f"(c) scale, {n:,} user" + ("" if n == 1 else "s"))' "$1"; }
for n in "${SCALE_OATH[@]}"; do
  dir=$SCRATCH/oath-scale-$n
  mkdir -p "$dir"
  python3 bench/gen_users.py oath "$n" "$dir/users.oath" "$dir/measured"
  service "oath-scale-$n" "auth required pam_oath.so usersfile=$dir/users.oath window=20"
  run "$(label_users "$n")" "$OATH" "oath-scale-$n" --secret-file "$dir/measured" --iterations "$(oath_scale_calls "$n")"
  rm -rf "$dir"
done
if "$BIN/mfactl" user import --help >/dev/null 2>&1; then
  echo "== (c) scale and (e) resident memory, ours"
  for n in "${SCALE_OURS[@]}"; do
    dir=$SCRATCH/scale-$n
    start_mfad "$dir"
    python3 bench/gen_users.py jsonl "$n" "$dir/users.jsonl" "$dir/measured"
    started=$(date +%s.%N)
    if ! "$BIN/mfactl" --socket "$dir/mfad.sock" user import "$dir/users.jsonl" >"$dir/import.out"; then
      echo "   import of $n users FAILED: $(tail -1 "$dir/import.out")"
      json_line kind skipped what "(c)/(e) ours at $n users" reason "mfactl user import failed" >>"$RESULTS"
      stop_mfad "$MFAD_PID"
      continue
    fi
    import_s=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
    echo "   imported $n user(s) in ${import_s} s"
    service "mfa-scale-$n" "auth required $BIN/libpam_mfa.so socket=$dir/mfad.sock"
    run "$(label_users "$n")" "$OURS" "mfa-scale-$n" --secret-file "$dir/measured" --iterations "$SCALE_CALLS"
    json_line kind rss users "$n" import_s "$import_s" \
      vmrss_kb "$(awk '/^VmRSS:/ {print $2}' "/proc/$MFAD_PID/status")" \
      vmhwm_kb "$(awk '/^VmHWM:/ {print $2}' "/proc/$MFAD_PID/status")" >>"$RESULTS"
    stop_mfad "$MFAD_PID"
    rm -rf "$dir"
  done
else
  echo "   skipped: needs mfactl user import (scale and memory of ours)"
  json_line kind skipped what "(c) scale and (e) resident memory of ours" reason "needs mfactl user import" >>"$RESULTS"
fi

echo "== (d) contested code: the same code from P processes at once, $ROUNDS rounds"
for p in 2 8 32; do
  three "(d) contested, $p procs" --users "con$p" --secret-file "$SECRETS" --procs "$p" --contested --iterations "$ROUNDS"
done
# The same code from 32 processes at once, 16 through each host.
fleet "(d) contested, 32 procs" "$OURS_FLEET" mfa-pg-a,mfa-pg-b \
  --users fleetcon --secret-file "$SECRETS" --procs 32 --contested --iterations "$ROUNDS"

echo "== (f) round trip of a login that needs no code (user not enrolled)"
run "(f) no-code round trip" "$OURS" mfa-nocode --users not_enrolled --no-code --iterations "$NOCODE_CALLS"
run "(f) no-code round trip" "$PERMIT" permit --users not_enrolled --no-code --iterations "$NOCODE_CALLS"
run "(f) no-code round trip" "$IDEAL" ideal-nocode --users not_enrolled --no-code --iterations "$NOCODE_CALLS"
run "(f) no-code round trip" "$IDEAL_NOCODE_LINE" ideal-nocode-line --users not_enrolled --no-code \
  --iterations "$NOCODE_CALLS"

echo "== the floor, at the end"
measure_floors end

machine_line >>"$RESULTS"
echo
python3 bench/report.py "$RESULTS"
