#!/usr/bin/env bash
#
# bench/instructions.sh - instructions per message, counted by callgrind:
# the event loop's (the worker's main thread, which every session shares)
# and the pool threads', for postern + discard and postern + store_file,
# one worker, the same smtp-source load, counted from the moment the
# worker serves (start-up left out). Instruction counts do not move
# with the machine's load, so this is the figure to compare two builds by
# on a noisy machine, where msg/s cannot tell a few percent apart. It
# counts user-space instructions only: the kernel's work (syscalls, the
# file system) is not in it; bench/store_file.sh measures that side.
# See bench/README.md. Not a test: nothing here passes or fails on speed.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES  [2000]  messages per run
#   BENCH_SESSIONS  [5]     parallel SMTP sessions (smtp-source -s)
#   BENCH_SIZE      [10240] payload bytes (smtp-source -l)
#   BENCH_SETUPS    [discard store_file]  what to run
#   BENCH_BUILD_DIR [<repo>/build-bench]
#   BENCH_TIMEOUT   [600]   seconds before a single run is abandoned
#   BENCH_KEEP      []      non-empty: keep the work directory (the
#                           callgrind files, for callgrind_annotate)
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init instructions

messages=${BENCH_MESSAGES:-2000}
sessions=${BENCH_SESSIONS:-5}
size=${BENCH_SIZE:-10240}
setups=${BENCH_SETUPS:-discard store_file}
run_timeout=${BENCH_TIMEOUT:-600}

command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
command -v callgrind_annotate >/dev/null || die "callgrind_annotate not found (valgrind)"
command -v smtp-source >/dev/null || die "smtp-source not found (apt-get install postfix; postfix stop)"
build_postern

# The instructions a callgrind file counted (its "summary:" line).
counted() { awk '/^summary:/ { print $2; exit }' "$1"; }

# run_setup NAME: sets loop and pool, the instructions per message. Not
# run in a subshell, so die() ends the script and pids reaches cleanup.
run_setup() {
    local name=$1 dir=$work/$1 port
    mkdir -p "$dir/plugins.d" "$dir/spool" "$dir/callgrind"
    port=$(free_port)
    cat >"$dir/postern.json" <<JSON
{
  "hostname": "bench.postern.test", "workers": 1,
  "listen": [{"address": "127.0.0.1", "port": $port, "tls": "none"}],
  "limits": {"connections": 2000, "message_size": 104857600},
  "dns": {"reverse": false},
  "spool_dir": "$dir/spool",
  "plugins_dir": "$dir/plugins.d",
  "module_path": ["$build/modules"]
}
JSON
    case $name in
    discard) echo '{"module": "discard"}' >"$dir/plugins.d/50-discard.json" ;;
    store_file) printf '{"module": "store_file", "config": {"root": "%s"}}\n' "$dir/maildir" \
        >"$dir/plugins.d/50-store.json" ;;
    *) die "unknown setup $name (discard or store_file)" ;;
    esac
    # One file per process and thread: the worker's first thread is
    # its loop, the others its pool.
    valgrind --tool=callgrind --trace-children=yes --separate-threads=yes \
        --callgrind-out-file="$dir/callgrind/out.%p" \
        "$postern_bin" -c "$dir/postern.json" >/dev/null 2>"$dir/postern.log" &
    local pg_pid=$!
    pids+=("$pg_pid")
    local i ready=
    for i in $(seq 1 600); do
        grep -q supervisor_ready "$dir/postern.log" 2>/dev/null && { ready=1; break; }
        kill -0 "$pg_pid" 2>/dev/null || die "postern did not start: $(tail -5 "$dir/postern.log")"
        sleep 0.1
    done
    [ -n "$ready" ] || die "postern's worker did not start within 60 s: $(tail -5 "$dir/postern.log")"
    # Count the load only, not the start-up (loading modules, TLS).
    local procs
    procs=$(pgrep -P "$pg_pid" | tr '\n' ' ')
    callgrind_control -z "$pg_pid" $procs >/dev/null 2>&1 ||
        die "callgrind_control -z failed"
    timeout "$run_timeout" smtp-source -d -s "$sessions" -m "$messages" -l "$size" \
        -M bench.client -f a@example.org -t b@example.com "127.0.0.1:$port" \
        >"$dir/source.out" 2>&1 || { cat "$dir/source.out" >&2; die "smtp-source failed ($name)"; }
    stop "$pg_pid"
    # The worker: the process other than the supervisor (valgrind runs
    # the supervisor as $pg_pid) whose loop counted the most.
    local worker f n
    worker=$(for f in "$dir"/callgrind/out.*-01; do
        [ "$f" = "$dir/callgrind/out.$pg_pid-01" ] || echo "$(counted "$f") $f"
    done | sort -n -r | awk 'NR == 1 { sub(/-01$/, "", $2); print $2 }')
    [ -n "$worker" ] || die "no callgrind file of a worker in $dir/callgrind"
    loop=0 pool=0
    for f in "$worker"-*; do
        n=$(counted "$f")
        case $f in
        *-01) loop=$n ;;
        *) pool=$((pool + n)) ;;
        esac
    done
    loop=$((loop / messages)) pool=$((pool / messages))
}

declare -A loops pools
for name in $setups; do
    run_setup "$name"
    loops[$name]=$loop
    pools[$name]=$pool
    log "$name: $loop instructions per message on the loop, $pool on pool threads"
done

printf '\ninstructions per message (callgrind): %d messages, %d sessions, %d-byte payload, one worker\n\n' \
    "$messages" "$sessions" "$size"
printf '%-12s %12s %12s %12s\n' setup loop pool total
for name in $setups; do
    printf '%-12s %12s %12s %12s\n' "$name" "${loops[$name]}" "${pools[$name]}" \
        "$((loops[$name] + pools[$name]))"
done
