#!/usr/bin/env bash
# Task transitions persisted per second through libaise's SQL store
# (aise::sql) on SQLite and PostgreSQL, single-threaded and concurrent, side
# by side with the raw limit (the same rows written without libaise) in the
# same run on the same machine. Prints one JSON line per (workload, backend,
# threads) with min/median/max over RUNS processes, then one line of ratios.
#
#   bash bench/run_sql.sh          (builds, starts PostgreSQL, measures)
#
# Environment knobs:
#   RUNS=3                 processes per (workload, backend, threads)
#   TASKS=3000             tasks per process (4 transitions, 3 commits each)
#   THREADS_LIST="1 4"     writer threads (psql processes on the raw PostgreSQL side)
#   BACKENDS="sqlite postgresql"
#   WORKLOADS="orchestrator aise raw_batch raw_per_call"
#   CONCURRENCY=64         orchestrator: tasks each of its T agents runs at once
#   BUILD_DIR=DIR          libaise's release build (default build/release)
#   AISE_PG_PORT=25434     PostgreSQL port; the cluster lives in AISE_SERVICES_DIR
#                          (default <tmp>/aise-sql-bench.<uid>), a cluster of its own
#                          so that tests using scripts/test.sh's server (25433) do
#                          not share its WAL while we measure
#   KEEP_SERVICES=1        leave PostgreSQL running if this script started it
#
# Workloads (bench/sql_bench.cpp says exactly what each writes):
#   orchestrator  libaise the whole way: T threads submit N tasks (chunks of
#                 100), T agents run them through the orchestrator with its
#                 group commit; timed until the last task is reported done
#                 (after its write). The issue's target is judged on this one.
#   aise          the store alone, per task: insert_tasks (pending + event), update_task to
#                 running (via task.queued, attempt row), update_task to
#                 succeeded (result, attempt row): 3 transactions, 4 events
#   raw_batch     the raw limit: the same final rows (task, 4 events, attempt)
#                 in ONE transaction per writer (SQLite: prepared INSERTs via
#                 the sqlite3 C API; PostgreSQL: psql COPY FROM STDIN)
#   raw_per_call  the same statements as plain SQL with libaise's transaction
#                 boundaries (3 commits per task): the cost of the commits alone
# Same durability everywhere: SQLite WAL + synchronous=FULL (aise::sql's
# default), PostgreSQL with fsync and synchronous_commit on. Every process gets
# a fresh database: a new SQLite file in a temporary directory, or a new
# PostgreSQL database (CREATE DATABASE through psql), dropped afterwards.
#
# Every measured process holds /tmp/aise-bench.lock (flock); setup, builds,
# service start-up and database creation do not. Runs are interleaved (one of
# each configuration per round) so drift on the machine hits every side alike.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
TASKS=${TASKS:-3000}
THREADS_LIST=${THREADS_LIST:-"1 4"}
BACKENDS=${BACKENDS:-"sqlite postgresql"}
WORKLOADS=${WORKLOADS:-"orchestrator aise raw_batch raw_per_call"}
CONCURRENCY=${CONCURRENCY:-64}
BUILD_DIR=${BUILD_DIR:-$root/build/release}
LOCK=/tmp/aise-bench.lock
PY=/usr/bin/python3
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bash "$root/scripts/setup.sh" >&2
bash "$root/scripts/build.sh" release >&2
bin="$BUILD_DIR/bench/aise_sql_bench"
[ -x "$bin" ] || { log "error: $bin was not built (AISE_WITH_SQL off?)"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/aise-sql-bench.XXXXXX")
raw="$work/lines.jsonl"
started_pg=""
cleanup() {
  rm -rf "$work"
  if [ -n "$started_pg" ] && [ "${KEEP_SERVICES:-}" != 1 ]; then
    bash "$root/scripts/services.sh" stop postgres >&2 || true
  fi
}
trap cleanup EXIT

export AISE_PG_PORT=${AISE_PG_PORT:-25434}
export AISE_SERVICES_DIR=${AISE_SERVICES_DIR:-${TMPDIR:-/tmp}/aise-sql-bench.$(id -u)}
pg_port=$AISE_PG_PORT
server_pid=0
if [[ " $BACKENDS " == *" postgresql "* ]]; then
  services_out=$(bash "$root/scripts/services.sh" start postgres)
  grep -q '^AISE_SERVICES_STARTED=postgres' <<<"$services_out" && started_pg=1
  pg_base=$AISE_SERVICES_DIR
  # The postmaster: its processes' CPU is reported as db_cpu_pct, not as
  # disturbance (other_cpu_pct).
  server_pid=$(head -1 "$pg_base/pg/data/postmaster.pid" 2>/dev/null || echo 0)
  log "postgres on 127.0.0.1:$pg_port (postmaster $server_pid): $(psql -X -At -h 127.0.0.1 \
    -p "$pg_port" -U postgres -d postgres -c "SELECT 'fsync=' || current_setting('fsync') || \
' synchronous_commit=' || current_setting('synchronous_commit')")"
fi
pg_admin() { psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "$1" >&2; }

log "load before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
n=0
for run in $(seq 1 "$RUNS"); do
  for backend in $BACKENDS; do
    for threads in $THREADS_LIST; do
      for workload in $WORKLOADS; do
        n=$((n + 1))
        if [ "$backend" = sqlite ]; then
          dir=$(mktemp -d "$work/sqlite.XXXXXX")
          url="sqlite:$dir/bench.db"
        else
          db="aise_sql_bench_$$_$n"
          pg_admin "CREATE DATABASE $db"
          url="postgresql://postgres@127.0.0.1:$pg_port/$db"
        fi
        log "$workload $backend threads=$threads tasks=$TASKS (run $run/$RUNS)"
        flock "$LOCK" "$bin" --threads "$threads" --tasks "$TASKS" --server-pid "$server_pid" \
          --concurrency "$CONCURRENCY" "$workload" "$url" >>"$raw"
        tail -1 "$raw" >&2
        if [ "$backend" = sqlite ]; then rm -rf "$dir"; else pg_admin "DROP DATABASE $db"; fi
      done
    done
  done
done
log "load after measuring: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$raw" <<'PY'
import json, statistics, sys

groups = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line:
        r = json.loads(line)
        key = (r["workload"], r["backend"], r["threads"], r["projects"])
        groups.setdefault(key, []).append(r)

summary = {}
for key, runs in groups.items():
    row = {k: runs[0][k] for k in ("workload", "side", "backend", "threads", "projects", "tasks",
                                   "transitions", "commits", "batching")}
    for metric in ("seconds", "transitions_per_s", "tasks_per_s", "commits_per_s",
                   "other_cpu_pct", "db_cpu_pct"):
        values = sorted(r[metric] for r in runs)
        row[metric] = {"min": values[0], "median": statistics.median(values), "max": values[-1]}
    row["processes"] = len(runs)
    summary[key] = row
    print(json.dumps(row))

ratios = {"compare": "libaise / raw, medians of tasks_per_s (= transitions_per_s / 4), same run",
          "target_ratio_vs_raw_batch": 0.5, "target_judged_on": "orchestrator"}
met = None
for (workload, backend, threads, projects), row in sorted(summary.items()):
    if workload not in ("orchestrator", "aise"):
        continue
    ours = row["tasks_per_s"]["median"]
    for raw in ("raw_batch", "raw_per_call"):
        other = summary.get((raw, backend, threads, projects))
        if other:
            ratio = ours / other["tasks_per_s"]["median"]
            ratios[f"{backend}_{threads}t_{workload}_over_{raw}"] = round(ratio, 3)
            if raw == "raw_batch" and workload == "orchestrator":
                met = (met is not False) and ratio >= 0.5
ratios["target_met"] = met
print(json.dumps(ratios))
PY
