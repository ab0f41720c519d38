#!/usr/bin/env bash
# Where mfad's time goes: a profile of mfad during a sequential run and
# during a 32-client run, and the system calls of one login.
#
#   bash bench/profile.sh [--quick] [--keep]    # as root, on Debian 12
#
# Runs bench/run.sh --profile: the benchmark's setup (release build, scratch
# directory, mfad on SQLite with the benchmark's config, the PAM services
# under libpam-wrapper, the users enrolled), then this file instead of the
# scenarios. It writes, each with the commands that made it at the top:
#   bench/profile-sequential.txt  perf record of mfad (call stacks by DWARF
#                                 unwinding) during PROFILE_SEQ_CALLS logins of
#                                 one user, one after another (5,000; --quick 500)
#   bench/profile-32clients.txt   the same during the 32-client throughput run
#                                 (32 x 250 logins; --quick 32 x 25)
#                                 Each run is made first without perf, for its
#                                 latency and mfad's CPU time per login (from
#                                 /proc) undisturbed, then under perf.
#   bench/profile-placement.txt   the sequential and the no-code logins with
#                                 mfad and the client where the scheduler
#                                 puts them, both on CPU 0, and on a CPU
#                                 each (taskset): latency and mfad's user and
#                                 system CPU time per login; then mfad's
#                                 user-space time alone by activity (perf
#                                 record -e cpu-clock:u)
#   bench/profile-switches.txt    why mfad's threads leave the CPU, per login
#                                 (perf's sched_switch with kernel stacks): in
#                                 which system call each sleeps, and who
#                                 preempts it; sequential, 32 clients, no-code
#   bench/strace-login.txt        strace -c -f of one login from the PAM
#                                 client's side (pamtester), the module's own
#                                 system calls in a login, and mfad's system
#                                 calls (strace -f -p) for a verified login
#                                 and for one that needs no code; made first,
#                                 while mfad has only its starting threads
# Each profile holds `perf report --stdio --no-children` (top 40 symbols) and
# mfad's CPU time per login by activity (bench/profile_buckets.py).
#
# perf record -g would unwind by frame pointers, which neither the release
# build nor Rust's standard library keeps: user-space stacks would stop at
# their first frame. --call-graph dwarf (which implies -g) unwinds them.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then exec bash "$(dirname "$0")/run.sh" --profile "$@"; fi

# ---------------------------------------------------------------- sourced by run.sh --profile
PROF=$SCRATCH/profile
mkdir -p "$PROF"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+changes')"
# The first lines of every file written here.
about() {
  echo "# made by bench/profile.sh (bench/run.sh --profile) on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT"
  echo "# machine: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r);" \
    "scratch on $(df --output=source,fstype "$SCRATCH" | tail -1 | tr -s ' '); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# mfad: $SCRATCH/mfad/mfad.toml as in bench/run.sh (SQLite, WAL, synchronous=FULL; HOTP, max_tries 1)"
}

# mfad's CPU time so far (user + system, all its threads, the exited ones
# included), in µs.
mfad_cpu_us() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1000000 / hz }' "/proc/$MAIN_PID/stat"
}

# perf_start DATA PERF_RECORD_ARGS...: perf record ARGS -o DATA in the
# background (its messages in DATA.log), attached to every thread once this
# returns; perf_stop ends it and waits for it to write DATA.
perf_start() {
  local data=$1
  shift
  perf record "$@" -o "$data" >"$data.log" 2>&1 &
  PERF_PID=$!
  PIDS+=("$PERF_PID")
  sleep 2
}
perf_stop() {
  kill -INT "$PERF_PID"
  wait "$PERF_PID" || true
}

# profile NAME PER_USER LABEL PAM_BENCH_ARGS...: the pam_bench run (its
# users at the counters of $SECRETS, PER_USER logins each) once without perf
# and once more (the next codes) under perf record of mfad (all its threads,
# those started during the run included); then bench/profile-NAME.txt.
profile() {
  local name=$1 per_user=$2 label=$3 data=$PROF/$1.data plain profiled cpu0 cpu1 cpu2
  shift 3
  local next=$PROF/secrets-$name
  awk -v n="$per_user" '{ print $1, $2, $3 + n }' "$SECRETS" >"$next"
  local record=(--call-graph dwarf -F 4000 -p "$MAIN_PID")
  local report=(perf report -i "$data" --stdio --no-children --sort dso,sym -g none --percent-limit 0.4)
  local script=(perf script -i "$data" -F comm,tid,period,ip,sym)
  echo "== profile: $label"
  cpu0=$(mfad_cpu_us)
  run "$label" "$OURS" mfa --secret-file "$SECRETS" "$@"
  plain=$(tail -1 "$RESULTS")
  cpu1=$(mfad_cpu_us)
  perf_start "$data" "${record[@]}"
  cpu1=$(mfad_cpu_us)
  run "$label" "$OURS" mfa --secret-file "$next" "$@"
  profiled=$(tail -1 "$RESULTS")
  cpu2=$(mfad_cpu_us)
  perf_stop
  local logins
  logins=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["successes"] + json.loads(sys.argv[1])["failures"])' "$profiled")
  {
    about
    echo "# while: pam_bench --service mfa --secret-file SECRETS $* (under libpam-wrapper, as run.sh runs it)"
    echo "# without perf, pam_bench said: $plain"
    echo "#   mfad's CPU (/proc/MFAD_PID/stat, user + system): $(python3 -c 'import json, sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) / (json.loads(sys.argv[3])["successes"] + json.loads(sys.argv[3])["failures"]), 1))' "$cpu0" "$cpu1" "$plain") µs per login"
    echo "# under perf (the next codes), pam_bench said: $profiled"
    echo "#   mfad's CPU under perf: $(python3 -c 'import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) / int(sys.argv[3]), 1))' "$cpu1" "$cpu2" "$logins") µs per login (perf's sampling and stack copies included)"
    echo "#"
    echo "# \$ perf record ${record[*]} -o $data" | sed "s|$SCRATCH|SCRATCH|g; s|-p $MAIN_PID|-p MFAD_PID|"
    echo "# \$ ${report[*]} | grep -v '^#' | grep -v '^\$' | head -40" | sed "s|$SCRATCH|SCRATCH|g"
    echo "# (the sampled time is on-CPU time only; waits for the disk or for a request are not in it)"
    echo
    # Read to their end (awk and sed, not grep -m1 or head, which close the
    # pipe early: perf's SIGPIPE would end the run, under pipefail).
    "${report[@]}" 2>/dev/null | awk '/^# Samples/ && !seen++'
    "${report[@]}" 2>/dev/null | grep -v '^#' | grep -v '^$' | sed -n '1,40p' | cut -c1-160
    echo
    echo "# mfad's CPU time by activity, from the same samples' call stacks:"
    echo "# \$ ${script[*]} | python3 bench/profile_buckets.py $logins" | sed "s|$SCRATCH|SCRATCH|g"
    echo
    "${script[@]}" 2>/dev/null | python3 "$ROOT/bench/profile_buckets.py" "$logins"
  } >"$ROOT/bench/profile-$name.txt"
  echo "   wrote bench/profile-$name.txt"
}

# ---------------------------------------------------------------- strace of one login
# First, while mfad has only the threads it starts with (the 32-client run
# leaves idle pool threads behind for a while). A user of its own, at
# counter 1; pamtester reads the code from stdin.
echo "== strace: one login"
enroll_at "$MAIN/mfad.sock" strace1
CODE=$(oathtool -b --hotp -c 1 "$SECRET")
# strace_mfad NAME: mfad's side (strace -f -p, every thread) from now on,
# into $PROF/NAME.strace; end_strace_mfad detaches it.
strace_mfad() {
  strace -f -tt -T -p "$MAIN_PID" -o "$PROF/$1.strace" 2>"$PROF/$1.strace.log" &
  strace_pid=$!
  PIDS+=("$strace_pid")
  sleep 2 # attached to every thread
}
end_strace_mfad() {
  sleep 1
  kill -INT "$strace_pid"
  wait "$strace_pid" || true
}
# mfad_login NAME: the calls of $PROF/NAME.strace from the accept of the
# login's connection to its close, then their count by name.
mfad_login() {
  python3 - "$PROF/$1.strace" "$SCRATCH" >"$PROF/$1.login" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
# A thread waiting in accept when strace attached shows only its end.
start = next((i for i, l in enumerate(lines) if re.search(r"accept4(\(| resumed>).*\) = \d+", l)), None)
if start is None:
    sys.exit()
fd = re.search(r"\) = (\d+)", lines[start]).group(1)
end = next((i for i in range(start, len(lines)) if re.search(rf"close\({fd}\)", lines[i])), len(lines) - 1)
for l in lines[start:end + 1]:
    if "restart_syscall" not in l and "+++ exited" not in l:
        print(l.replace(sys.argv[2], "SCRATCH")[:200])
EOF
  cat "$PROF/$1.login"
  echo
  echo "# mfad's system calls in that login, by name (a call interrupted by another thread's line counts once):"
  sed -E 's/^[0-9]+ +[0-9:.]+ +//; s/\(.*//' "$PROF/$1.login" | grep -v -e '^<\.\.\.' -e '^---' |
    sort | uniq -c | sort -rn | awk '{ printf "%s %s; ", $1, $2 } END { print "" }'
  echo "# threads that made them: $(awk '{ print $1 }' "$PROF/$1.login" | sort -u | wc -l);" \
    "calls that wake another thread (futex FUTEX_WAKE, eventfd write): $(grep -c -e 'FUTEX_WAKE' -e 'write([0-9]*, "\\1\\0\\0\\0\\0\\0\\0\\0", 8)' "$PROF/$1.login");" \
    "threads started: $(grep -c 'clone3(' "$PROF/$1.login")"
}

strace_mfad mfad
strace -c -f -o "$PROF/client.count" \
  env PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$SVC" LD_PRELOAD="$WRAPPER" pamtester mfa strace1 authenticate \
  <<<"$CODE" >"$PROF/pamtester.out" 2>&1 || true
end_strace_mfad
# A login that needs no code (user not enrolled), mfad's side.
strace_mfad nocode
env PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$SVC" LD_PRELOAD="$WRAPPER" pamtester mfa-nocode not_enrolled authenticate \
  </dev/null >"$PROF/pamtester-nocode.out" 2>&1 || true
end_strace_mfad
# The same login again (next code), traced call by call: the module's part.
CODE=$(oathtool -b --hotp -c 2 "$SECRET")
strace -f -tt -T -o "$PROF/client.strace" \
  env PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$SVC" LD_PRELOAD="$WRAPPER" pamtester mfa strace1 authenticate \
  <<<"$CODE" >"$PROF/pamtester2.out" 2>&1 || true
{
  about
  echo "# One login of user strace1 (HOTP, counter 1) through the mfa service: pamtester reads the code from stdin."
  echo "# pamtester said: $(tr '\n' ' ' <"$PROF/pamtester.out")(the second login: $(tr '\n' ' ' <"$PROF/pamtester2.out"))"
  echo
  echo "## 1. The PAM client's side, whole process (pamtester start, libpam-wrapper, pam_start, one pam_authenticate, pam_end)"
  echo "# \$ strace -c -f -o OUT env PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=SCRATCH/pam.d LD_PRELOAD=libpam_wrapper.so pamtester mfa strace1 authenticate <<<CODE"
  echo
  cat "$PROF/client.count"
  echo
  echo "## 2. The module's own system calls in that login (a second login, code at counter 2, traced call by call:"
  echo "##    from its socket to mfad until that socket is closed; -T times include strace's own slowdown)"
  echo "# \$ strace -f -tt -T -o OUT env ... pamtester mfa strace1 authenticate <<<CODE"
  echo
  python3 - "$PROF/client.strace" "$MAIN/mfad.sock" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
sock = sys.argv[2]
# The socket the module connects to mfad with: from its socket() to its close().
start = next((i for i, l in enumerate(lines) if "connect(" in l and sock in l), None)
if start is None:
    print("(no connect to mfad's socket in the trace)")
    sys.exit()
fd = re.search(r"connect\((\d+),", lines[start]).group(1)
begin = start
while begin > 0 and not re.search(r"socket\(AF_UNIX", lines[begin]):
    begin -= 1
end = next((i for i in range(start, len(lines)) if re.search(rf"close\({fd}\)", lines[i])), len(lines) - 1)
print(f"{end - begin + 1} system calls from socket() to close({fd}):")
for l in lines[begin:end + 1]:
    print(re.sub(r"^\d+ +", "", l)[:200].replace(sock, "SCRATCH/mfad/mfad.sock"))
EOF
  echo
  echo "## 3. mfad's side of the first login: every thread, call by call, from the accept (-T: time in the call;"
  echo "##    a wait (epoll_wait, futex) lasts until the next event)"
  echo "# \$ strace -f -tt -T -p MFAD_PID -o OUT   (attached before the login, detached after;"
  echo "#   shown from the accept4 of the login's connection to its close)"
  echo
  mfad_login mfad
  echo
  echo "## 4. mfad's side of a login that needs no code (user not_enrolled, service mfa-nocode), the same way"
  echo "# pamtester said: $(tr '\n' ' ' <"$PROF/pamtester-nocode.out")"
  echo "# \$ strace -f -tt -T -p MFAD_PID -o OUT   while: pamtester mfa-nocode not_enrolled authenticate"
  echo
  mfad_login nocode
} >"$ROOT/bench/strace-login.txt"
echo "   wrote bench/strace-login.txt"

# ---------------------------------------------------------------- the profiles
profile sequential "$PROFILE_SEQ_CALLS" "(a) sequential, 1 user" \
  --users seq1 --iterations "$PROFILE_SEQ_CALLS"
profile 32clients "${TP_CALLS[32]}" "(b) throughput, 32 clients" \
  --users "$(printf 'tp32_%s,' {1..32})" --procs 32 --iterations "${TP_CALLS[32]}"

# ---------------------------------------------------------------- placement
# Where the processes run: the scheduler's choice, both on CPU 0 (neither
# ever waits for the other's vCPU to wake), or one CPU each (every hand-off
# crosses). Fresh users (counter 1) for each run. taskset -a sets every
# mfad thread; the threads it starts later inherit the set.
PLACE_CALLS=$((PROFILE_SEQ_CALLS / 2))
mfad_ticks() { awk '{ print $14, $15 }' "/proc/$MAIN_PID/stat"; }
# placed LABEL MFAD_CPUS CLIENT_CPUS PAM_BENCH_ARGS...: one row of the table.
placed() {
  local label=$1 mfad_cpus=$2 client_cpus=$3 before after line
  shift 3
  taskset -a -p -c "$mfad_cpus" "$MAIN_PID" >/dev/null
  before=$(mfad_ticks)
  line=$(PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=$SVC LD_PRELOAD=$WRAPPER taskset -c "$client_cpus" \
    "$BIN/pam_bench" --scenario "$label" --module "$OURS" "$@")
  after=$(mfad_ticks)
  python3 -c 'import json, sys
d = json.loads(sys.argv[1])
(u0, s0), (u1, s1) = (map(int, t.split()) for t in sys.argv[2:4])
n, us = d["successes"] + d["failures"], 1e6 / int(sys.argv[4])
print("| {} | {} | {} | {:,} | {:.1f} | {:.1f} | {:.0f} | {:.0f} |".format(d["scenario"], sys.argv[5], sys.argv[6], n,
      d["median_us"], d["p99_us"], (u1 - u0) * us / n, (s1 - s0) * us / n))' \
    "$line" "$before" "$after" "$(getconf CLK_TCK)" "$mfad_cpus" "$client_cpus"
}
echo "== placement"
for p in free cpu0 split; do
  accounts "place_$p"
  enroll_at "$MAIN/mfad.sock" "place_$p"
done
{
  about
  echo "# \$ taskset -a -p -c MFAD_CPUS MFAD_PID; taskset -c CLIENT_CPUS pam_bench --service mfa --users place_X --iterations $PLACE_CALLS"
  echo "#   (and --service mfa-nocode --users not_enrolled --no-code --iterations $PLACE_CALLS), under libpam-wrapper as run.sh runs it;"
  echo "#   mfad's CPU time from /proc/MFAD_PID/stat (utime, stime: clock ticks of 1/$(getconf CLK_TCK) s, so +-$((1000000 / $(getconf CLK_TCK) / PLACE_CALLS)) µs)"
  echo
  echo "| scenario | mfad's CPUs | client's CPUs | logins | median µs | p99 µs | mfad user µs/login | mfad system µs/login |"
  echo "|---|---|---|---:|---:|---:|---:|---:|"
  placed "(a) sequential, 1 user" 0,1 0,1 --service mfa --users place_free --secret-file "$SECRETS" --iterations "$PLACE_CALLS"
  placed "(a) sequential, 1 user" 0 0 --service mfa --users place_cpu0 --secret-file "$SECRETS" --iterations "$PLACE_CALLS"
  placed "(a) sequential, 1 user" 1 0 --service mfa --users place_split --secret-file "$SECRETS" --iterations "$PLACE_CALLS"
  for cpus in "0,1 0,1" "0 0" "1 0"; do
    # shellcheck disable=SC2086 # two words: mfad's CPUs, the client's
    placed "(f) no-code round trip" $cpus --service mfa-nocode --users not_enrolled --no-code --iterations "$PLACE_CALLS"
  done
  taskset -a -p -c 0,1 "$MAIN_PID" >/dev/null
} >"$PROF/placement.md"
# mfad's user-space time alone: no kernel samples, so none of the time a
# VM spends switching tasks, waking vCPUs or reprogramming perf's timer.
accounts place_user
enroll_at "$MAIN/mfad.sock" place_user
user_data=$PROF/user.data
perf_start "$user_data" -e cpu-clock:u --call-graph dwarf -F 4000 -p "$MAIN_PID"
pam_bench --scenario "(a) sequential, 1 user" --module "$OURS" --service mfa --users place_user \
  --secret-file "$SECRETS" --iterations "$PLACE_CALLS" >"$PROF/user.run"
perf_stop
{
  cat "$PROF/placement.md"
  echo
  echo "# mfad's user-space CPU time by activity during $PLACE_CALLS sequential logins (perf's own cost included):"
  echo "# \$ perf record -e cpu-clock:u --call-graph dwarf -F 4000 -p MFAD_PID -o SCRATCH/profile/user.data"
  echo "# \$ perf script -i SCRATCH/profile/user.data -F comm,tid,period,ip,sym | python3 bench/profile_buckets.py $PLACE_CALLS"
  echo "# pam_bench said: $(cat "$PROF/user.run")"
  echo
  perf script -i "$user_data" -F comm,tid,period,ip,sym 2>/dev/null | python3 "$ROOT/bench/profile_buckets.py" "$PLACE_CALLS"
} >"$ROOT/bench/profile-placement.txt"
echo "   wrote bench/profile-placement.txt"

# ---------------------------------------------------------------- task switches
# Why mfad's threads leave the CPU, per login: each switch is a sleep and
# a wakeup (or a preemption), which on this VM costs tens of µs when the
# other vCPU must be woken. perf's sched_switch tracepoint with kernel call
# stacks says in which system call each thread stopped, and who took the
# CPU from a thread that was still runnable. Fresh users (counter 1).
SWITCH_SEQ=$((PROFILE_SEQ_CALLS / 5)) SWITCH_PER_CLIENT=$((TP_CALLS[32] / 5)) SWITCH_NOCODE=$((PROFILE_SEQ_CALLS / 2))
accounts switch_seq
enroll_at "$MAIN/mfad.sock" switch_seq
for ((i = 1; i <= 32; i++)); do
  accounts "switch32_$i"
  enroll_at "$MAIN/mfad.sock" "switch32_$i"
done
# switches NAME LOGINS LABEL PAM_BENCH_ARGS...: one section of the file.
switches() {
  local name=$1 logins=$2 label=$3 data=$PROF/switches-$1.data
  shift 3
  perf_start "$data" -e sched:sched_switch -g -p "$MAIN_PID"
  pam_bench --scenario "$label" --module "$OURS" "$@" >"$PROF/switches-$name.run"
  perf_stop
  echo "## $label: pam_bench $*"
  echo "# pam_bench said: $(cat "$PROF/switches-$name.run")"
  perf script -i "$data" -F comm,tid,event,trace,ip,sym 2>/dev/null | python3 "$ROOT/bench/profile_switches.py" "$logins"
  echo
}
echo "== task switches"
{
  about
  echo "# \$ perf record -e sched:sched_switch -g -p MFAD_PID -o SCRATCH/profile/switches-NAME.data   (during each run below)"
  echo "# \$ perf script -i SCRATCH/profile/switches-NAME.data -F comm,tid,event,trace,ip,sym | python3 bench/profile_switches.py LOGINS"
  echo "# state S: went to sleep waiting (a request, a connection, a lock); D: waited for the disk; R: preempted while runnable"
  echo
  switches seq "$SWITCH_SEQ" "(a) sequential, 1 user" \
    --service mfa --users switch_seq --secret-file "$SECRETS" --iterations "$SWITCH_SEQ"
  switches 32clients $((32 * SWITCH_PER_CLIENT)) "(b) throughput, 32 clients" \
    --service mfa --users "$(printf 'switch32_%s,' {1..32})" --secret-file "$SECRETS" --procs 32 --iterations "$SWITCH_PER_CLIENT"
  switches nocode "$SWITCH_NOCODE" "(f) no-code round trip" \
    --service mfa-nocode --users not_enrolled --no-code --iterations "$SWITCH_NOCODE"
} >"$ROOT/bench/profile-switches.txt"
echo "   wrote bench/profile-switches.txt"

# ---------------------------------------------------------------- one login's path
# A sequential login step by step, through mfad, through the ideal daemon
# and through the ideal daemon with the product's own I/O (bench_ideal,
# started here as run.sh starts them for the scenarios; the last sends its
# two audit lines to mfad's sink): every system call of the machine traced
# (raw_syscalls), and bench/profile_timeline.py follows each login from the
# client's connect through the two requests and the daemon's sync call to
# the client's next connect. Fresh users (counter 1).
TIMELINE_CALLS=$((PROFILE_SEQ_CALLS / 5))
"$BIN/bench_ideal" "$PROF/ideal.sock" "$PROF/ideal.state" &
PIDS+=($!)
"$BIN/bench_ideal" "$PROF/ideal-lines.sock" "$PROF/ideal-lines.db" --sqlite --syslog "$SCRATCH/mfad-log" &
PIDS+=($!)
wait_for_socket "$PROF/ideal.sock"
wait_for_socket "$PROF/ideal-lines.sock"
service ideal "auth required $BIN/libpam_mfa.so socket=$PROF/ideal.sock"
service ideal-lines "auth required $BIN/libpam_mfa.so socket=$PROF/ideal-lines.sock"
accounts timeline_ours timeline_ideal timeline_lines
enroll_at "$MAIN/mfad.sock" timeline_ours
enroll_at "$MAIN/mfad.sock" timeline_ideal
enroll_at "$MAIN/mfad.sock" timeline_lines
# timeline NAME DAEMON_COMM LABEL PAM_BENCH_ARGS...: one section of the file.
timeline() {
  local name=$1 daemon=$2 label=$3 data=$PROF/timeline-$1.data
  shift 3
  perf_start "$data" -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -a
  pam_bench --scenario "(a) sequential, 1 user" --module "$label" "$@" >"$PROF/timeline-$name.run"
  perf_stop
  echo "## $label: pam_bench $*"
  echo "# pam_bench said (traced): $(cat "$PROF/timeline-$name.run")"
  perf script -i "$data" -F comm,tid,time,event,trace 2>/dev/null | python3 "$ROOT/bench/profile_timeline.py" pam_bench "$daemon"
  echo
}
echo "== one login's path"
{
  about
  echo "# \$ perf record -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -a -o SCRATCH/profile/timeline-NAME.data   (during each run below)"
  echo "# \$ perf script -i SCRATCH/profile/timeline-NAME.data -F comm,tid,time,event,trace | python3 bench/profile_timeline.py pam_bench DAEMON_COMM"
  echo "# (every system call traced: each costs a few µs more than untraced, so compare the two daemons, not the benchmark's medians)"
  echo
  timeline ours mfad "$OURS" --service mfa --users timeline_ours --secret-file "$SECRETS" --iterations "$TIMELINE_CALLS"
  timeline ideal bench_ideal "ideal daemon (I/O only)" \
    --service ideal --users timeline_ideal --secret-file "$SECRETS" --iterations "$TIMELINE_CALLS"
  timeline ideal-lines bench_ideal "ideal + SQLite + 2 audit lines" \
    --service ideal-lines --users timeline_lines --secret-file "$SECRETS" --iterations "$TIMELINE_CALLS"
} >"$ROOT/bench/profile-timeline.txt"
echo "   wrote bench/profile-timeline.txt"

# ---------------------------------------------------------------- the audit lines' share
# What delivering a login's two audit lines to a syslog daemon costs its
# latency: a second mfad, the same config, whose lines go to its stderr (a
# file: no process to wake) because its syslog socket does not exist;
# sequential runs on the two, alternating. Fresh users (counter 1).
AUDIT_CALLS=$((PROFILE_SEQ_CALLS / 5)) AUDIT_ROUNDS=4
MFAD_SYSLOG=$PROF/no-syslog start_mfad "$PROF/quiet"
accounts audit_sink audit_quiet audit_warm
enroll_at "$MAIN/mfad.sock" audit_sink
enroll_at "$PROF/quiet/mfad.sock" audit_quiet
enroll_at "$PROF/quiet/mfad.sock" audit_warm
service mfa-quiet "auth required $BIN/libpam_mfa.so socket=$PROF/quiet/mfad.sock"
# Its store past its WAL's first checkpoint, as the main one is by now (see
# run.sh, the warm-up).
pam_bench --service mfa-quiet --users audit_warm --secret-file "$SECRETS" --iterations 1100 >/dev/null
echo "== the audit lines' share"
{
  about
  echo "# A second mfad (SCRATCH/profile/quiet, the same config) started with --syslog-socket on a path where nothing listens:"
  echo "# its audit lines go to its stderr, a file; its store warmed as the main one's (1,100 logins of another user)."
  echo "# $AUDIT_ROUNDS rounds, each: $AUDIT_CALLS sequential logins through each mfad,"
  echo "# in turn (the first of a round alternates):"
  echo "# \$ pam_bench --service mfa --users audit_sink ...; pam_bench --service mfa-quiet --users audit_quiet ..." | sed "s|$SCRATCH|SCRATCH|g"
  echo
  echo "| round | lines to the syslog sink: median µs | lines to a file: median µs | difference µs |"
  echo "|---:|---:|---:|---:|"
  for ((r = 1; r <= AUDIT_ROUNDS; r++)); do
    declare -A median=()
    if ((r % 2)); then order=(mfa mfa-quiet); else order=(mfa-quiet mfa); fi
    for svc in "${order[@]}"; do
      user=audit_sink
      [[ $svc == mfa-quiet ]] && user=audit_quiet
      awk -v u="$user" -v n=$(((r - 1) * AUDIT_CALLS)) '$1 == u { print $1, $2, $3 + n }' "$SECRETS" >"$PROF/secrets-audit"
      median[$svc]=$(pam_bench --scenario "(a) sequential, 1 user" --module "$OURS" --service "$svc" --users "$user" \
        --secret-file "$PROF/secrets-audit" --iterations "$AUDIT_CALLS" |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["median_us"] if d["failures"] == 0 else "failed")')
    done
    python3 -c 'import sys; a, b = sys.argv[2:4]; print(f"| {sys.argv[1]} | {a} | {b} | {float(a) - float(b):.1f} |")' \
      "$r" "${median[mfa]}" "${median[mfa-quiet]}"
  done
} >"$ROOT/bench/profile-audit.txt"
echo "   wrote bench/profile-audit.txt"
