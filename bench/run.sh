#!/usr/bin/env bash
# Runs libaise's engine benchmarks side by side with the CAF peer in the
# same run on the same machine, and prints JSON lines (one per workload and
# side, min/median/max over RUNS processes) plus one line of ratios.
#
#   bash bench/run.sh              (a few minutes: builds, then measures)
#
# Environment knobs:
#   RUNS=3            process runs per workload and side
#   PEERS_DIR=DIR     the peers folder (default: ../shared/peers beside the
#                     checkout); without it only libaise is measured
#   BUILD_DIR=DIR     where libaise's release build lives (default build/release)
#   CHAIN_RUNS=20000  runs of the chain3 workloads (fanout5 uses half)
#
# Every measured process holds /tmp/aise-bench.lock (flock), like the peers,
# so two benchmarks never overlap; builds do not hold it. A comparison only
# counts when both sides ran in this run: numbers are never reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
BUILD_DIR=${BUILD_DIR:-$root/build/release}
PEERS_DIR=${PEERS_DIR:-$root/../shared/peers}
CHAIN_RUNS=${CHAIN_RUNS:-20000}
LOCK=/tmp/aise-bench.lock
PY=/usr/bin/python3
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bash "$root/scripts/setup.sh" >&2
bash "$root/scripts/build.sh" release >&2
bin="$BUILD_DIR/bench/aise_bench"
[ -x "$bin" ] || { log "error: $bin was not built"; exit 1; }

raw=$(mktemp)
peer_out=$(mktemp)
trap 'rm -f "$raw" "$peer_out"' EXIT

measure() {
  local i
  for i in $(seq 1 "$RUNS"); do
    log "aise $* (run $i/$RUNS)"
    flock "$LOCK" "$bin" "$@" >>"$raw"
  done
}
measure pingpong 1
measure pingpong 4
measure request_reply_latency
measure fanout_fanin
measure chain3 "$CHAIN_RUNS" 1000
measure chain3_keep_all "$CHAIN_RUNS" 1000
measure fanout5 $((CHAIN_RUNS / 2)) 500

if [ -f "$PEERS_DIR/caf/run.sh" ]; then
  log "running the CAF peer (same machine, same run)"
  RUNS=$RUNS PAIRS_LIST="1 4" bash "$PEERS_DIR/caf/run.sh" >"$peer_out"
else
  log "no peers folder at $PEERS_DIR: measuring libaise alone (no ratios)"
fi

"$PY" - "$raw" "$peer_out" <<'PY'
import json, statistics, sys

def summarize(path):
    groups = {}
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        metrics = rec.pop("metrics")
        key = json.dumps(rec, sort_keys=True)
        groups.setdefault(key, (rec, []))[1].append(metrics)
    out = []
    for rec, runs in groups.values():
        row = dict(rec)
        for name in runs[0]:
            values = sorted(r[name] for r in runs)
            row[name] = {"min": values[0], "median": statistics.median(values), "max": values[-1]}
        row["processes"] = len(runs)
        out.append(row)
    return out

ours = summarize(sys.argv[1])
for row in ours:
    print(json.dumps(row))
peers = []
for line in open(sys.argv[2]):
    line = line.strip()
    if line:
        peers.append(json.loads(line))
        print(line)

def pick(rows, workload, **where):
    for r in rows:
        if r.get("workload") == workload and all(r.get(k) == v for k, v in where.items()):
            return r
    return None

def med(row, metric):
    v = row.get(metric) if row else None
    return v["median"] if isinstance(v, dict) else v

if peers:
    ratios = {"compare": "aise vs caf (medians, same run)"}
    for pairs in (1, 4):
        a, c = pick(ours, "pingpong", pairs=pairs), pick(peers, "pingpong", pairs=pairs)
        if a and c:
            ratios[f"pingpong_{pairs}_throughput_ratio"] = round(med(a, "msgs_per_s") / med(c, "msgs_per_s"), 2)
    a, c = pick(ours, "request_reply_latency"), pick(peers, "request_reply_latency")
    if a and c:
        ratios["request_reply_p50_ratio_caf_over_aise"] = round(med(c, "p50_us") / med(a, "p50_us"), 2)
        ratios["request_reply_p99_ratio_caf_over_aise"] = round(med(c, "p99_us") / med(a, "p99_us"), 2)
    a, c = pick(ours, "fanout_fanin"), pick(peers, "fanout_fanin")
    if a and c:
        ratios["fanout_fanin_ratio_caf_over_aise"] = round(med(c, "us_per_round") / med(a, "us_per_round"), 2)
    ratios["target_pingpong_ratio"] = 1.5
    chain = pick(ours, "chain3")
    if chain:
        ratios["chain3_us_per_run"] = med(chain, "us_per_run")
        ratios["target_chain3_us_per_run"] = 10.0
    keep_all = pick(ours, "chain3_keep_all")
    if keep_all:
        ratios["chain3_keep_all_us_per_run"] = med(keep_all, "us_per_run")
    print(json.dumps(ratios))
PY
