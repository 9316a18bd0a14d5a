#!/usr/bin/env bash
#
# bench/store_file.sh - what durable storage costs: postern + store_file
# (the default, a group commit of the files themselves; "journal": true,
# a write-ahead journal; "envelope": false, one file per message with fsync,
# the cheapest layout; "fsync": false) as a ratio to postern + discard, same
# binary, same load, same run. The load is smtp-source with many messages
# per connection (-d), 10 KB payloads, 50 sessions. Rounds alternate the
# setups so the noise of a shared machine hits all alike. Prints the
# median msg/s of each and the ratios; also how many durability points
# (group commits) the fsync runs needed, the CPU time each setup spent per
# message (all CPUs), and the floor: the same files and durability points
# made by bench/fs_floor.c alone, with no SMTP and no postern, so the part
# of store_file's cost that is the file system's shows. Each run starts
# with a sync, so no run pays for the writeback of the one before. See
# bench/README.md. Not a test: nothing here passes or fails on speed.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES  [10000] messages per run
#   BENCH_SESSIONS  [50]    parallel SMTP sessions (smtp-source -s)
#   BENCH_SIZE      [10240] payload bytes (smtp-source -l)
#   BENCH_ROUNDS    [3]     rounds of discard / fsync / no fsync
#   BENCH_THREADS   []      store_file "threads" (default: the shared pool)
#   BENCH_WORKERS   []      postern "workers" (default: one per CPU;
#                           bench/run.sh's throughput rows run 1)
#   BENCH_MAILDIR   []      directory for the maildirs (default: the work
#                           dir under /tmp); put it on the disk to measure
#   BENCH_BASELINE_MODULES []  a modules/ directory holding another build
#                           of store_file.so (say, of the previous commit):
#                           adds a "baseline" setup (fsync on) loading it,
#                           with the same postern binary, to compare
#   BENCH_BUILD_DIR [<repo>/build-bench]
#   BENCH_TIMEOUT   [300]   seconds before a single run is abandoned
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
messages=${BENCH_MESSAGES:-10000}
sessions=${BENCH_SESSIONS:-50}
size=${BENCH_SIZE:-10240}
rounds=${BENCH_ROUNDS:-3}
threads=${BENCH_THREADS:-}
workers=${BENCH_WORKERS:-}
workers_json=
[ -n "$workers" ] && workers_json=" \"workers\": $workers,"
build=${BENCH_BUILD_DIR:-$repo/build-bench}
run_timeout=${BENCH_TIMEOUT:-300}
baseline=${BENCH_BASELINE_MODULES:-}
setups="discard fsync journal noenvelope nofsync"
[ -n "$baseline" ] && setups="discard baseline fsync journal noenvelope nofsync"

bench_name=bench-store
. "$here/lib.sh" # log, die, free_port, wait_port

export PATH="$PATH:/usr/sbin:/sbin"
command -v smtp-source >/dev/null || die "smtp-source not found (apt-get install postfix; postfix stop)"
command -v python3 >/dev/null || die "python3 not found (free port finder)"
command -v cc >/dev/null || die "cc not found (builds bench/fs_floor.c)"

if [ ! -f "$build/build.ninja" ]; then
    log "meson setup $build (release)"
    meson setup "$build" "$repo" --buildtype=release -Dtests=false >/dev/null
else
    meson configure "$build" --buildtype=release -Dtests=false >/dev/null
fi
ninja -C "$build" >/dev/null
postern_bin=$build/postern
floor_bin=$build/fs_floor
cc -O2 -Wall -o "$floor_bin" "$here/fs_floor.c" || die "cannot build bench/fs_floor.c"

work=$(mktemp -d "${TMPDIR:-/tmp}/postern-bench-store.XXXXXX")
maildir_base=${BENCH_MAILDIR:-$work}
pg_pid=
cleanup() {
    if [ -n "$pg_pid" ]; then kill "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
    rm -rf "$maildir_base"/done-* "$maildir_base"/create-cost.* "$work"
}
trap cleanup EXIT



# CPU time of all CPUs so far, in clock ticks (not idle, not iowait).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# run_setup NAME: one postern, one load; sets rate (msg/s) and cpu (CPU
# microseconds per message, all CPUs). Not run in a subshell, so die()
# ends the script and cleanup() sees pg_pid.
run_setup() {
    local name=$1 dir=$work/$1 port start end stored maildir extra= modules=$build/modules
    [ "$name" = baseline ] && modules=$baseline
    rm -rf "$dir"; mkdir -p "$dir/plugins.d" "$dir/spool"
    maildir=$maildir_base/maildir-$name
    rm -rf "$maildir"
    port=$(free_port)
    cat >"$dir/postern.json" <<JSON
{
  "hostname": "bench.postern.test",$workers_json
  "listen": [{"address": "127.0.0.1", "port": $port, "tls": "none"}],
  "limits": {"connections": 2000, "message_size": 104857600},
  "dns": {"reverse": false},
  "spool_dir": "$dir/spool",
  "plugins_dir": "$dir/plugins.d",
  "module_path": ["$modules"]
}
JSON
    [ -n "$threads" ] && extra=", \"threads\": $threads"
    case $name in
    discard) echo '{"module": "discard"}' >"$dir/plugins.d/50-discard.json" ;;
    fsync|baseline) printf '{"module": "store_file"%s, "config": {"root": "%s"}}\n' "$extra" "$maildir" >"$dir/plugins.d/50-store.json" ;;
    journal) printf '{"module": "store_file"%s, "config": {"root": "%s", "journal": true}}\n' "$extra" "$maildir" >"$dir/plugins.d/50-store.json" ;;
    noenvelope) printf '{"module": "store_file"%s, "config": {"root": "%s", "envelope": false}}\n' "$extra" "$maildir" >"$dir/plugins.d/50-store.json" ;;
    nofsync) printf '{"module": "store_file"%s, "config": {"root": "%s", "fsync": false}}\n' "$extra" "$maildir" >"$dir/plugins.d/50-store.json" ;;
    esac
    "$postern_bin" -c "$dir/postern.json" >/dev/null 2>"$dir/postern.log" &
    pg_pid=$!
    wait_port "$port" "$pg_pid" || die "postern did not start: $(tail -5 "$dir/postern.log")"
    wait_ready "$dir/postern.log" "$pg_pid" || die "postern's workers did not all start: $(tail -5 "$dir/postern.log")"
    sync # the writeback of earlier runs is not this run's
    busy0=$(busy_ticks)
    start=$(date +%s.%N)
    timeout "$run_timeout" smtp-source -d -s "$sessions" -m "$messages" -l "$size" \
        -M bench.client -f a@example.org -t b@example.com "127.0.0.1:$port" \
        >"$dir/source.out" 2>&1 || { cat "$dir/source.out" >&2; die "smtp-source failed ($name)"; }
    end=$(date +%s.%N)
    busy1=$(busy_ticks)
    kill -TERM "$pg_pid"; wait "$pg_pid" 2>/dev/null || true; pg_pid=
    if [ "$name" != discard ]; then
        stored=$(find "$maildir/new" -type f | wc -l)
        [ "$stored" -eq "$messages" ] || die "store_file ($name) stored $stored of $messages"
        # One line per worker.
        grep -o 'group commit.*' "$dir/postern.log" >"$dir/commits" || true
        cp "$dir/commits" "$work/commits-$name" 2>/dev/null || true
        # What fs_floor should write: the sizes store_file wrote.
        if [ "$name" = fsync ]; then
            find "$maildir/new" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s / NR }' >"$work/message-bytes"
            find "$maildir/envelope" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s / NR }' >"$work/envelope-bytes"
        fi
        # Removed at the end, not here: on a file system mounted with
        # "discard", freeing thousands of files makes the next journal
        # commits (the next setup's) slow.
        mv "$maildir" "$maildir_base/done-$name-$RANDOM$RANDOM"
    fi
    read -r rate cpu < <(awk -v n="$messages" -v a="$start" -v b="$end" -v t="$((busy1 - busy0))" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f %.0f\n", n / (b - a), t * 1e6 / hz / n }')
}

# run_floor: fs_floor with the sizes and the batch of the last fsync run;
# prints its CPU microseconds per message.
run_floor() {
    local batch=16 dir=$maildir_base/floor-$RANDOM$RANDOM
    if [ -f "$work/commits-fsync" ]; then
        # Deliveries per commit over all workers.
        batch=$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] } }
            END { b = v["batches"] ? v["deliveries"] / v["batches"] : 16; printf "%.0f\n", b < 1 ? 1 : b }' "$work/commits-fsync")
    fi
    sync
    "$floor_bin" "$dir" "$messages" "$(cat "$work/message-bytes" 2>/dev/null || echo "$size")" \
        "$(cat "$work/envelope-bytes" 2>/dev/null || echo 300)" "$batch" | awk '{ print $2 }'
    echo "$batch" >"$work/floor-batch"
    mv "$dir" "$maildir_base/done-floor-$RANDOM$RANDOM"
}

declare -A rates cpus
floors=
for r in $(seq 1 "$rounds"); do
    # What creating a file costs right now (see create_cost.py): a round
    # after a large delete in this file system is slow for every setup
    # that stores.
    log "round $r: $(python3 "$here/create_cost.py" "$maildir_base" 200) µs per file created in $maildir_base"
    for name in $setups; do
        run_setup "$name"
        rates[$name]="${rates[$name]:-} $rate"
        cpus[$name]="${cpus[$name]:-} $cpu"
        log "round $r $name: $rate msg/s, $cpu µs CPU per message"
    done
    floor=$(run_floor)
    floors="$floors $floor"
    log "round $r floor (fs_floor, batches of $(cat "$work/floor-batch")): $floor µs CPU per message"
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
d=$(echo "${rates[discard]}" | median)
printf '\nstore_file vs discard: %d messages, %d sessions, %d-byte payload, many per connection, %s CPUs, %s worker(s), median of %d rounds\n\n' \
    "$messages" "$sessions" "$size" "$(nproc)" "${workers:-$(nproc)}" "$rounds"
printf '%-32s %10s %7s %16s\n' setup "msg/s" ratio "CPU µs/msg"
for name in $setups; do
    m=$(echo "${rates[$name]}" | median)
    label=$name
    [ "$name" = discard ] && label="discard"
    [ "$name" = fsync ] && label="store_file (fsync)"
    [ "$name" = journal ] && label='store_file ("journal": true)'
    [ "$name" = noenvelope ] && label='store_file ("envelope": false)'
    [ "$name" = nofsync ] && label='store_file ("fsync": false)'
    [ "$name" = baseline ] && label="store_file (fsync), baseline"
    printf '%-32s %10s %7s %15s\n' "$label" "$m" "$(awk -v a="$m" -v b="$d" 'BEGIN { printf "%.2f", a / b }')" \
        "$(echo "${cpus[$name]}" | median)"
done
fl=$(echo "$floors" | median)
dc=$(echo "${cpus[discard]}" | median)
fc=$(echo "${cpus[fsync]}" | median)
printf '\nfloor: fs_floor makes the same files and durability points alone (one thread, no SMTP,\n'
printf 'batches as the fsync runs committed, %s in the last round): %s µs CPU per message. discard + floor = %s µs, so a store adding nothing\n' \
    "$(cat "$work/floor-batch")" "$fl" "$((dc + fl))"
printf 'of its own would reach about %s of discard at equal CPU use; store_file (fsync) spends\n' \
    "$(awk -v d="$dc" -v f="$fl" 'BEGIN { printf "%.2f", d / (d + f) }')"
printf '%s µs per message beyond discard + floor.\n' "$((fc - dc - fl))"
for name in fsync journal noenvelope; do
    if [ -f "$work/commits-$name" ]; then
        printf '\nstore_file (%s), last round, per worker:\n' "$name"
        sed 's/^/  /' "$work/commits-$name"
    fi
done
