#!/usr/bin/env bash
# make bench: throughput of rustproxy, twemproxy (nutcracker) and direct Redis, measured in one run
# with the targets alternated inside each round, printed as req/s and ratios against twemproxy.
# Installs nothing: it says what is missing. Loopback only; everything it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
N=${N:-200000}
CLIENTS=${CLIENTS:-50}
BIN=${BIN:-target/release/rustproxy}
NUTCRACKER=$(command -v nutcracker || echo /usr/sbin/nutcracker)

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
[ -x "$NUTCRACKER" ] || missing+=(nutcracker)
[ -x "$BIN" ] || missing+=("$BIN (run: cargo build --release)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "make bench needs: ${missing[*]} (apt-get install redis-server redis-tools nutcracker)" >&2
    exit 1
fi

dir=$(mktemp -d /tmp/rustproxy-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }

backends=()
for i in 1 2 3 4; do
    p=$(free_port)
    redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null 2>&1 &
    pids+=($!); backends+=("127.0.0.1:$p"); wait_port "$p"
done
direct_port=${backends[0]##*:}

tw_port=$(free_port)
{
    echo "bench:"; echo "  listen: 127.0.0.1:$tw_port"; echo "  hash: fnv1a_64"
    echo "  distribution: ketama"; echo "  redis: true"; echo "  servers:"
    for b in "${backends[@]}"; do echo "   - $b:1"; done
} > "$dir/nutcracker.yml"
"$NUTCRACKER" -c "$dir/nutcracker.yml" -s "$(free_port)" -o "$dir/nutcracker.log" >/dev/null 2>&1 &
tw_pid=$!; pids+=($tw_pid); wait_port "$tw_port"

rp_port=$(free_port)
"$BIN" -l "127.0.0.1:$rp_port" -b "$(IFS=,; echo "${backends[*]}")" -v warn 2>"$dir/rustproxy.log" &
rp_pid=$!; pids+=($rp_pid); wait_port "$rp_port"

declare -A TARGETS=([rustproxy]=$rp_port [twemproxy]=$tw_port [direct]=$direct_port)
WORKLOADS=("get -P 1" "set -P 1" "get -P 16" "set -P 16" "mset -P 1")
# Populate so GETs hit.
redis-benchmark -p "$rp_port" -t set -n 100000 -r 100000 -c 50 -q >/dev/null 2>&1

declare -A SUM
order=(rustproxy twemproxy direct)
for ((r = 1; r <= ROUNDS; r++)); do
    for w in "${WORKLOADS[@]}"; do
        for t in "${order[@]}"; do
            set -- $w
            rps=$(redis-benchmark -p "${TARGETS[$t]}" -t "$1" "$2" "$3" -n "$N" -r 100000 -c "$CLIENTS" --csv 2>/dev/null \
                | awk -F'","' 'NR==2 {gsub(/"/,"",$2); print $2}')
            SUM["$t|$w"]=$(python3 -c "print(${SUM["$t|$w"]:-0} + ${rps:-0})")
        done
    done
    order=($(printf '%s\n' "${order[@]}" | tac))
done

printf '\n%-14s %12s %12s %12s %10s %10s\n' workload rustproxy twemproxy direct "rp/tw" "rp/direct"
for w in "${WORKLOADS[@]}"; do
    rp=$(python3 -c "print(${SUM["rustproxy|$w"]}/$ROUNDS)")
    tw=$(python3 -c "print(${SUM["twemproxy|$w"]}/$ROUNDS)")
    di=$(python3 -c "print(${SUM["direct|$w"]}/$ROUNDS)")
    python3 -c "print('%-14s %12.0f %12.0f %12.0f %9.2fx %9.2fx' % ('$w', $rp, $tw, $di, $rp/max($tw,1), $rp/max($di,1)))"
done
echo "(req/s, mean of $ROUNDS rounds, $CLIENTS clients, 4 backends; MSET is redis-benchmark's 10-key MSET)"

# Memory per idle client connection (examples/idle.rs), both proxies after the load above.
IDLE=${IDLE:-10000}
IDLE_BIN=target/release/examples/idle
if [ "$IDLE" -gt 0 ] && [ -x "$IDLE_BIN" ] && [ "$(ulimit -n)" -gt $((IDLE + 100)) ]; then
    echo
    for mode in silent ping; do
        printf '%-10s %-7s ' rustproxy "$mode"; "$IDLE_BIN" "$rp_pid" "127.0.0.1:$rp_port" "$IDLE" "$mode"
        printf '%-10s %-7s ' twemproxy "$mode"; "$IDLE_BIN" "$tw_pid" "127.0.0.1:$tw_port" "$IDLE" "$mode"
    done
    echo "(silent: connections only accepted; ping: each answered one PING, then idle)"
else
    echo "(idle-connection memory skipped: needs $IDLE_BIN and an open-file limit above $IDLE)"
fi
