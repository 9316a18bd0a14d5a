#!/usr/bin/env bash
#
# bench/run.sh - throughput of postern against Postfix's smtp-sink, driven
# by smtp-source, on loopback.
#
# Builds a release postern, then for each storage module (discard,
# store_file) and each connection pattern (one message per connection,
# many messages per connection) sends the same load to smtp-sink (a server
# that throws mail away without even parsing it properly: the ceiling) and
# to postern, and prints messages/s, the postern/sink ratio and postern's
# peak RSS. See bench/README.md. Not a test: nothing here passes or fails
# on speed.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES [5000]   messages per run
#   BENCH_SESSIONS [20]     parallel SMTP sessions (smtp-source -s)
#   BENCH_SIZE     [4096]   payload bytes per message (smtp-source -l)
#   BENCH_FSYNC    [true]   store_file "fsync"
#   BENCH_BUILD_DIR [<repo>/build-bench]
#   BENCH_TIMEOUT  [120]    seconds before a single run is abandoned
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
messages=${BENCH_MESSAGES:-5000}
sessions=${BENCH_SESSIONS:-20}
size=${BENCH_SIZE:-4096}
fsync=${BENCH_FSYNC:-true}
build=${BENCH_BUILD_DIR:-$repo/build-bench}
run_timeout=${BENCH_TIMEOUT:-120}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------

export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null
then
    log "smtp-source/smtp-sink missing: installing postfix"
    [ "$(id -u)" -eq 0 ] || die "run as root to install postfix, or install it"
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix >/dev/null
    # We only want the test programs, never a running MTA.
    postfix stop 2>/dev/null || true
fi
command -v smtp-source >/dev/null || die "smtp-source not found"
command -v python3 >/dev/null || die "python3 not found (free port finder)"

# smtp-sink refuses to run as root without a user to switch to.
sink_user=()
if [ "$(id -u)" -eq 0 ]; then
    if id postfix >/dev/null 2>&1; then sink_user=(-u postfix)
    else sink_user=(-u nobody); fi
fi

# --- build --------------------------------------------------------------------

if [ ! -f "$build/build.ninja" ]; then
    log "meson setup $build (release)"
    meson setup "$build" "$repo" --buildtype=release -Dtests=false >/dev/null
else
    meson configure "$build" --buildtype=release -Dtests=false >/dev/null
fi
log "building"
ninja -C "$build" >/dev/null
postern_bin=$build/postern
[ -x "$postern_bin" ] || die "no postern binary in $build"

# --- helpers ------------------------------------------------------------------

work=$(mktemp -d /tmp/postern-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait (bounded) until something listens on 127.0.0.1:$1; $2 is the pid.
wait_port() {
    local port=$1 pid=$2 i
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if python3 - "$port" <<'EOF'
import sys
want = "0100007F:%04X" % int(sys.argv[1])
with open("/proc/net/tcp") as f:
    sys.exit(0 if any(l.split()[1] == want and l.split()[3] == "0A"
                      for l in list(f)[1:]) else 1)
EOF
        then return 0; fi
        sleep 0.1
    done
    return 1
}

now() { date +%s.%N; }

# run_source PORT MODE: sends the load, prints the elapsed seconds.
run_source() {
    local port=$1 mode=$2 flags=() start end
    [ "$mode" = many ] && flags=(-d)
    start=$(now)
    if ! timeout "$run_timeout" smtp-source "${flags[@]}" -s "$sessions" \
        -m "$messages" -l "$size" -M bench.client \
        -f a@example.org -t b@example.com "127.0.0.1:$port" \
        >"$work/source.out" 2>&1; then
        cat "$work/source.out" >&2
        return 1
    fi
    end=$(now)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

rate() { awk -v n="$messages" -v s="$1" 'BEGIN { printf "%.0f\n", n / s }'; }

# --- smtp-sink: the ceiling ---------------------------------------------------

declare -A sink_rate
for mode in one many; do
    port=$(free_port)
    smtp-sink "${sink_user[@]}" -m 1000 "127.0.0.1:$port" 1024 \
        >"$work/sink.log" 2>&1 &
    sink_pid=$!
    pids+=("$sink_pid")
    wait_port "$port" "$sink_pid" || die "smtp-sink did not start: $(cat "$work/sink.log")"
    secs=$(run_source "$port" "$mode") || die "smtp-source against smtp-sink failed"
    sink_rate[$mode]=$(rate "$secs")
    log "smtp-sink  $mode/conn: ${secs}s, ${sink_rate[$mode]} msg/s"
    kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true
done

# --- postern ------------------------------------------------------------------

# start_postern STORE: writes the config, starts postern, sets $port $pg_pid.
start_postern() {
    local store=$1 dir=$work/postern-$1-$2
    mkdir -p "$dir/plugins.d" "$dir/spool"
    port=$(free_port)
    cat >"$dir/postern.json" <<EOF
{
  "hostname": "bench.postern.test",
  "listen": [{"address": "127.0.0.1", "port": $port, "tls": "none"}],
  "limits": {"connections": 2000, "message_size": 104857600},
  "spool_dir": "$dir/spool",
  "plugins_dir": "$dir/plugins.d",
  "module_path": ["$build/modules"]
}
EOF
    if [ "$store" = discard ]; then
        echo '{"module": "discard"}' >"$dir/plugins.d/50-discard.json"
    else
        printf '{"module": "store_file", "config": {"root": "%s", "fsync": %s}}\n' \
            "$dir/maildir" "$fsync" >"$dir/plugins.d/50-store.json"
    fi
    "$postern_bin" -c "$dir/postern.json" 2>"$dir/postern.log" &
    pg_pid=$!
    pids+=("$pg_pid")
    pg_dir=$dir
    wait_port "$port" "$pg_pid" || die "postern did not start: $(tail -5 "$dir/postern.log")"
}

declare -A pg_rate pg_rss
for store in discard store_file; do
    for mode in one many; do
        start_postern "$store" "$mode"
        secs=$(run_source "$port" "$mode") || die "smtp-source against postern ($store, $mode) failed"
        pg_rate[$store.$mode]=$(rate "$secs")
        pg_rss[$store.$mode]=$(awk '/^VmHWM/ {print $2}' "/proc/$pg_pid/status")
        if [ "$store" = store_file ]; then
            stored=$(find "$pg_dir/maildir/new" -type f | wc -l)
            [ "$stored" -eq "$messages" ] ||
                die "store_file stored $stored of $messages messages"
        fi
        log "postern    $store $mode/conn: ${secs}s, ${pg_rate[$store.$mode]} msg/s"
        kill -TERM "$pg_pid"
        wait "$pg_pid" 2>/dev/null || true
        if grep -q -e 'ERROR: AddressSanitizer' -e 'runtime error:' "$pg_dir/postern.log"; then
            die "sanitizer report in $pg_dir/postern.log"
        fi
        rm -rf "$pg_dir/maildir"
    done
done

# --- report -------------------------------------------------------------------

printf '\n%s vs smtp-sink: %d messages, %d parallel sessions, %d-byte payload, %s, store_file fsync=%s\n\n' \
    "$("$postern_bin" --version 2>/dev/null | head -1)" "$messages" "$sessions" \
    "$size" "$(nproc) CPUs" "$fsync"
printf '%-11s %-9s %12s %12s %8s %14s\n' store msgs/conn "sink msg/s" \
    "postern msg/s" ratio "peak RSS (KiB)"
for store in discard store_file; do
    for mode in one many; do
        s=${sink_rate[$mode]} p=${pg_rate[$store.$mode]}
        label=1; [ "$mode" = many ] && label=many
        printf '%-11s %-9s %12s %12s %8s %14s\n' "$store" "$label" "$s" "$p" \
            "$(awk -v p="$p" -v s="$s" 'BEGIN { printf "%.2f", p / s }')" "${pg_rss[$store.$mode]}"
    done
done

# --- memory: one 50 MB message must not cost 50 MB of RSS -------------------

start_postern discard large
rss_before=$(awk '/^VmHWM/ {print $2}' "/proc/$pg_pid/status")
python3 - "$port" <<'EOF' || die "the 50 MB message was not accepted"
import smtplib, sys
body = b"Subject: large\r\n\r\n" + (b"x" * 998 + b"\r\n") * 52000
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="bench.client",
                  timeout=120) as s:
    s.sendmail("a@example.org", ["b@example.com"], body)
EOF
rss_after=$(awk '/^VmHWM/ {print $2}' "/proc/$pg_pid/status")
kill -TERM "$pg_pid"
wait "$pg_pid" 2>/dev/null || true
growth=$((rss_after - rss_before))
printf '\n50 MB message (discard): postern peak RSS %s KiB before, %s KiB after: +%s KiB (%s%% of the message size)\n' \
    "$rss_before" "$rss_after" "$growth" \
    "$(awk -v g="$growth" 'BEGIN { printf "%.2f", g * 1024 * 100 / 52000016 }')"
