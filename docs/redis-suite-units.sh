#!/usr/bin/env bash
# Run units of Redis's own test suite (../shared/redis-suite, see its README.md) one at a
# time, each against FRESH servers: four redis-servers and rustproxy in front of them (or one
# plain redis-server with `direct`), started here and killed by PID after the unit, so that a
# unit that leaves a backend busy (a runaway script) cannot poison the next one.
#
#   docs/redis-suite-units.sh OUTDIR PROXY_BINARY|direct [UNIT...]
#
# OUTDIR gets summary.txt (one line per unit: ok= err= skipped=) and each unit's full output.
# SKIPFILE=path: tests to skip (names or /regexps, one per line, Redis's --skipfile), for
# diagnostic runs only. BASE=port: first port used (default 17100; BASE..BASE+4).
# MODE=multidb (proxy only): run with Redis's databases. The runner normally passes
# --cluster-mode in proxy mode (= --singledb, no SELECT, plus skipping tests tagged
# cluster:skip); with MODE=multidb it passes neither --cluster-mode nor --singledb, so every
# test client does SELECT 9 (as against a plain redis-server) and cluster:skip /
# singledb:skip tests run too. The runner's backend fallbacks (OBJECT / MEMORY USAGE) then
# also SELECT 9 on the backends so they find the test's keys. Default (unset): single db.
# Each unit is bounded (timeout); the suite itself is a tool, not part of `make test`.
set -u
OUT=$1; BIN=$2; shift 2
SUITE=${SUITE:-$(cd "$(dirname "$0")/../.." && pwd)/shared/redis-suite}
[ -f "$SUITE/run.sh" ] || SUITE=/work/shared/redis-suite
ALL="unit/type/string unit/type/incr unit/type/hash unit/type/list unit/type/list-2 unit/type/list-3
unit/type/set unit/type/zset unit/expire unit/keyspace unit/hyperloglog unit/bitops unit/bitfield
unit/geo unit/scan unit/info-command unit/type/stream unit/type/stream-cgroups unit/sort unit/dump
unit/protocol unit/other unit/quit unit/multi unit/pubsub unit/pubsubshard unit/scripting
unit/functions unit/introspection unit/introspection-2 unit/tracking unit/querybuf unit/lazyfree"
UNITS=${*:-$ALL}
BASE=${BASE:-17100}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The runner, with --skipfile passed through when SKIPFILE is set (and MODE=multidb applied).
RUNNER="$OUT/run.sh"
sed 's#SRC="$(cd "$(dirname "${BASH_SOURCE\[0\]}")" \&\& pwd)"#SRC='"$SUITE"'#' "$SUITE/run.sh" > "$RUNNER"
MODE=${MODE:-}
case "$MODE" in ""|multidb) ;; *) echo "MODE must be unset or multidb" >&2; exit 2;; esac
[ "$MODE" = multidb ] && [ "$BIN" = direct ] && { echo "MODE=multidb needs a proxy binary" >&2; exit 2; }
python3 - "$RUNNER" "$MODE" <<'PY'
import sys
p = sys.argv[1]; mode = sys.argv[2]; s = open(p).read()
hook = 'export SUITE_BACKENDS="$BACKENDS"\n'
s = s.replace(hook, 'if [ -n "${SKIPFILE:-}" ]; then FLAGS+=(--skipfile "$SKIPFILE"); fi\n' + hook, 1)
if mode == "multidb":
    flag = 'if [ "$MODE" = proxy ]; then FLAGS+=(--cluster-mode); else FLAGS+=(--singledb); fi\n'
    assert flag in s, "runner: mode line not found"
    s = s.replace(flag, 'if [ "$MODE" = proxy ]; then :; else FLAGS+=(--singledb); fi  # MODE=multidb\n', 1)
    # backend clients of the shim (fallbacks) use the tests' database 9
    conn = 'lappend out [redis [string range $hp 0 [expr {$i-1}]] [string range $hp [expr {$i+1}] end] 0 0]\n'
    assert conn in s, "runner: shim backend client not found"
    s = s.replace(conn, 'set c [redis [string range $hp 0 [expr {$i-1}]] [string range $hp [expr {$i+1}] end] 0 0]\n'
                  '            if {!$::singledb} { catch {$c select 9} }\n            lappend out $c\n', 1)
open(p, "w").write(s)
PY
wait_port() {
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
: > "$OUT/summary.txt"
for u in $UNITS; do
  name=$(echo "$u" | tr / _)
  pids=()
  if [ "$BIN" = direct ]; then
    redis-server --port "$BASE" --bind 127.0.0.1 --save '' --appendonly no --dir /tmp \
      > "$OUT/$name.redis.log" 2>&1 &
    pids+=($!); wait_port "$BASE"
    extra=(--mode direct)
  else
    bl=""
    for i in 1 2 3 4; do
      p=$((BASE + i))
      redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir /tmp \
        > "$OUT/$name.redis$i.log" 2>&1 &
      pids+=($!); wait_port "$p"; bl="$bl${bl:+,}127.0.0.1:$p"
    done
    "$BIN" -l "127.0.0.1:$BASE" -b "$bl" > "$OUT/$name.proxy.log" 2>&1 &
    pids+=($!); wait_port "$BASE"
    extra=(--backends "$bl")
  fi
  timeout 420 bash "$RUNNER" --host 127.0.0.1 --port "$BASE" "${extra[@]}" --units "$u" \
    --timeout 300 --show 100 --keep --baseport 21311 > "$OUT/$name.txt" 2>&1
  kept=$(grep "^# kept " "$OUT/$name.txt" | awk '{print $3}')
  if [ -n "$kept" ]; then cp "$kept"/out-*.txt "$OUT/" 2>/dev/null; rm -rf "$kept"; fi
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  grep -E "^unit/" "$OUT/$name.txt" | head -1 >> "$OUT/summary.txt" || echo "$u (no summary)" >> "$OUT/summary.txt"
done
