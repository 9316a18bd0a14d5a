#!/usr/bin/env bash
#
# bench/run.sh - the one-run table of postern's throughput, every figure a
# ratio to a peer measured in the same run (the machine is shared, the
# absolute figures move):
#
#   1. discard and store_file (fsync) at 1, 10 and 100 KB, one and many
#      messages per connection, each against Postfix's smtp-sink (a server
#      that throws mail away without parsing it: the ceiling), with
#      smtp-source as the load generator for all;
#   2. workers=1 against workers=N (discard, 10 KB, many per connection);
#   3. memory per idle connection (bench/idle_memory.sh, when present);
#   4. implicit TLS, one message per connection, full handshakes against
#      resumed ones (TLS 1.3 and 1.2), beside the same load in plaintext
#      (bench/tls_load.py);
#   5. one 50 MB message must not cost 50 MB of RSS.
#
# See bench/README.md. Not a test: nothing here passes or fails on speed.
#
# Environment knobs (defaults in brackets):
#   BENCH_PARTS     [throughput workers idle tls large]  parts to run
#   BENCH_ROUNDS    [1]     rounds of the throughput and workers parts
#                           (medians are printed)
#   BENCH_MESSAGES  [4000]  messages per run at 1 and 10 KB
#   BENCH_MESSAGES_LARGE [BENCH_MESSAGES / 4]  messages per run at 100 KB
#   BENCH_SESSIONS  [50]    parallel SMTP sessions (smtp-source -s)
#   BENCH_SIZES     [1024 10240 102400]  payload bytes (smtp-source -l)
#   BENCH_FSYNC     [true]  store_file "fsync"
#   BENCH_WORKERS   [nproc] N of the workers=N row
#   BENCH_IDLE_CONNECTIONS [10000]  passed to bench/idle_memory.sh -s
#   BENCH_TLS_MESSAGES [1500]  messages per TLS run
#   BENCH_TLS_CONNECTIONS [20] parallel TLS clients
#   BENCH_TLS_SIZE  [1024]  TLS message body bytes
#   BENCH_TLS_KEY   [rsa]   server key: rsa (2048 bits) or ecdsa (P-256)
#   BENCH_BUILD_DIR [<repo>/build-bench]
#   BENCH_TIMEOUT   [300]   seconds before a single run is abandoned
#   BENCH_KEEP      []      non-empty: keep the work directory
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init bench

parts=" ${BENCH_PARTS:-throughput workers idle tls large} "
rounds=${BENCH_ROUNDS:-1}
messages=${BENCH_MESSAGES:-4000}
messages_large=${BENCH_MESSAGES_LARGE:-$((messages / 4))}
sessions=${BENCH_SESSIONS:-50}
sizes=${BENCH_SIZES:-1024 10240 102400}
fsync=${BENCH_FSYNC:-true}
workers_n=${BENCH_WORKERS:-$(nproc)}
idle_connections=${BENCH_IDLE_CONNECTIONS:-10000}
tls_messages=${BENCH_TLS_MESSAGES:-1500}
tls_connections=${BENCH_TLS_CONNECTIONS:-20}
tls_size=${BENCH_TLS_SIZE:-1024}
tls_key=${BENCH_TLS_KEY:-rsa}
run_timeout=${BENCH_TIMEOUT:-300}
want() { [[ $parts == *" $1 "* ]]; }

# --- tools ------------------------------------------------------------------

if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null
then
    log "smtp-source/smtp-sink missing: installing postfix"
    [ "$(id -u)" -eq 0 ] || die "run as root to install postfix, or install it"
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix >/dev/null
    # We only want the test programs, never a running MTA.
    postfix stop 2>/dev/null || true
fi
command -v smtp-source >/dev/null || die "smtp-source not found"
if want tls && ! command -v certtool >/dev/null; then
    die "certtool not found (Debian: gnutls-bin)"
fi
build_postern

# --- helpers ------------------------------------------------------------------

# run_source PORT MODE COUNT SIZE: sends the load, prints the elapsed seconds.
run_source() {
    local port=$1 mode=$2 count=$3 size=$4 flags=() start end
    [ "$mode" = many ] && flags=(-d)
    sync # the writeback of earlier runs is not this run's
    start=$(now)
    if ! timeout "$run_timeout" smtp-source "${flags[@]}" -s "$sessions" \
        -m "$count" -l "$size" -M bench.client \
        -f a@example.org -t b@example.com "127.0.0.1:$port" \
        >"$work/source.out" 2>&1; then
        cat "$work/source.out" >&2
        return 1
    fi
    end=$(now)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

# start_postern STORE TAG [WORKERS [LISTENER_TLS]]: writes the config,
# starts postern, sets $port $pg_pid $pg_dir.
start_postern() {
    local store=$1 dir=$work/postern-$1-$2 workers=${3:-1} mode=${4:-none}
    local tls=""
    mkdir -p "$dir/plugins.d" "$dir/spool"
    port=$(free_port)
    if [ "$mode" != none ]; then
        tls='"tls": {"certificates": [{"cert": "'$work/cert.pem'", "key": "'$work/key.pem'"}]},'
    fi
    cat >"$dir/postern.json" <<EOF
{
  "hostname": "bench.postern.test",
  "listen": [{"address": "127.0.0.1", "port": $port, "tls": "$mode"}],
  $tls
  "workers": $workers,
  "limits": {"connections": 2000, "message_size": 104857600},
  "dns": {"reverse": false},
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
    wait_ready "$dir/postern.log" "$pg_pid" || die "postern's workers did not all start: $(tail -5 "$dir/postern.log")"
}

# stop_postern: SIGTERM, reap, and stop on a sanitizer report or a refusal
# (smtp-source counts a 4xx/5xx as sent).
stop_postern() {
    stop "$pg_pid"
    if grep -q -e 'ERROR: AddressSanitizer' -e 'runtime error:' "$pg_dir/postern.log"; then
        die "sanitizer report in $pg_dir/postern.log"
    fi
    if grep -q -E 'result=(tempfail|reject)' "$pg_dir/postern.log"; then
        die "postern refused messages: $(grep -m3 -E 'tempfail|reject' "$pg_dir/postern.log")"
    fi
}

mrate() { printf '%.0f' "$(median "$@")"; }   # a median msg/s
size_label() { awk -v b="$1" 'BEGIN { printf "%g KB", b / 1024 }'; }
count_for() { if [ "$1" -ge 102400 ]; then echo "$messages_large"; else echo "$messages"; fi; }

# Every figure goes into $work/report, printed at the end.
report() { printf "$@" >>"$work/report"; }
: >"$work/report"
report '%s, %s CPUs, %s\n' "$("$postern_bin" --version 2>/dev/null | head -1)" \
    "$(nproc)" "$(date -u '+%Y-%m-%d %H:%M UTC')"

# --- 1. throughput against smtp-sink ------------------------------------------

if want throughput; then
    create_us=$(python3 "$here/create_cost.py" "$work" 200)
    report '\n## Throughput (smtp-source -s %d; ratio = postern / smtp-sink, same run; store_file fsync=%s; median of %d round(s); %s µs per file created before the first run)\n\n' \
        "$sessions" "$fsync" "$rounds" "$create_us"
    report '| size | msgs/conn | messages | smtp-sink msg/s | discard msg/s | ratio | store_file msg/s | ratio | store_file / discard |\n'
    report '|---|---|---:|---:|---:|---:|---:|---:|---:|\n'
    for size in $sizes; do
        count=$(count_for "$size")
        for mode in one many; do
            sl=() dl=() fl=() dr=() fr=() fd=()
            for round in $(seq 1 "$rounds"); do
                # smtp-sink, discard, store_file one after the other: the
                # ratios of a round share the machine's state.
                sport=$(free_port)
                sink_start "$sport"
                secs=$(run_source "$sport" "$mode" "$count" "$size") ||
                    die "smtp-source against smtp-sink failed"
                stop "$sink_pid"
                s=$(rate "$count" "$secs")
                declare -A r=()
                for store in discard store_file; do
                    start_postern "$store" "$size-$mode-$round"
                    secs=$(run_source "$port" "$mode" "$count" "$size") ||
                        die "smtp-source against postern ($store, $mode) failed"
                    r[$store]=$(rate "$count" "$secs")
                    if [ "$store" = store_file ]; then
                        stored=$(find "$pg_dir/maildir/new" -type f | wc -l)
                        [ "$stored" -eq "$count" ] ||
                            die "store_file stored $stored of $count messages"
                    fi
                    stop_postern
                    # Kept until the end (bench_cleanup): on ext4 without
                    # a journal, deleting thousands of files makes every
                    # file creation of the next minutes slow (see
                    # bench/create_cost.py), which the next store_file
                    # run would pay.
                done
                log "$(size_label "$size") $mode/conn round $round: smtp-sink $s, discard ${r[discard]}, store_file ${r[store_file]} msg/s"
                sl+=("$s") dl+=("${r[discard]}") fl+=("${r[store_file]}")
                dr+=("$(ratio "${r[discard]}" "$s")")
                fr+=("$(ratio "${r[store_file]}" "$s")")
                fd+=("$(ratio "${r[store_file]}" "${r[discard]}")")
            done
            report '| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n' \
                "$(size_label "$size")" "$mode" "$count" "$(mrate "${sl[@]}")" \
                "$(mrate "${dl[@]}")" "$(median "${dr[@]}")" \
                "$(mrate "${fl[@]}")" "$(median "${fr[@]}")" \
                "$(median "${fd[@]}")"
        done
    done
fi

# --- 2. workers=1 against workers=N -------------------------------------------

if want workers; then
    size=10240 count=$messages
    sl=() w1=() wn=() r1=() rn=() rr=()
    for round in $(seq 1 "$rounds"); do
        sport=$(free_port)
        sink_start "$sport"
        secs=$(run_source "$sport" many "$count" "$size") || die "smtp-source against smtp-sink failed"
        stop "$sink_pid"
        s=$(rate "$count" "$secs")
        declare -A w=()
        for n in 1 "$workers_n"; do
            start_postern discard "workers$n-$round" "$n"
            secs=$(run_source "$port" many "$count" "$size") ||
                die "smtp-source against postern (workers=$n) failed"
            w[$n]=$(rate "$count" "$secs")
            procs=$(( $(pgrep -c -P "$pg_pid" || true) + 1 ))
            stop_postern
            w[$n.procs]=$procs
            log "workers=$n round $round ($procs processes): ${w[$n]} msg/s"
        done
        sl+=("$s") w1+=("${w[1]}") wn+=("${w[$workers_n]}")
        r1+=("$(ratio "${w[1]}" "$s")") rn+=("$(ratio "${w[$workers_n]}" "$s")")
        rr+=("$(ratio "${w[$workers_n]}" "${w[1]}")")
    done
    report '\n## Workers (discard, 10 KB, many per connection, %d messages; smtp-sink %s msg/s in the same run; median of %d round(s))\n\n' \
        "$count" "$(mrate "${sl[@]}")" "$rounds"
    report '| workers | processes seen | msg/s | ratio to smtp-sink | ratio to workers=1 |\n|---|---:|---:|---:|---:|\n'
    report '| 1 | %s | %s | %s | 1.00 |\n' "${w[1.procs]}" "$(mrate "${w1[@]}")" "$(median "${r1[@]}")"
    report '| %s | %s | %s | %s | %s |\n' "$workers_n" "${w[$workers_n.procs]}" \
        "$(mrate "${wn[@]}")" "$(median "${rn[@]}")" "$(median "${rr[@]}")"
fi

# --- 3. idle memory -----------------------------------------------------------

if want idle; then
    report '\n## Memory per idle connection (%d connections)\n\n' "$idle_connections"
    if [ -x "$here/idle_memory.sh" ]; then
        log "bench/idle_memory.sh -s $idle_connections"
        if BENCH_BUILD_DIR=$build "$here/idle_memory.sh" -s "$idle_connections" \
            >"$work/idle.out" 2>"$work/idle.err"; then
            report '```\n%s\n```\n' "$(sed '/./,$!d' "$work/idle.out")"
        else
            report 'bench/idle_memory.sh failed: %s\n' "$(tail -3 "$work/idle.err")"
        fi
    else
        report 'not measured (no executable bench/idle_memory.sh)\n'
    fi
fi

# --- 4. TLS with and without resumption ---------------------------------------

if want tls; then
    if [ "$tls_key" = rsa ]; then keyopt=(--key-type=rsa --bits=2048)
    else keyopt=(--key-type=ecdsa); fi
    certtool --generate-privkey "${keyopt[@]}" --outfile "$work/key.pem" 2>/dev/null
    printf 'cn = "bench.postern.test"\ndns_name = "bench.postern.test"\nexpiration_days = 2\ntls_www_server\nsigning_key\nencryption_key\n' \
        >"$work/cert.tmpl"
    certtool --generate-self-signed --load-privkey "$work/key.pem" \
        --template "$work/cert.tmpl" --outfile "$work/cert.pem" 2>/dev/null
    start_postern discard tls 1 implicit
    tls_port=$port tls_pid=$pg_pid tls_dir=$pg_dir
    start_postern discard plain 1 none
    plain_port=$port plain_pid=$pg_pid
    # postern's CPU time (user + system, clock ticks) over the process and
    # its children (the supervisor's workers), steadier than msg/s on a
    # shared machine.
    cpu_ticks() {
        local p t=0
        for p in "$1" $(pgrep -P "$1" || true); do
            t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
        done
        echo "$t"
    }
    declare -A tls_us=()
    # tls_run NAME PORT PID FLAGS...: one tls_load.py run, its JSON in
    # $work, postern's CPU microseconds per message in tls_us[NAME].
    tls_run() {
        local name=$1 p=$2 pid=$3 c0 c1
        shift 3
        c0=$(cpu_ticks "$pid")
        timeout "$run_timeout" python3 "$here/tls_load.py" --port "$p" \
            --messages "$tls_messages" --connections "$tls_connections" \
            --size "$tls_size" "$@" >"$work/tls-$name.json" ||
            die "tls_load.py $name failed: $(cat "$work/tls-$name.json")"
        c1=$(cpu_ticks "$pid")
        tls_us[$name]=$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" \
            -v n="$tls_messages" 'BEGIN { printf "%.0f", (b - a) * 1e6 / hz / n }')
        log "tls $name: $(cat "$work/tls-$name.json"), postern ${tls_us[$name]} us CPU/msg"
    }
    field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/tls-$1.json" "$2"; }
    tls_run plain "$plain_port" "$plain_pid" --plain
    tls_run tls13-full "$tls_port" "$tls_pid"
    tls_run tls13-resumed "$tls_port" "$tls_pid" --resume
    tls_run tls12-full "$tls_port" "$tls_pid" --tls12
    tls_run tls12-resumed "$tls_port" "$tls_pid" --tls12 --resume
    stop_postern                        # the plaintext one
    pg_pid=$tls_pid pg_dir=$tls_dir
    stop_postern
    plain=$(field plain msg_per_s)
    report '\n## TLS (implicit TLS, one %d-byte message per connection, %d clients, %d messages, %s server key; discard)\n\n' \
        "$tls_size" "$tls_connections" "$tls_messages" "$tls_key"
    report '| load | msg/s | resumed handshakes | ratio to plaintext | resumed / full | postern CPU us/msg | CPU resumed / full |\n|---|---:|---:|---:|---:|---:|---:|\n'
    report '| plaintext, same load | %s | | 1.00 | | %s | |\n' "$plain" "${tls_us[plain]}"
    for v in tls13 tls12; do
        full=$(field "$v-full" msg_per_s)
        res=$(field "$v-resumed" msg_per_s)
        label="TLS 1.3"; [ "$v" = tls12 ] && label="TLS 1.2"
        report '| %s, full handshake | %s | %s | %s | | %s | |\n' "$label" "$full" \
            "$(field "$v-full" resumed_fraction)" "$(ratio "$full" "$plain")" \
            "${tls_us[$v-full]}"
        report '| %s, resumed (ticket) | %s | %s | %s | %s | %s | %s |\n' "$label" "$res" \
            "$(field "$v-resumed" resumed_fraction)" "$(ratio "$res" "$plain")" \
            "$(ratio "$res" "$full")" "${tls_us[$v-resumed]}" \
            "$(ratio "${tls_us[$v-resumed]}" "${tls_us[$v-full]}")"
    done
fi

# --- 5. one 50 MB message must not cost 50 MB of RSS -------------------------

if want large; then
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
    stop_postern
    growth=$((rss_after - rss_before))
    report '\n## One 50 MB message (discard)\n\npostern peak RSS %s KiB before, %s KiB after: +%s KiB (%s%% of the message size)\n' \
        "$rss_before" "$rss_after" "$growth" \
        "$(awk -v g="$growth" 'BEGIN { printf "%.2f", g * 1024 * 100 / 52000016 }')"
fi

printf '\n'
cat "$work/report"
