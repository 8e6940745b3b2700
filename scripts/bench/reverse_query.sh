#!/usr/bin/env bash
# Reverse-query benchmark: secure JSON mode, SQLite. See docs/PERFORMANCE.md.
#
# Builds release, and for each value in WORKERS_LIST: starts `wxexpress serve` on a fresh
# SQLite database in a temp dir, seeds WAYBILLS waybills (five nodes each), checks one
# request with curl (reply decrypted and checked), writes REQUESTS unique pre-encrypted
# requests, and runs wrk against them so each is sent once (the fresh path). Then, unless
# REPLAY=0, it measures the replay path: 2000 requests, all sent once in a warm-up, then
# cycled. Prints wrk's report, server CPU, and a summary table. Stops the server.
#
# Knobs (environment): PORT=18080 WAYBILLS=10000 REQUESTS=600000 THREADS=2 CONNECTIONS=32
# DURATION=20s WORKERS_LIST="2 1" REPLAY=1 KEEP=0 (keep the temp dir). RUST_LOG passes
# through to the server (unset: its default, one info line per answered query).
#
# Needs: cargo, wrk (apt-get install -y wrk), curl, sqlite3.
set -euo pipefail

PORT=${PORT:-18080}
WAYBILLS=${WAYBILLS:-10000}
REQUESTS=${REQUESTS:-600000}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-20s}
WORKERS_LIST=${WORKERS_LIST:-"2 1"}
REPLAY=${REPLAY:-1}
REPLAY_REQUESTS=2000

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LUA="$ROOT/scripts/bench/reverse_query.lua"
BIN="$ROOT/target/release/wxexpress"
LOAD="$ROOT/target/release/examples/reverse_query_load"
URL="http://127.0.0.1:$PORT"

for tool in wrk curl sqlite3; do
    command -v "$tool" >/dev/null || { echo "reverse_query.sh: $tool is not installed" >&2; exit 1; }
done

echo "== building (release)"
(cd "$ROOT" && cargo build --release --bin wxexpress --example reverse_query_load)

TMP=$(mktemp -d /tmp/wxexpress-bench.XXXXXX)
SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# Gateway configuration: secure mode, JSON, real (non-sandbox) credentials of our own.
export WXEXPRESS_SERVER__LISTEN="127.0.0.1:$PORT"
export WXEXPRESS_WECHAT__APPID=wxbench0000000001
export WXEXPRESS_WECHAT__SECRET=benchsecret00000000000000000000a
export WXEXPRESS_WECHAT__ORIGINAL_ID=gh_bench00000001
export WXEXPRESS_WECHAT__TOKEN=benchtoken
export WXEXPRESS_WECHAT__ENCODING_AES_KEY=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG
export WXEXPRESS_WECHAT__MESSAGE_MODE=secure
export WXEXPRESS_WECHAT__MESSAGE_FORMAT=json
export WXEXPRESS_BACKOFFICE__API_KEYS=bench-api-key-0123456789
export WXEXPRESS_PRIVACY__DATA_KEY=$(head -c 32 /dev/urandom | base64)
# No pushes to WeChat during the benchmark: it measures the callback alone.
export WXEXPRESS_OUTBOX__ENABLED=false

CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }      # utime + stime of a process
cpu_idle_total() { awk '/^cpu /{idle = $5 + $6; t = 0; for (i = 2; i <= NF; i++) t += $i; print idle, t}' /proc/stat; }
field() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<"$2"; }

SUMMARY=()

# run_wrk LABEL PREFIX [cycle]: one measured wrk run; prints its report and appends a summary row.
run_wrk() {
    local label=$1 prefix=$2 mode=${3:-}
    local t0 t1 i0 i1 tot0 tot1 out secs busy server_cores wrk_cpu others
    t0=$(proc_ticks "$SERVER_PID"); read -r i0 tot0 < <(cpu_idle_total)
    local wrk_times="$TMP/wrk_times"
    out=$( { TIMEFORMAT='%U %S'; time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$URL" -- "$prefix" $mode; } 2>"$wrk_times" )
    t1=$(proc_ticks "$SERVER_PID"); read -r i1 tot1 < <(cpu_idle_total)
    echo "$out"
    local result; result=$(grep '^RESULT' <<<"$out")
    secs=$(field secs "$result")
    server_cores=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN{printf "%.2f", d / hz / s}')
    wrk_cpu=$(awk -v s="$secs" '{printf "%.2f", ($1 + $2) / s}' "$wrk_times")
    busy=$(awk -v di=$((i1 - i0)) -v dt=$((tot1 - tot0)) 'BEGIN{printf "%.0f", 100 * (1 - di / dt)}')
    others=$(awk -v b="$busy" -v n="$NPROC" -v s="$server_cores" -v w="$wrk_cpu" 'BEGIN{o = b * n / 100 - s - w; printf "%.2f", o < 0 ? 0 : o}')
    echo "cpu: server ${server_cores} cores, wrk ${wrk_cpu} cores, other processes ${others} cores; machine ${busy}% busy (${NPROC} cpus)"
    if [[ -z "$mode" && $(field wraps "$result") != 0 ]]; then
        echo "FAILED: the request file ran out and wrapped (replays mixed in); raise REQUESTS" >&2
        exit 1
    fi
    if [[ $(field non2xx "$result") != 0 || $(field timeouts "$result") != 0 ]]; then
        echo "FAILED: non-2xx responses or timeouts" >&2
        exit 1
    fi
    SUMMARY+=("$(printf '%-7s %-7s %8s %8s %8s %8s %9s %7s %7s %7s' "$W" "$label" \
        "$(field rps "$result")" "$(field p50_ms "$result")" "$(field p90_ms "$result")" "$(field p99_ms "$result")" \
        "$(field requests "$result")" "$server_cores" "$wrk_cpu" "$others")")
}

exchanges() { sqlite3 "$DIR/db.sqlite" "SELECT count(*) FROM callback_exchanges"; }

for W in $WORKERS_LIST; do
    DIR="$TMP/workers-$W"; mkdir -p "$DIR"
    echo; echo "== workers=$W: starting the gateway ($DIR)"
    WXEXPRESS_SERVER__WORKERS=$W WXEXPRESS_DATABASE__URL="sqlite://$DIR/db.sqlite" "$BIN" serve >"$DIR/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.2; done
    curl -sf "$URL/readyz" >/dev/null || { echo "gateway did not become ready:" >&2; cat "$DIR/server.log" >&2; exit 1; }

    echo "== seeding $WAYBILLS waybills x 5 events"
    "$LOAD" seed --url "$URL" --waybills "$WAYBILLS"

    echo "== probe: one request with curl, reply verified and decrypted"
    "$LOAD" requests --waybills "$WAYBILLS" --count 1 --out "$DIR/probe"
    IFS=$'\t' read -r query body <"$DIR/probe.1"
    nonce=$(sed -n 's/.*[&]nonce=\([^&]*\).*/\1/p' <<<"$query")
    code=$(curl -s -o "$DIR/probe.reply" -w '%{http_code}' -X POST "$URL/wechat/callback?$query" \
        -H 'Content-Type: application/json' --data-binary "$body")
    echo "HTTP $code, $(wc -c <"$DIR/probe.reply") bytes"
    [[ "$code" == 200 ]] || { echo "probe failed" >&2; exit 1; }
    "$LOAD" verify --nonce "$nonce" <"$DIR/probe.reply"

    echo "== fresh path: $REQUESTS unique requests, each sent at most once"
    "$LOAD" requests --waybills "$WAYBILLS" --count "$REQUESTS" --threads "$THREADS" --out "$DIR/fresh"
    before=$(exchanges)
    run_wrk fresh "$DIR/fresh"
    echo "exchanges stored during the run: $(( $(exchanges) - before )); result codes: $(sqlite3 "$DIR/db.sqlite" \
        "SELECT group_concat(result_code || ':' || n, ' ') FROM (SELECT result_code, count(*) n FROM callback_exchanges GROUP BY 1)")"

    if [[ "$REPLAY" == 1 ]]; then
        echo "== replay path: $REPLAY_REQUESTS requests, all sent once in a warm-up, then cycled"
        "$LOAD" requests --waybills "$WAYBILLS" --count "$REPLAY_REQUESTS" --threads "$THREADS" --out "$DIR/replay"
        warm=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$LUA" "$URL" -- "$DIR/replay" cycle | grep '^RESULT')
        [[ $(field wraps "$warm") -ge "$THREADS" ]] || { echo "warm-up did not send every replay request: $warm" >&2; exit 1; }
        before=$(exchanges)
        run_wrk replay "$DIR/replay" cycle
        echo "exchanges stored during the replay run: $(( $(exchanges) - before )) (expected 0)"
    fi

    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
done

echo
echo "== summary (wrk -t$THREADS -c$CONNECTIONS -d$DURATION; latency in ms; cpu in cores)"
echo "RUST_LOG=${RUST_LOG:-unset} database.max_connections=${WXEXPRESS_DATABASE__MAX_CONNECTIONS:-default}"
printf '%-7s %-7s %8s %8s %8s %8s %9s %7s %7s %7s\n' workers path req/s p50 p90 p99 requests server wrk others
printf '%s\n' "${SUMMARY[@]}"
