#!/usr/bin/env bash
#
# bench/handoff.sh - what handing a message off costs: postern's msg/s
# with store_http (JSON over HTTP to a local nginx that answers at once)
# and with forward (SMTP to Postfix's smtp-sink), as ratios to discard,
# same binary, same run, on loopback. The load is smtp-source, many
# messages per connection, 10 KB payload.
#
# The receivers' own ceilings are measured in the same run: nginx with wrk
# posting a body the size of one store_http document, smtp-sink with the
# same smtp-source load. Rounds alternate discard / store_http / forward so
# the noise of a shared machine hits all of them alike; the report gives
# each round and the median ratio. See bench/README.md. Not a test:
# nothing here passes or fails on speed.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES  [10000] messages per run
#   BENCH_SESSIONS  [20]    parallel SMTP sessions (smtp-source -s)
#   BENCH_SIZE      [10240] payload bytes per message (smtp-source -l)
#   BENCH_ROUNDS    [3]     rounds of the three
#   BENCH_BUILD_DIR [<repo>/build-bench]
#   BENCH_TIMEOUT   [300]   seconds before a single run is abandoned
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init bench-handoff
messages=${BENCH_MESSAGES:-10000}
sessions=${BENCH_SESSIONS:-20}
size=${BENCH_SIZE:-10240}
rounds=${BENCH_ROUNDS:-3}
run_timeout=${BENCH_TIMEOUT:-300}

# --- tools ------------------------------------------------------------------

need=""
command -v smtp-source >/dev/null || need="$need postfix"
command -v nginx >/dev/null || need="$need nginx-light"
command -v wrk >/dev/null || need="$need wrk"
if [ -n "$need" ]; then
    log "installing:$need"
    [ "$(id -u)" -eq 0 ] || die "run as root to install$need, or install them"
    # Only the programs are wanted, never a running MTA or web server.
    echo "postfix postfix/main_mailer_type select No configuration" |
        debconf-set-selections
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $need >/dev/null || {
        rm -f /usr/sbin/policy-rc.d
        die "could not install$need"
    }
    rm -f /usr/sbin/policy-rc.d
fi
for p in smtp-source smtp-sink nginx wrk python3; do
    command -v $p >/dev/null || die "$p not found"
done

# --- build ------------------------------------------------------------------

build_postern
for m in discard store_http forward; do
    [ -f "$build/modules/$m.so" ] || die "no $m module in $build/modules"
done

# --- helpers ----------------------------------------------------------------

# run_source PORT: sends the load (many per connection), prints the seconds.
run_source() {
    local port=$1 start end
    start=$(now)
    if ! timeout "$run_timeout" smtp-source -d -s "$sessions" -m "$messages" \
        -l "$size" -M bench.client -f a@example.org -t b@example.com \
        "127.0.0.1:$port" >"$work/source.out" 2>&1; then
        cat "$work/source.out" >&2
        return 1
    fi
    end=$(now)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

# --- the receivers ------------------------------------------------------------

# nginx answers every POST at once with a JSON id, keeping connections open.
http_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    client_max_body_size 200m;
    client_body_buffer_size 1m;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$http_port;
        location / {
            default_type application/json;
            return 200 '{"id":"bench"}';
        }
    }
}
EOF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx/stderr" &
pids+=("$!")
wait_port "$http_port" "$!" || die "nginx did not start: $(cat "$work/nginx/stderr" "$work/nginx/error.log" 2>/dev/null)"

sink_port=$(free_port)
sink_start "$sink_port"

# One store_http document for a 10 KB message is about 4/3 of it in base64
# plus a kilobyte of envelope.
doc_bytes=$(( (size + 600) * 4 / 3 + 1200 ))
cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.rep("A", $doc_bytes)
EOF
nginx_rate=$(wrk -t1 -c"$sessions" -d5s -s "$work/post.lua" \
    "http://127.0.0.1:$http_port/" | awk '/^Requests\/sec/ {printf "%.0f", $2}')
sink_secs=$(run_source "$sink_port") || die "smtp-source against smtp-sink failed"
sink_rate=$(rate "$messages" "$sink_secs")
log "ceilings: nginx ${nginx_rate} req/s (wrk, $doc_bytes-byte POST), smtp-sink ${sink_rate} msg/s"

# --- postern ------------------------------------------------------------------

# start_postern STORE ROUND: writes the config, starts postern, sets $port.
start_postern() {
    local store=$1 dir=$work/postern-$1-$2
    mkdir -p "$dir/plugins.d" "$dir/spool"
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
    case $store in
    discard) echo '{"module": "discard"}' ;;
    store_http)
        printf '{"module": "store_http", "config": {"url": "http://127.0.0.1:%s/"}}\n' "$http_port" ;;
    forward)
        printf '{"module": "forward", "config": {"routes": {"*": "smtp://127.0.0.1:%s"}}}\n' "$sink_port" ;;
    esac >"$dir/plugins.d/50-$store.json"
    "$postern_bin" -c "$dir/postern.json" 2>"$dir/postern.log" &
    pg_pid=$!
    pids+=("$pg_pid")
    pg_dir=$dir
    wait_port "$port" "$pg_pid" || die "postern did not start: $(tail -5 "$dir/postern.log")"
    wait_ready "$dir/postern.log" "$pg_pid" || die "postern's workers did not all start: $(tail -5 "$dir/postern.log")"
}

declare -A pg_rate
for round in $(seq 1 "$rounds"); do
    for store in discard store_http forward; do
        start_postern "$store" "$round"
        secs=$(run_source "$port") || die "smtp-source against postern ($store) failed: $(tail -5 "$pg_dir/postern.log")"
        pg_rate[$store.$round]=$(rate "$messages" "$secs")
        # smtp-source counts a 4xx/5xx as sent: make sure none happened.
        if grep -q -E 'result=(tempfail|reject)|status=(4|5)[0-9][0-9]' "$pg_dir/postern.log"; then
            die "$store refused messages: $(grep -m3 -E 'tempfail|reject' "$pg_dir/postern.log")"
        fi
        log "round $round $store: ${secs}s, ${pg_rate[$store.$round]} msg/s"
        stop "$pg_pid"
    done
done

# --- report -------------------------------------------------------------------

printf '\n%s: %d messages, %d-byte payload, %d parallel sessions, many per connection, %s\n' \
    "$("$postern_bin" --version 2>/dev/null | head -1)" "$messages" "$size" \
    "$sessions" "$(nproc) CPUs"
printf 'receivers alone: nginx %s req/s (wrk, %d-byte POST), smtp-sink %s msg/s (same smtp-source load)\n\n' \
    "$nginx_rate" "$doc_bytes" "$sink_rate"
printf '%-6s %12s %15s %12s %16s %13s\n' round "discard/s" "store_http/s" \
    "forward/s" "store_http/disc" "forward/disc"
for round in $(seq 1 "$rounds"); do
    d=${pg_rate[discard.$round]} h=${pg_rate[store_http.$round]} f=${pg_rate[forward.$round]}
    printf '%-6s %12s %15s %12s %16s %13s\n' "$round" "$d" "$h" "$f" \
        "$(awk -v a="$h" -v b="$d" 'BEGIN { printf "%.2f", a / b }')" \
        "$(awk -v a="$f" -v b="$d" 'BEGIN { printf "%.2f", a / b }')"
done
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }'; }
mh=$(for r in $(seq 1 "$rounds"); do
    awk -v a="${pg_rate[store_http.$r]}" -v b="${pg_rate[discard.$r]}" 'BEGIN { print a / b }'
done | median)
mf=$(for r in $(seq 1 "$rounds"); do
    awk -v a="${pg_rate[forward.$r]}" -v b="${pg_rate[discard.$r]}" 'BEGIN { print a / b }'
done | median)
printf '\nmedian ratio to discard: store_http %s, forward %s\n' "$mh" "$mf"
