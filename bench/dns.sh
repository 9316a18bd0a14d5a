#!/usr/bin/env bash
#
# bench/dns.sh - what the DNS modules (spf, and dnsbl when built) cost:
# postern's msg/s with them on, as a ratio to the same load with them off,
# same binary, same run, on loopback against a local dnsmasq.
#
# The load (bench/smtp_load.py): 50 concurrent connections, many messages
# per connection, 10 KB messages, no pipelining, the sender's domain varies
# per message over 50 domains d0..d49.bench.test. Each domain has an SPF
# record passing 127.0.0.1 (even ones directly, odd ones through a two-level
# include chain); the HELO name has one too. The DNSBL zone bl.bench.test
# does not list 127.0.0.1 (NXDOMAIN). Rounds alternate off/on so the noise
# of a shared machine hits both sides alike. See bench/README.md. Not a
# test: nothing here passes or fails on speed.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES    [10000] messages per run
#   BENCH_CONNECTIONS [50]    concurrent connections
#   BENCH_SIZE        [10240] payload bytes per message
#   BENCH_ROUNDS      [3]     off/on pairs
#   BENCH_PROCS       [2]     load generator processes
#   BENCH_BUILD_DIR   [<repo>/build-bench]
#   BENCH_TIMEOUT     [300]   seconds before a single run is abandoned
#   BENCH_WRAPPER     []      command put before postern, %m replaced by
#                             off/on, e.g. for a noise-free instruction count
#                             "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%m"
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init bench-dns
messages=${BENCH_MESSAGES:-10000}
connections=${BENCH_CONNECTIONS:-50}
size=${BENCH_SIZE:-10240}
rounds=${BENCH_ROUNDS:-3}
procs=${BENCH_PROCS:-2}
run_timeout=${BENCH_TIMEOUT:-300}
domains=50

# --- tools ------------------------------------------------------------------

if ! command -v dnsmasq >/dev/null; then
    log "dnsmasq missing: installing dnsmasq-base"
    [ "$(id -u)" -eq 0 ] || die "run as root to install dnsmasq-base, or install it"
    DEBIAN_FRONTEND=noninteractive apt-get install -y dnsmasq-base >/dev/null
fi
command -v dnsmasq >/dev/null || die "dnsmasq not found"
command -v python3 >/dev/null || die "python3 not found"

# --- build ------------------------------------------------------------------

build_postern
[ -f "$build/modules/spf.so" ] || die "no spf module in $build/modules"
# dnsbl is on when its module is built: in the bench build, or else in the
# repo's ordinary build/ (then that directory comes second in module_path).
dnsbl=off module_path="\"$build/modules\""
if [ -f "$build/modules/dnsbl.so" ]; then
    dnsbl=on
elif [ -f "$repo/build/modules/dnsbl.so" ]; then
    dnsbl=on module_path="$module_path, \"$repo/build/modules\""
fi
log "dnsbl module: $dnsbl"

# --- helpers ----------------------------------------------------------------

wait_dns() {    # wait_dns PORT PID: an answer to a query for d0.bench.test TXT
    python3 - "$1" <<'PY'
import socket, struct, sys, time
port = int(sys.argv[1])
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
for label in ("d0", "bench", "test"):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack(">HH", 16, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
end = time.monotonic() + 10
while time.monotonic() < end:
    s.sendto(q, ("127.0.0.1", port))
    try:
        if s.recvfrom(512)[0][:2] == b"\x42\x42": sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
PY
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# --- dnsmasq ----------------------------------------------------------------

dns_port=$(free_port)
{
    echo "local=/test/"
    echo "local=/in-addr.arpa/"
    echo 'txt-record=client.bench.test,"v=spf1 ip4:127.0.0.1 -all"'
    echo 'txt-record=_spf1.bench.test,"v=spf1 include:_spf2.bench.test -all"'
    echo 'txt-record=_spf2.bench.test,"v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.0/8 -all"'
    for i in $(seq 0 $((domains - 1))); do
        if [ $((i % 2)) -eq 0 ]; then
            echo "txt-record=d$i.bench.test,\"v=spf1 ip4:127.0.0.1 -all\""
        else
            echo "txt-record=d$i.bench.test,\"v=spf1 include:_spf1.bench.test -all\""
        fi
    done
    # The DNSBL zone exists (it lists 127.0.0.2, the usual test entry) but
    # not 127.0.0.1: 1.0.0.127.bl.bench.test is NXDOMAIN.
    # fail.bench.test: the probe that shows spf is really on (see run).
    echo 'txt-record=fail.bench.test,"v=spf1 -all"'
    echo "host-record=2.0.0.127.bl.bench.test,127.0.0.2"
    echo 'txt-record=2.0.0.127.bl.bench.test,"listed for the bench"'
} >"$work/zone.conf"
dns_user=()
[ "$(id -u)" -eq 0 ] && dns_user=(--user=nobody)
dnsmasq --no-daemon --port="$dns_port" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --conf-file="$work/zone.conf" \
    --pid-file --local-ttl=300 --cache-size=0 "${dns_user[@]}" \
    >"$work/dnsmasq.log" 2>&1 &
dns_pid=$!
pids+=("$dns_pid")
wait_dns "$dns_port" || die "dnsmasq did not answer: $(cat "$work/dnsmasq.log")"
log "dnsmasq on 127.0.0.1:$dns_port"

# --- runs -------------------------------------------------------------------

# run MODE (off|on): fresh postern, the load; sets secs, cpu, failed.
run() {
    local mode=$1 dir=$work/postern-$1 port out
    rm -rf "$dir"; mkdir -p "$dir/plugins.d" "$dir/spool"
    port=$(free_port)
    cat >"$dir/postern.json" <<JSON
{
  "hostname": "bench.postern.test",
  "listen": [{"address": "127.0.0.1", "port": $port, "tls": "none"}],
  "limits": {"connections": 2000, "connections_per_ip": 2000},
  "local_domains": ["example.com"],
  "spool_dir": "$dir/spool",
  "plugins_dir": "$dir/plugins.d",
  "module_path": [$module_path],
  "dns": {"servers": ["127.0.0.1:$dns_port"], "reverse": false}
}
JSON
    echo '{"module": "discard"}' >"$dir/plugins.d/90-discard.json"
    if [ "$mode" = on ]; then
        echo '{"module": "spf", "config": {"hook": "rcpt", "authserv_id": "bench.postern.test"}}' \
            >"$dir/plugins.d/20-spf.json"
        [ "$dnsbl" = on ] &&
            echo '{"module": "dnsbl", "config": {"lists": [{"zone": "bl.bench.test"}], "hook": "rcpt"}}' \
                >"$dir/plugins.d/10-dnsbl.json"
    fi
    "$postern_bin" --check-config -c "$dir/postern.json" >"$dir/check.log" 2>&1 ||
        die "config refused: $(cat "$dir/check.log")"
    local wrapper=()
    [ -n "${BENCH_WRAPPER:-}" ] && read -r -a wrapper <<<"${BENCH_WRAPPER//%m/$mode}"
    "${wrapper[@]}" "$postern_bin" -c "$dir/postern.json" 2>"$dir/postern.log" &
    pg_pid=$!
    pids+=("$pg_pid")
    wait_port "$port" "$pg_pid" || die "postern did not start: $(tail -5 "$dir/postern.log")"
    wait_ready "$dir/postern.log" "$pg_pid" || die "postern's workers did not all start: $(tail -5 "$dir/postern.log")"
    local c0; c0=$(cpu_ticks "$pg_pid")
    out=$(timeout "$run_timeout" python3 "$here/smtp_load.py" 127.0.0.1 "$port" \
        --connections "$connections" --messages "$messages" --size "$size" \
        --domains "$domains" --procs "$procs" 2>"$dir/load.err") ||
        die "load generator failed ($mode): $(tail -5 "$dir/load.err")"
    local c1; c1=$(cpu_ticks "$pg_pid")
    # Sanity: with spf on, a sender whose domain says "-all" is refused at
    # RCPT (550 5.7.23); with it off, accepted. Proves the lookups happen.
    local probe
    probe=$(python3 - "$port" <<'PY'
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.bench.test", timeout=30) as s:
    s.ehlo()
    s.mail("bench@fail.bench.test")
    print(s.rcpt("b@example.com")[0])
PY
) || die "probe failed ($mode)"
    if [ "$mode" = on ]; then
        [ "$probe" = 550 ] || die "spf not effective: the probe got $probe, not 550"
    else
        [ "$probe" = 250 ] || die "the probe got $probe with the modules off"
    fi
    kill -TERM "$pg_pid"; wait "$pg_pid" 2>/dev/null || true
    read -r _ secs failed client_cpu <<<"$out"
    cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
    [ "$failed" -eq 0 ] || die "$failed of $messages messages refused ($mode): $(cat "$dir/load.err")"
}

declare -a rows ratios cratios
for r in $(seq 1 "$rounds"); do
    declare -A rate=() us=()
    for mode in off on; do
        run "$mode"
        rate[$mode]=$(awk -v n="$messages" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
        us[$mode]=$(awk -v n="$messages" -v c="$cpu" 'BEGIN { printf "%.0f", c * 1e6 / n }')
        log "round $r $mode: ${secs}s, ${rate[$mode]} msg/s, postern CPU ${cpu}s (${us[$mode]} us/msg), client CPU ${client_cpu}s"
    done
    ratio=$(awk -v a="${rate[on]}" -v b="${rate[off]}" 'BEGIN { printf "%.2f", a / b }')
    cratio=$(awk -v a="${us[on]}" -v b="${us[off]}" 'BEGIN { printf "%.2f", a / b }')
    ratios+=("$ratio"); cratios+=("$cratio")
    rows+=("$(printf '%-6s %12s %12s %8s %16s %16s %10s' "$r" "${rate[off]}" "${rate[on]}" "$ratio" "${us[off]}" "${us[on]}" "$cratio")")
done

printf '\n%s, spf on, dnsbl %s; %d messages of %d bytes over %d connections, %d sender domains, %s CPUs\n\n' \
    "$("$postern_bin" --version 2>/dev/null | head -1)" "$dnsbl" "$messages" "$size" \
    "$connections" "$domains" "$(nproc)"
printf '%-6s %12s %12s %8s %16s %16s %10s\n' round "off msg/s" "on msg/s" ratio \
    "off CPU us/msg" "on CPU us/msg" "CPU ratio"
printf '%s\n' "${rows[@]}"
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '\nmedian msg/s ratio on/off: %s (target >= 0.8); median postern CPU per message on/off: %s\n' \
    "$(median "${ratios[@]}")" "$(median "${cratios[@]}")"
