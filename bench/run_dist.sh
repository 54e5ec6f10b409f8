#!/usr/bin/env bash
# End-to-end durable tasks across processes (issue 4), side by side in one
# run on the same PostgreSQL and RabbitMQ (the peers' services.sh):
#   - Celery 5, durable variant (acks_late, confirms, results committed in
#     PostgreSQL), layouts "1 2" (the peers' bench_tasks.sh);
#   - the raw RabbitMQ limit (the peers' broker/run.sh; e2e_c1 / e2e_c2 =
#     1 publisher + 1 or 2 consumers, persistent + confirmed + manual ack);
#   - libaise: bench/dist_bench.cpp (orchestrator with the RabbitMQ
#     dispatcher and PostgreSQL store, N aise-worker processes), 1 and 2
#     workers, RUNS processes each (median).
# Prints every JSON line, then one summary line with the ratios
# ours/Celery (target >= 10) and ours/raw e2e_c1 (1 worker), e2e_c2
# (2 workers) (target >= 0.5).
#
#   bash bench/run_dist.sh
#
# Environment knobs:
#   PEERS_DIR=DIR        the peers' scripts (default <repo>/../shared/peers)
#   RUNS=3               libaise processes per (variant, workers); also Celery
#                        passes (CELERY_RUNS, default RUNS)
#   TASKS=5000           measured tasks per libaise process (Celery: CELERY_TASKS,
#                        default TASKS; both warm up before measuring)
#   WARMUP=500           libaise warm-up tasks, not counted
#   WORKERS_LIST="1 2"   worker processes (libaise) / pool processes (Celery)
#   OURS_VARIANTS="matched=echo:1:1 slots16=echo:1:16"
#                        label=--agents of each aise-worker. "matched": one task
#                        at a time per worker process, as Celery's layouts (one
#                        pool process per slot, prefetch multiplier 1).
#   BROKER_RUNS=2 BROKER_N=30000 BROKER_N_SYNC=2000
#                        the raw limit's runs and sizes (its own defaults are
#                        3 / 100000 / 5000; lowered to keep the total time
#                        near 10 minutes; medians of e2e vary little with N)
#   SKIP_PEERS=1         only libaise (the ratios then need the peers' lines)
#   BUILD_DIR=DIR        release build of aise_worker + aise_dist_bench
#                        (default <repo>/build/dist)
#   KEEP_SERVICES=1      leave PostgreSQL and RabbitMQ running if this script
#                        started them
#
# Every measured process holds /tmp/aise-bench.lock (flock); builds, service
# start-up and database creation do not. Services are started here, before
# any flock, and the peers' scripts then find them running (and leave them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PEERS_DIR=${PEERS_DIR:-$root/../shared/peers}
PEERS_DIR=$(cd "$PEERS_DIR" && pwd)
# shellcheck source=/dev/null
. "$PEERS_DIR/lib.sh" # log, die, PY, PEER_BASE, PGPORT, AMQP_PORT, peer_services_up/down

RUNS=${RUNS:-3}
CELERY_RUNS=${CELERY_RUNS:-$RUNS}
TASKS=${TASKS:-5000}
CELERY_TASKS=${CELERY_TASKS:-$TASKS}
WARMUP=${WARMUP:-500}
WORKERS_LIST=${WORKERS_LIST:-"1 2"}
OURS_VARIANTS=${OURS_VARIANTS:-"matched=echo:1:1 slots16=echo:1:16"}
BROKER_RUNS=${BROKER_RUNS:-2}
BROKER_N=${BROKER_N:-30000}
BROKER_N_SYNC=${BROKER_N_SYNC:-2000}
BUILD_DIR=${BUILD_DIR:-$root/build/dist}
LOCK=/tmp/aise-bench.lock

work=$(mktemp -d "${TMPDIR:-/tmp}/aise-dist-bench.XXXXXX")
cleanup() {
  rm -rf "$work"
  peer_services_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Services first, outside any flock (a broker started under flock would
# inherit the lock's file descriptor).
peer_services_up postgres rabbitmq

log "building aise_worker and aise_dist_bench in $BUILD_DIR"
export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
nice cmake -S "$root" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAISE_WERROR=ON \
  -DAISE_BUILD_TESTS=OFF -DAISE_BUILD_EXAMPLES=OFF -DAISE_WITH_TORCH=OFF >"$work/configure.log" 2>&1 ||
  {
    cat "$work/configure.log" >&2
    die "cmake configure failed"
  }
nice cmake --build "$BUILD_DIR" -j"$(nproc)" --target aise_worker aise_dist_bench >&2
bin="$BUILD_DIR/bench/aise_dist_bench"
[ -x "$bin" ] || die "$bin was not built (AISE_WITH_RABBITMQ and AISE_WITH_SQL on?)"

lines="$work/lines.jsonl"
: >"$lines"

if [ "${SKIP_PEERS:-}" != 1 ]; then
  for run in $(seq 1 "$CELERY_RUNS"); do
    log "Celery durable, layouts $WORKERS_LIST, $CELERY_TASKS tasks (pass $run/$CELERY_RUNS)"
    VARIANTS=durable WORKERS_LIST="$WORKERS_LIST" TASKS=$CELERY_TASKS \
      bash "$PEERS_DIR/bench_tasks.sh" 3>&- | tee -a "$work/celery.jsonl" >&2
  done
  log "raw RabbitMQ limit: RUNS=$BROKER_RUNS N=$BROKER_N N_SYNC=$BROKER_N_SYNC"
  RUNS=$BROKER_RUNS N=$BROKER_N N_SYNC=$BROKER_N_SYNC \
    bash "$PEERS_DIR/broker/run.sh" 3>&- | tee "$work/broker.jsonl" >&2
  cat "$work/celery.jsonl" "$work/broker.jsonl" >>"$lines"
fi

# The infrastructure's processes: their CPU is infra_cpu_pct, not disturbance.
pg_pid=$(head -1 "$PEER_BASE/pg/data/postmaster.pid" 2>/dev/null || echo 0)
mq_pid=$(pgrep -f "beam.smp.*$PEER_BASE/rabbitmq/" | head -1 || true)
admin_url="postgresql://postgres@/postgres?host=$PEER_BASE/pg/run&port=$PGPORT"
db_url="postgresql://aise:aise@127.0.0.1:$PGPORT/aise"
amqp_url="amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2F"

log "load before measuring libaise: $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
  for variant in $OURS_VARIANTS; do
    for workers in $WORKERS_LIST; do
      log "libaise ${variant%%=*} (--agents ${variant#*=}) workers=$workers tasks=$TASKS (run $run/$RUNS)"
      flock "$LOCK" "$bin" --admin-url "$admin_url" --db-url "$db_url" --amqp "$amqp_url" \
        --workers "$workers" --agents "${variant#*=}" --label "${variant%%=*}" --tasks "$TASKS" \
        --warmup "$WARMUP" --infra-pids "$pg_pid,${mq_pid:-0}" 2>>"$work/workers.log" >>"$work/ours.jsonl" ||
        {
          tail -20 "$work/workers.log" >&2
          die "aise_dist_bench failed"
        }
      tail -1 "$work/ours.jsonl" >&2
    done
  done
done
log "load after measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$work/ours.jsonl" >>"$lines"

"$PY" - "$lines" <<'PY'
import json, statistics, sys

celery, broker, ours = {}, {}, {}
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    print(json.dumps(r))
    if r.get("system") == "libaise":
        ours.setdefault((r["variant"], r["workers"]), []).append(r)
    elif r.get("peer") == "rabbitmq-c":
        broker[r["figure"]] = r["msgs_per_s"]["median"]
    elif "tasks_per_s" in r and "workers" in r:
        celery.setdefault(r["workers"], []).append(r["tasks_per_s"])

def med(v):
    return round(statistics.median(v), 1)

summary = {"summary": "dist", "compare": "medians, same run, same PostgreSQL and RabbitMQ",
           "celery_tasks_per_s": {str(w): med(v) for w, v in sorted(celery.items())},
           "raw_e2e_msgs_per_s": {k: broker[k] for k in ("e2e_c1", "e2e_c2") if k in broker},
           "targets": {"ours_over_celery": 10, "ours_over_raw_e2e": 0.5}}
for (variant, workers), runs in sorted(ours.items()):
    tps = [r["tasks_per_s"] for r in runs]
    key = f"libaise_{variant}_w{workers}"
    summary[key] = {
        "tasks_per_s": {"min": min(tps), "median": med(tps), "max": max(tps)},
        "p50_ms": med([r["p50_ms"] for r in runs]), "p99_ms": med([r["p99_ms"] for r in runs]),
        "commits_per_task": med([r["commits_per_task"] for r in runs]),
        "wal_syncs_per_task": med([r.get("wal_syncs_per_task", 0) for r in runs]),
        "other_cpu_pct_max": max(r["other_cpu_pct"] for r in runs), "runs": len(runs)}
    if workers in celery:
        summary[key]["over_celery"] = round(statistics.median(tps) / statistics.median(celery[workers]), 2)
    raw = broker.get({1: "e2e_c1", 2: "e2e_c2"}.get(workers, ""))
    if raw:
        summary[key]["over_raw_e2e"] = round(statistics.median(tps) / raw, 3)
print(json.dumps(summary))
PY
