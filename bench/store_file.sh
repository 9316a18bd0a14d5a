#!/usr/bin/env bash
#
# bench/store_file.sh - what durable storage costs: postern + store_file
# (the default, a group commit of the files themselves; "journal": true,
# a write-ahead journal; "fsync": false) as a ratio to postern + discard, same
# binary, same load, same run. The load is smtp-source with many messages
# per connection (-d), 10 KB payloads, 50 sessions. Rounds alternate the
# setups so the noise of a shared machine hits all alike. Prints the
# median msg/s of each and the ratios; also how many durability points
# (group commits) the fsync runs needed. See bench/README.md. Not a test:
# nothing here passes or fails on speed.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES  [10000] messages per run
#   BENCH_SESSIONS  [50]    parallel SMTP sessions (smtp-source -s)
#   BENCH_SIZE      [10240] payload bytes (smtp-source -l)
#   BENCH_ROUNDS    [3]     rounds of discard / fsync / no fsync
#   BENCH_THREADS   []      store_file "threads" (default: the shared pool)
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
build=${BENCH_BUILD_DIR:-$repo/build-bench}
run_timeout=${BENCH_TIMEOUT:-300}
baseline=${BENCH_BASELINE_MODULES:-}
setups="discard fsync journal nofsync"
[ -n "$baseline" ] && setups="discard baseline fsync journal nofsync"

bench_name=bench-store
. "$here/lib.sh" # log, die, free_port, wait_port

export PATH="$PATH:/usr/sbin:/sbin"
command -v smtp-source >/dev/null || die "smtp-source not found (apt-get install postfix; postfix stop)"
command -v python3 >/dev/null || die "python3 not found (free port finder)"

if [ ! -f "$build/build.ninja" ]; then
    log "meson setup $build (release)"
    meson setup "$build" "$repo" --buildtype=release -Dtests=false >/dev/null
else
    meson configure "$build" --buildtype=release -Dtests=false >/dev/null
fi
ninja -C "$build" >/dev/null
postern_bin=$build/postern

work=$(mktemp -d "${TMPDIR:-/tmp}/postern-bench-store.XXXXXX")
maildir_base=${BENCH_MAILDIR:-$work}
pg_pid=
cleanup() {
    if [ -n "$pg_pid" ]; then kill "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
    rm -rf "$maildir_base"/done-* "$maildir_base"/create-cost.* "$work"
}
trap cleanup EXIT



# run_setup NAME: one postern, one load; prints msg/s.
run_setup() {
    local name=$1 dir=$work/$1 port start end stored maildir extra= modules=$build/modules
    [ "$name" = baseline ] && modules=$baseline
    rm -rf "$dir"; mkdir -p "$dir/plugins.d" "$dir/spool"
    maildir=$maildir_base/maildir-$name
    rm -rf "$maildir"
    port=$(free_port)
    cat >"$dir/postern.json" <<JSON
{
  "hostname": "bench.postern.test",
  "listen": [{"address": "127.0.0.1", "port": $port, "tls": "none"}],
  "limits": {"connections": 2000, "message_size": 104857600},
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
    nofsync) printf '{"module": "store_file"%s, "config": {"root": "%s", "fsync": false}}\n' "$extra" "$maildir" >"$dir/plugins.d/50-store.json" ;;
    esac
    "$postern_bin" -c "$dir/postern.json" >/dev/null 2>"$dir/postern.log" &
    pg_pid=$!
    wait_port "$port" "$pg_pid" || die "postern did not start: $(tail -5 "$dir/postern.log")"
    wait_ready "$dir/postern.log" "$pg_pid" || die "postern's workers did not all start: $(tail -5 "$dir/postern.log")"
    start=$(date +%s.%N)
    timeout "$run_timeout" smtp-source -d -s "$sessions" -m "$messages" -l "$size" \
        -M bench.client -f a@example.org -t b@example.com "127.0.0.1:$port" \
        >"$dir/source.out" 2>&1 || { cat "$dir/source.out" >&2; die "smtp-source failed ($name)"; }
    end=$(date +%s.%N)
    kill -TERM "$pg_pid"; wait "$pg_pid" 2>/dev/null || true; pg_pid=
    if [ "$name" != discard ]; then
        stored=$(find "$maildir/new" -type f | wc -l)
        [ "$stored" -eq "$messages" ] || die "store_file ($name) stored $stored of $messages"
        grep -o 'group commit.*' "$dir/postern.log" | tail -1 >"$dir/commits" || true
        cp "$dir/commits" "$work/commits-$name" 2>/dev/null || true
        # Removed at the end, not here: on a file system mounted with
        # "discard", freeing thousands of files makes the next journal
        # commits (the next setup's) slow.
        mv "$maildir" "$maildir_base/done-$name-$RANDOM$RANDOM"
    fi
    awk -v n="$messages" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f\n", n / (b - a) }'
}

declare -A rates
for r in $(seq 1 "$rounds"); do
    # What creating a file costs right now (see create_cost.py): a round
    # after a large delete in this file system is slow for every setup
    # that stores.
    log "round $r: $(python3 "$here/create_cost.py" "$maildir_base" 200) µs per file created in $maildir_base"
    for name in $setups; do
        rate=$(run_setup "$name")
        rates[$name]="${rates[$name]:-} $rate"
        log "round $r $name: $rate msg/s"
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
d=$(echo "${rates[discard]}" | median)
printf '\nstore_file vs discard: %d messages, %d sessions, %d-byte payload, many per connection, %s CPUs, median of %d rounds\n\n' \
    "$messages" "$sessions" "$size" "$(nproc)" "$rounds"
printf '%-30s %10s %7s\n' setup "msg/s" ratio
for name in $setups; do
    m=$(echo "${rates[$name]}" | median)
    label=$name
    [ "$name" = discard ] && label="discard"
    [ "$name" = fsync ] && label="store_file (fsync)"
    [ "$name" = journal ] && label='store_file ("journal": true)'
    [ "$name" = nofsync ] && label='store_file ("fsync": false)'
    [ "$name" = baseline ] && label="store_file (fsync), baseline"
    printf '%-30s %10s %7s\n' "$label" "$m" "$(awk -v a="$m" -v b="$d" 'BEGIN { printf "%.2f", a / b }')"
done
for name in fsync journal; do
    if [ -f "$work/commits-$name" ]; then
        printf '\nstore_file (%s), last round: %s\n' "$name" "$(cat "$work/commits-$name")"
    fi
done
