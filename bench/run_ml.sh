#!/usr/bin/env bash
# Runs the ML hook benchmarks (bench/ml_bench.cpp) and prints one JSON line
# per workload with the median of RUNS process runs (and min/max of the
# judged figure). Each side and its reference run in the same process:
#   overhead   ml::model::run vs TorchScript forward() called directly, batch 1
#              (target: overhead_pct <= 5)
#   batching   16 callers through ml::make_batched vs the same calls unbatched
#              (target: speedup >= 3)
#   tokenizer  WordPiece MB/s on a generated corpus
#
#   bash bench/run_ml.sh        (about a minute after the build)
#
# Knobs: RUNS=3, BUILD_DIR (default build/release), CALLERS=16.
# Every measured process holds /tmp/aise-bench.lock (flock); builds do not.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
CALLERS=${CALLERS:-16}
BUILD_DIR=${BUILD_DIR:-$root/build/release}
LOCK=/tmp/aise-bench.lock
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bash "$root/scripts/setup.sh" >&2
bash "$root/scripts/build.sh" release >&2
bin="$BUILD_DIR/bench/aise_ml_bench"
[ -x "$bin" ] || { log "error: $bin was not built (AISE_WITH_TORCH off?)"; exit 1; }

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
# One BLAS thread per call: the unbatched side's best setting (16 callers on
# 2 cores with OpenBLAS's own threads on top oversubscribe the cores and make
# it slower, which would flatter batching). OPENBLAS_NUM_THREADS overrides.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
for i in $(seq 1 "$RUNS"); do
  for w in overhead batching tokenizer; do
    log "$w (run $i/$RUNS)"
    flock "$LOCK" "$bin" "$w" --callers "$CALLERS" >>"$raw"
  done
done

python3 - "$raw" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
judged = {"overhead": "overhead_pct", "batching": "speedup", "tokenizer": "mb_per_s"}
for w, key in judged.items():
    runs = [r for r in rows if r["workload"] == w]
    if not runs:
        continue
    out = {"workload": w, "runs": len(runs)}
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = round(statistics.median(r[k] for r in runs), 2)
    out[key + "_min"] = min(r[key] for r in runs)
    out[key + "_max"] = max(r[key] for r in runs)
    print(json.dumps(out))
PY
