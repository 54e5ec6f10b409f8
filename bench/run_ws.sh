#!/usr/bin/env bash
# WebSocket fan-out of aise-server (issue: 1,000 subscribed clients, 10,000
# events/s, p99 delivery < 10 ms, nothing lost): bench/ws_bench.cpp, the
# server, its clients and the producer in one process. Prints one JSON line
# per run, then a summary line (medians per configuration).
#
#   bash bench/run_ws.sh
#
# Environment knobs:
#   RUNS=3                 runs per configuration (median reported)
#   SECONDS_PER_RUN=10     production time of a run
#   CONFIGS="1000:10000:1:1 1000:10000:2:1 1000:1000:1:1 100:10000:1:1"
#                          clients:events_per_s:io_threads:client_threads
#   BUILD_DIR=DIR          release build (default <repo>/build/ws-bench)
#
# Every measured process holds /tmp/aise-bench.lock (flock); the build does not.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONFIGS=${CONFIGS:-"1000:10000:1:1 1000:10000:2:1 1000:1000:1:1 100:10000:1:1"}
BUILD_DIR=${BUILD_DIR:-$root/build/ws-bench}
LOCK=/tmp/aise-bench.lock
PY=${PY:-python3}

log() { echo "[run_ws] $*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/aise-ws-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

log "building aise_ws_bench in $BUILD_DIR"
export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
nice cmake -S "$root" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAISE_WERROR=ON \
  -DAISE_BUILD_TESTS=OFF -DAISE_BUILD_EXAMPLES=OFF -DAISE_WITH_TORCH=OFF >"$work/configure.log" 2>&1 ||
  {
    cat "$work/configure.log" >&2
    exit 1
  }
nice cmake --build "$BUILD_DIR" -j2 --target aise_ws_bench >&2
bin="$BUILD_DIR/bench/aise_ws_bench"
[ -x "$bin" ] || {
  log "$bin was not built (AISE_WITH_SQL and the server on?)"
  exit 1
}
# 1,000 clients hold 2,000 sockets in this process.
ulimit -n 8192 2>/dev/null || true

lines="$work/lines.jsonl"
: >"$lines"
log "load before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
  for config in $CONFIGS; do
    IFS=: read -r clients rate io client_threads <<<"$config"
    log "clients=$clients rate=$rate io_threads=$io client_threads=$client_threads (run $run/$RUNS)"
    flock "$LOCK" "$bin" --clients "$clients" --rate "$rate" --seconds "$SECONDS_PER_RUN" \
      --io-threads "$io" --client-threads "$client_threads" >>"$lines" || log "run failed or lost events (status $?)"
    tail -1 "$lines" >&2
  done
done
log "load after measuring: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$lines" <<'PY'
import json, statistics, sys

runs = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    print(json.dumps(r))
    key = (r["clients"], r["target_events_per_s"], r["io_threads"], r["client_threads"])
    runs.setdefault(key, []).append(r)

summary = {"summary": "ws_fanout", "target": {"clients": 1000, "events_per_s": 10000, "p99_ms": 10, "lost": 0}}
for (clients, rate, io, ct), rs in sorted(runs.items()):
    med = lambda k: round(statistics.median(r[k] for r in rs), 3)
    summary[f"c{clients}_r{rate}_io{io}_ct{ct}"] = {
        "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "max_ms": max(r["max_ms"] for r in rs),
        "events_per_s": med("events_per_s"), "deliveries_per_s": med("deliveries_per_s"),
        "lost": sum(r["lost"] for r in rs), "duplicates": sum(r["duplicates"] for r in rs),
        "gaps": sum(r["gaps"] for r in rs), "cpu_pct": med("cpu_pct"),
        "other_cpu_pct_max": max(r["other_cpu_pct"] for r in rs), "runs": len(rs)}
print(json.dumps(summary))
PY
