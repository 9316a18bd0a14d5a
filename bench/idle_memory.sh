#!/usr/bin/env bash
#
# bench/idle_memory.sh - resident memory per idle SMTP connection.
#
# Builds a release postern, starts it on a free loopback port, and lets
# bench/idle_clients.py open N sessions (greeting, EHLO, then idle) and
# read postern's RSS (VmRSS summed over the process and its children, so
# a supervisor and its workers all count) before the first connection and
# once all N are idle: (after - before) / N. Then the same over STARTTLS
# (the TLS figure), and the same load against aiosmtpd (Debian
# python3-aiosmtpd) as a peer measured in the same run, when it is
# installed. See bench/README.md. Not a test: nothing fails on size.
#
# Usage: bench/idle_memory.sh [-s N]
# Environment knobs (defaults in brackets):
#   BENCH_IDLE_CONNECTIONS [10000]  sessions held idle (-s overrides)
#   BENCH_IDLE_TLS         [1]      also measure STARTTLS sessions (0: skip)
#   BENCH_IDLE_PEER        [1]      also measure aiosmtpd if installed (0: skip)
#   BENCH_BUILD_DIR        [<repo>/build-bench]
#   BENCH_TIMEOUT          [600]    seconds before one measurement is abandoned
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
connections=${BENCH_IDLE_CONNECTIONS:-10000}
with_tls=${BENCH_IDLE_TLS:-1}
with_peer=${BENCH_IDLE_PEER:-1}
build=${BENCH_BUILD_DIR:-$repo/build-bench}
run_timeout=${BENCH_TIMEOUT:-600}

while getopts "s:" opt; do
    case $opt in
    s) connections=$OPTARG ;;
    *) echo "usage: $0 [-s connections]" >&2; exit 2 ;;
    esac
done

bench_name=idle
. "$here/lib.sh" # log, die, free_port, wait_port

# Both the server and the client need one descriptor per session.
want_fds=$((connections + 256))
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want_fds" ]; then
    ulimit -Sn "$want_fds" 2>/dev/null ||
        die "need $want_fds file descriptors; the hard limit is $(ulimit -Hn)"
fi
command -v python3 >/dev/null || die "python3 not found"

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

work=$(mktemp -d /tmp/postern-idle.XXXXXX)
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



# measure LABEL PORT PID [client flags]: one line of results in $work/results
measure() {
    local label=$1 port=$2 pid=$3
    shift 3
    log "$label: $connections idle sessions"
    timeout "$run_timeout" python3 "$here/idle_clients.py" --port "$port" \
        --pid "$pid" -s "$connections" --label "$label" "$@" \
        >>"$work/results" || die "$label: the clients failed"
}

# start_postern NAME TLS: writes the config, starts postern; sets $port $pg_pid
start_postern() {
    local name=$1 tls=$2 dir=$work/$1 tls_conf=""
    mkdir -p "$dir/plugins.d" "$dir/spool"
    port=$(free_port)
    if [ "$tls" != none ]; then
        python3 - "$dir" <<'EOF' || die "cannot make a certificate"
import subprocess, sys
d = sys.argv[1]
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", "/CN=bench.postern.test", "-keyout", d + "/key.pem",
                "-out", d + "/cert.pem"], check=True, capture_output=True)
EOF
        tls_conf="\"tls\": {\"certificates\": [{\"cert\": \"$dir/cert.pem\", \"key\": \"$dir/key.pem\"}]},"
    fi
    # Limits high enough for every session; timeouts longer than the run;
    # no reverse DNS (the bench measures sessions, not the DNS cache).
    cat >"$dir/postern.json" <<EOF
{
  "hostname": "bench.postern.test",
  "listen": [{"address": "127.0.0.1", "port": $port, "tls": "$tls"}],
  $tls_conf
  "limits": {"connections": $((connections + 100)),
             "connections_per_ip": $((connections + 100)),
             "command_timeout": 3600},
  "dns": {"reverse": false},
  "spool_dir": "$dir/spool",
  "plugins_dir": "$dir/plugins.d",
  "module_path": ["$build/modules"]
}
EOF
    echo '{"module": "discard"}' >"$dir/plugins.d/50-discard.json"
    "$postern_bin" -c "$dir/postern.json" 2>"$dir/postern.log" &
    pg_pid=$!
    pids+=("$pg_pid")
    pg_dir=$dir
    wait_port "$port" "$pg_pid" || die "postern did not start: $(tail -5 "$dir/postern.log")"
    wait_ready "$dir/postern.log" "$pg_pid" || die "postern's workers did not all start: $(tail -5 "$dir/postern.log")"
    sleep 0.5 # workers, if any, come up after the listener
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# --- postern, plaintext and STARTTLS ----------------------------------------

: >"$work/results"
start_postern plain none
measure "postern (EHLO)" "$port" "$pg_pid"
stop "$pg_pid"
if grep -q -e 'ERROR: AddressSanitizer' -e 'runtime error:' "$pg_dir/postern.log"; then
    die "sanitizer report in $pg_dir/postern.log"
fi

if [ "$with_tls" = 1 ]; then
    if command -v openssl >/dev/null; then
        start_postern tls starttls
        measure "postern (STARTTLS, EHLO)" "$port" "$pg_pid" --starttls
        stop "$pg_pid"
    else
        log "openssl missing: no STARTTLS figure"
    fi
fi

# --- a peer: aiosmtpd ------------------------------------------------------------

peer_python=""
for py in /usr/bin/python3 python3; do
    if "$py" -c 'import aiosmtpd' 2>/dev/null; then peer_python=$py; break; fi
done
if [ "$with_peer" = 1 ] && [ -n "$peer_python" ]; then
    port=$(free_port)
    # The Sink handler accepts and drops mail; -n: no setuid to nobody.
    "$peer_python" -m aiosmtpd -n -c aiosmtpd.handlers.Sink \
        -l "127.0.0.1:$port" >"$work/aiosmtpd.log" 2>&1 &
    peer_pid=$!
    pids+=("$peer_pid")
    wait_port "$port" "$peer_pid" || die "aiosmtpd did not start: $(tail -5 "$work/aiosmtpd.log")"
    sleep 0.5
    measure "aiosmtpd $("$peer_python" -c 'import aiosmtpd; print(aiosmtpd.__version__)')" \
        "$port" "$peer_pid"
    stop "$peer_pid"
elif [ "$with_peer" = 1 ]; then
    log "aiosmtpd not installed (apt-get install python3-aiosmtpd): no peer figure"
fi

# --- report ----------------------------------------------------------------------

printf '\nidle SMTP sessions after EHLO, %d connections, %s CPUs\n\n' \
    "$connections" "$(nproc)"
printf '%-28s %14s %14s %12s %6s\n' server "RSS before KiB" "RSS after KiB" \
    "KiB/conn" procs
while IFS=$'\t' read -r label n before after per procs; do
    printf '%-28s %14s %14s %12s %6s\n' "$label" "$before" "$after" "$per" "$procs"
done <"$work/results"
