# bench/lib.sh - what every bench script needs, sourced after `set -euo
# pipefail`:
#
#   bench_init NAME     log prefix, $here $repo, a work directory $work
#                       removed at exit (kept when BENCH_KEEP is set), and
#                       every pid in $pids killed at exit
#   log MSG / die MSG   to stderr, prefixed [NAME]; die exits 1
#   free_port           a port of 127.0.0.1 free for both TCP and UDP
#   wait_port PORT PID  wait (bounded, 10 s) until PORT listens; 1 when PID
#                       died or it never did
#   now                 seconds since the epoch, with nanoseconds
#   rate N SECS         N / SECS, rounded
#   ratio A B           A / B with two decimals
#   median V...         the median of the numbers given
#   build_postern       release build in $build (BENCH_BUILD_DIR, default
#                       <repo>/build-bench); sets $postern_bin
#   sink_start PORT     Postfix's smtp-sink on 127.0.0.1:PORT (as postfix
#                       or nobody when run as root); sets $sink_pid
#   stop PID [SIGNAL]   signal (TERM) and reap a process we started
#
# Not a test harness: nothing here passes or fails on speed.

bench_init() {
    bench_name=$1
    here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
    repo=$(cd "$here/.." && pwd)
    build=${BENCH_BUILD_DIR:-$repo/build-bench}
    export PATH="$PATH:/usr/sbin:/sbin"
    command -v python3 >/dev/null || die "python3 not found"
    work=$(mktemp -d "${TMPDIR:-/tmp}/postern-bench-$bench_name.XXXXXX")
    pids=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${BENCH_KEEP:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}

log() { printf '[%s] %s\n' "${bench_name:-bench}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket
for _ in range(50):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    p = u.getsockname()[1]; t = socket.socket()
    try: t.bind(("127.0.0.1", p))
    except OSError: continue
    print(p); break'
}

# wait_ready LOG PID: until postern's supervisor logged that every worker
# serves (the port answers once the first does; a load started then puts
# every long session on that one worker).
wait_ready() {
    local log=$1 pid=$2 i
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        grep -q 'supervisor_ready' "$log" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

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

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f\n", n / s }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Whole numbers stay whole; ratios keep two decimals (1.00, not 1).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1; if ($1 ~ /\./) frac = 1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf (m == int(m) && !frac ? "%d" : "%.2f"), m }'
}

build_postern() {
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
}

sink_start() {
    local port=$1 user=()
    # smtp-sink refuses to run as root without a user to switch to.
    if [ "$(id -u)" -eq 0 ]; then
        if id postfix >/dev/null 2>&1; then user=(-u postfix)
        else user=(-u nobody); fi
    fi
    smtp-sink "${user[@]}" -m 1000 "127.0.0.1:$port" 1024 \
        >"$work/sink-$port.log" 2>&1 &
    sink_pid=$!
    pids+=("$sink_pid")
    wait_port "$port" "$sink_pid" ||
        die "smtp-sink did not start: $(cat "$work/sink-$port.log")"
}

stop() {
    kill -"${2:-TERM}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
