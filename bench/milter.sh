#!/usr/bin/env bash
#
# bench/milter.sh - what a milter costs: postern's msg/s with OpenDKIM
# signing every message through the milter module, beside the same load
# without it (discard behind both), same binary, same run, on loopback.
# The load is smtp-source, many messages per connection, 10 KB payload;
# rounds alternate none / opendkim so the noise of a shared machine hits
# both alike.
#
# The share of the time spent waiting on the milter comes from a second
# load, one session at a time (smtp-source -s 1): with nothing running in
# parallel, the time a message takes with the milter minus the time it
# takes without is the time its session waited on the milter (the round
# trips of connect, helo, mail, rcpt, data, each header, the body and the
# end of message, and OpenDKIM's own work), so
#     share = (t_opendkim - t_none) / t_opendkim.
# OpenDKIM's CPU time over that run (utime + stime from /proc) says how
# much of the wait is OpenDKIM computing (hashing, the RSA signature) and
# how much is the protocol's round trips. See bench/README.md. Not a
# test: nothing here passes or fails on speed.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES      [5000]  messages per parallel run
#   BENCH_SESSIONS      [20]    parallel SMTP sessions (smtp-source -s)
#   BENCH_SEQ_MESSAGES  [1000]  messages of the one-session runs
#   BENCH_SIZE          [10240] payload bytes per message (smtp-source -l)
#   BENCH_ROUNDS        [3]     rounds of the two
#   BENCH_BUILD_DIR     [<repo>/build-bench]
#   BENCH_TIMEOUT       [300]   seconds before a single run is abandoned
#   BENCH_SOCKET        [inet]  inet (loopback TCP) or unix (a unix socket)
#   BENCH_KEEP          []      non-empty: keep the work dir (logs, the check maildir)
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init bench-milter
messages=${BENCH_MESSAGES:-5000}
sessions=${BENCH_SESSIONS:-20}
seq_messages=${BENCH_SEQ_MESSAGES:-1000}
size=${BENCH_SIZE:-10240}
rounds=${BENCH_ROUNDS:-3}
run_timeout=${BENCH_TIMEOUT:-300}
socket_kind=${BENCH_SOCKET:-inet}
case $socket_kind in inet | unix) ;; *) echo "BENCH_SOCKET: inet or unix" >&2; exit 2 ;; esac

# --- tools ------------------------------------------------------------------

need=""
command -v smtp-source >/dev/null || need="$need postfix"
command -v opendkim >/dev/null || need="$need opendkim"
command -v opendkim-genkey >/dev/null || need="$need opendkim-tools"
if [ -n "$need" ]; then
    log "installing:$need"
    [ "$(id -u)" -eq 0 ] || die "run as root to install$need, or install them"
    # Only the programs are wanted, never a running MTA or milter.
    echo "postfix postfix/main_mailer_type select No configuration" |
        debconf-set-selections
    no_start=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        no_start=yes
    fi
    status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $need >/dev/null || status=$?
    [ -n "$no_start" ] && rm -f /usr/sbin/policy-rc.d
    [ "$status" -eq 0 ] || die "could not install$need"
fi
for p in smtp-source opendkim opendkim-genkey python3; do
    command -v $p >/dev/null || die "$p not found"
done

# --- build ------------------------------------------------------------------

build_postern
for m in discard milter store_file; do
    [ -f "$build/modules/$m.so" ] || die "no $m module in $build/modules"
done

# --- helpers ----------------------------------------------------------------

# run_source PORT SESSIONS MESSAGES: sends the load (many per connection),
# prints the seconds. The From: domain is the one OpenDKIM signs for.
run_source() {
    local port=$1 s=$2 m=$3 start end
    start=$(now)
    if ! timeout "$run_timeout" smtp-source -d -s "$s" -m "$m" \
        -l "$size" -M bench.client -f a@example.test -t b@example.com \
        "127.0.0.1:$port" >"$work/source.out" 2>&1; then
        cat "$work/source.out" >&2
        return 1
    fi
    end=$(now)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

# CPU seconds (user + system) PID has used so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' \
        "/proc/$1/stat"
}

# --- OpenDKIM -------------------------------------------------------------------

mkdir -p "$work/dkim"
opendkim-genkey -D "$work/dkim" -d example.test -s bench -b 2048 ||
    die "opendkim-genkey failed"
dkim_port=$(free_port)
if [ "$socket_kind" = unix ]; then
    dkim_socket=local:$work/dkim/opendkim.sock
    postern_socket=unix:$work/dkim/opendkim.sock
else
    dkim_socket=inet:$dkim_port@127.0.0.1
    postern_socket=inet:127.0.0.1:$dkim_port
fi
cat >"$work/dkim/opendkim.conf" <<EOF
Mode s
Socket $dkim_socket
Background no
Syslog no
PidFile $work/dkim/opendkim.pid
Canonicalization relaxed/simple
Domain example.test
Selector bench
KeyFile $work/dkim/bench.private
RequireSafeKeys no
EOF
opendkim -f -x "$work/dkim/opendkim.conf" >"$work/dkim/out.log" 2>&1 &
dkim_pid=$!
pids+=("$dkim_pid")
if [ "$socket_kind" = unix ]; then
    for i in $(seq 1 100); do
        [ -S "$work/dkim/opendkim.sock" ] && break
        kill -0 "$dkim_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -S "$work/dkim/opendkim.sock" ] || die "opendkim did not start: $(cat "$work/dkim/out.log")"
else
    wait_port "$dkim_port" "$dkim_pid" || die "opendkim did not start: $(cat "$work/dkim/out.log")"
fi
log "opendkim (2048-bit RSA, relaxed/simple) on $dkim_socket"

# --- postern ------------------------------------------------------------------

# start_postern MODE NAME [STORE]: MODE none or opendkim; STORE discard
# (default) or store_file. Writes the config, starts postern, sets $port.
start_postern() {
    local mode=$1 dir=$work/postern-$2 store=${3:-discard}
    mkdir -p "$dir/plugins.d" "$dir/spool" "$dir/maildir"
    port=$(free_port)
    cat >"$dir/postern.json" <<EOF
{
  "hostname": "bench.postern.test",
  "listen": [{"address": "127.0.0.1", "port": $port, "tls": "none"}],
  "limits": {"connections": 2000, "message_size": 104857600},
  "dns": {"reverse": false},
  "relay_networks": ["127.0.0.0/8"],
  "spool_dir": "$dir/spool",
  "plugins_dir": "$dir/plugins.d",
  "module_path": ["$build/modules"]
}
EOF
    if [ "$mode" = opendkim ]; then
        printf '{"module": "milter", "config": {"socket": "%s"}}\n' \
            "$postern_socket" >"$dir/plugins.d/50-milter.json"
    fi
    case $store in
    discard) echo '{"module": "discard"}' ;;
    store_file) printf '{"module": "store_file", "config": {"root": "%s", "fsync": false}}\n' "$dir/maildir" ;;
    esac >"$dir/plugins.d/90-$store.json"
    "$postern_bin" -c "$dir/postern.json" 2>"$dir/postern.log" &
    pg_pid=$!
    pids+=("$pg_pid")
    pg_dir=$dir
    wait_port "$port" "$pg_pid" || die "postern did not start: $(tail -5 "$dir/postern.log")"
    wait_ready "$dir/postern.log" "$pg_pid" || die "postern's workers did not all start: $(tail -5 "$dir/postern.log")"
}

stop_postern() { stop "$pg_pid"; }

# smtp-source counts a 4xx/5xx as sent: make sure none happened, and that
# the milter never failed (default_action would hide it as a 4xx).
check_log() {
    if grep -q -E 'result=(tempfail|reject)|status=(4|5)[0-9][0-9]|event=failure' \
        "$pg_dir/postern.log"; then
        die "$1: messages refused or milter failures: $(grep -m3 -E 'tempfail|reject|failure' "$pg_dir/postern.log")"
    fi
}

# First, that the load is signed at all: three messages into a maildir.
start_postern opendkim check store_file
run_source "$port" 1 3 >/dev/null || die "smtp-source against postern failed"
stop_postern
check_log "signing check"
signed=$( (grep -l '^DKIM-Signature: v=1; .*d=example.test;' \
    "$pg_dir"/maildir/new/* 2>/dev/null || true) | wc -l)
[ "$signed" -eq 3 ] || die "expected 3 signed messages, found $signed"
log "check: 3 of 3 messages stored with a DKIM-Signature of example.test"

declare -A rate
for round in $(seq 1 "$rounds"); do
    for mode in none opendkim; do
        start_postern "$mode" "$mode-$round"
        secs=$(run_source "$port" "$sessions" "$messages") ||
            die "smtp-source against postern ($mode) failed: $(tail -5 "$pg_dir/postern.log")"
        stop_postern
        check_log "$mode"
        rate[$mode.$round]=$(awk -v n="$messages" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
        log "round $round $mode: ${secs}s, ${rate[$mode.$round]} msg/s"
    done
done

# One session at a time: the wait on the milter, message by message.
declare -A per_msg pg_cpu
for mode in none opendkim; do
    start_postern "$mode" "seq-$mode"
    cpu0=$(cpu_seconds "$dkim_pid")
    secs=$(run_source "$port" 1 "$seq_messages") ||
        die "smtp-source against postern ($mode, one session) failed"
    cpu1=$(cpu_seconds "$dkim_pid")
    pg_cpu[$mode]=$(awk -v n="$seq_messages" -v c="$(cpu_seconds "$pg_pid")" 'BEGIN { printf "%.0f", 1e6 * c / n }')
    stop_postern
    check_log "$mode, one session"
    per_msg[$mode]=$(awk -v n="$seq_messages" -v s="$secs" 'BEGIN { printf "%.3f", 1000 * s / n }')
    [ "$mode" = opendkim ] &&
        dkim_cpu=$(awk -v n="$seq_messages" -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", 1000 * (b - a) / n }')
    log "one session, $mode: ${secs}s, ${per_msg[$mode]} ms/msg"
done

# --- report -------------------------------------------------------------------

printf '\n%s: %d messages, %d-byte payload, %d parallel sessions, many per connection, %s\n' \
    "$("$postern_bin" --version 2>/dev/null | head -1)" "$messages" "$size" \
    "$sessions" "$(nproc) CPUs"
printf 'OpenDKIM %s signing with a 2048-bit RSA key, relaxed/simple, over %s; discard behind\n\n' \
    "$(opendkim -V 2>&1 | head -1 | awk '{print $NF}')" "$postern_socket"
printf '%-6s %10s %12s %15s\n' round "none/s" "opendkim/s" "opendkim/none"
for round in $(seq 1 "$rounds"); do
    n=${rate[none.$round]} d=${rate[opendkim.$round]}
    printf '%-6s %10s %12s %15s\n' "$round" "$n" "$d" \
        "$(awk -v a="$d" -v b="$n" 'BEGIN { printf "%.2f", a / b }')"
done
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }'; }
m=$(for r in $(seq 1 "$rounds"); do
    awk -v a="${rate[opendkim.$r]}" -v b="${rate[none.$r]}" 'BEGIN { print a / b }'
done | median)
printf '\nmedian ratio opendkim/none: %s\n' "$m"
printf '\none session, %d messages: %s ms/msg without, %s ms/msg with OpenDKIM\n' \
    "$seq_messages" "${per_msg[none]}" "${per_msg[opendkim]}"
printf 'postern CPU (whole run, start-up included): %s us/msg without, %s us/msg with OpenDKIM\n' \
    "${pg_cpu[none]}" "${pg_cpu[opendkim]}"
awk -v a="${per_msg[none]}" -v b="${per_msg[opendkim]}" -v c="$dkim_cpu" 'BEGIN {
    w = b - a
    printf "waiting on the milter: %.3f ms/msg, %.0f%% of a message'"'"'s time\n", w, 100 * w / b
    printf "of which OpenDKIM CPU: %.3f ms/msg (%.0f%% of the wait); the rest is round trips\n", c, (w > 0 ? 100 * c / w : 0)
}'
