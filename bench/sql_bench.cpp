// Task transitions persisted per second through libaise's SQL store
// (aise::sql::open_store), on SQLite and PostgreSQL, beside the raw limit:
// the same rows written without libaise. bench/run_sql.sh runs both sides in
// the same run on the same machine, each on a fresh database.
//
// Usage: aise_sql_bench [--threads T] [--tasks N] [--projects P]
//                       [--server-pid PID] [--sqlite-synchronous FULL|NORMAL]
//                       [--chunk K] [--concurrency C] [--group-commit 0|1]
//                       <workload> <url>
//   <url>  sqlite:<path> (a fresh file) or postgresql://... (a fresh database)
//
// One task's cycle, as the orchestrator writes it (src/core/orchestrator.cpp:
// submit, start_attempt from pending, finish_attempt), is 3 store calls = 3
// transactions carrying 4 transitions (4 events):
//   1. insert_tasks({task}, {task.pending})                  created → pending
//   2. update_task running, via_event task.queued, attempt
//      row #1 (running), event task.running {attempt, agent}  pending → queued → running
//   3. update_task succeeded + result, attempt row #1
//      (succeeded, finished_at), event task.succeeded         running → succeeded
// A transition is one task state change persisted with its event (and its
// attempt row where the orchestrator writes one); transitions = 4 N,
// commits = 3 N. Afterwards the database holds per task 1 task row (state
// succeeded, version 3), 4 events, 1 attempt row.
//
// Workloads:
//   orchestrator  libaise the whole way (the one the issue's target is judged
//                 on): T threads submit N/T tasks each (submit_all, --chunk
//                 per call), T agents each run up to --concurrency of them at
//                 once through the orchestrator with its group commit
//                 (--group-commit 0 turns it off); timed until the last task
//                 is reported done. Its tasks are stored queued at submission
//                 (pending and queued events in the insert), so a task's
//                 writes differ from the cycle below; the rows afterwards are
//                 the same (checked, apart from the version).
//   aise          the cycle through aise::sql (one shared store, pool of T
//                 connections; T threads each run N/T tasks one after another)
//   raw_batch     the raw limit: the same final rows (1 task row, 4 events
//                 with their sequences, 1 attempt row per task, plus the event
//                 counter) in ONE transaction per thread. SQLite: sqlite3 C
//                 API, prepared INSERTs. PostgreSQL: psql, COPY FROM STDIN of
//                 a script generated before the clock starts (T psql processes;
//                 their start-up and connection are timed).
//   raw_per_call  the same SQL statements libaise issues for a cycle, plainly,
//                 with libaise's transaction boundaries (3 commits per task):
//                 what the store costs beyond its commits. SQLite: prepared
//                 statements; PostgreSQL: psql running a generated script.
// Every workload writes into libaise's schema (migrated before the clock
// starts), at the same durability: SQLite WAL + synchronous=FULL (as
// aise::sql opens it), PostgreSQL with its defaults (fsync and
// synchronous_commit on). Each checks the rows afterwards.
//
// Prints one JSON line. other_cpu_pct: CPU used while measuring by anything
// but this process, its children (psql) and the PostgreSQL server whose
// postmaster is --server-pid (its share is db_cpu_pct), in % of all cores.

#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <functional>
#include <mutex>
#include <spawn.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sqlite3.h>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bench_cpu.hpp"

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "aise_sql_bench: %s\n", what.c_str());
  std::exit(1);
}

// ---- CPU accounting (as aise_bench.cpp, plus the database server) ----------

/// utime + stime + cutime + cstime of `pid` and its children, in ticks.
long long server_ticks(int server_pid) {
  if (server_pid <= 0) return 0;
  long long sum = 0;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  while (dirent* d = readdir(proc)) {
    if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
    std::ifstream in(fmt::format("/proc/{}/stat", d->d_name));
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    // After "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime ...
    char state = 0;
    long long ppid = 0, skip = 0, utime = 0, stime = 0, cutime = 0, cstime = 0;
    if (std::sscanf(line.c_str() + paren + 1,
                    " %c %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld",
                    &state, &ppid, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip,
                    &utime, &stime, &cutime, &cstime) != 15)
      continue;
    if (std::atoll(d->d_name) == server_pid || ppid == server_pid)
      sum += utime + stime + cutime + cstime;
  }
  closedir(proc);
  return sum;
}

struct cpu_snapshot {
  long long busy = 0;
  long long total = 0;
  long long server = 0;
  double own = 0;  // this process and its reaped children (psql), seconds
};

cpu_snapshot take_cpu(int server_pid) {
  cpu_snapshot s;
  aise::bench::system_ticks ticks;
  if (!aise::bench::read_system_ticks(ticks)) fail("cannot read /proc/stat");
  s.busy = ticks.busy;
  s.total = ticks.total;
  s.server = server_ticks(server_pid);
  s.own = aise::bench::process_cpu_seconds(true);  // psql children included
  return s;
}

struct cpu_split {
  double other_pct = 0;
  double db_pct = 0;
};

cpu_split split_cpu(const cpu_snapshot& a, const cpu_snapshot& b) {
  const double tick = aise::bench::ticks_per_second();
  const double total = static_cast<double>(b.total - a.total) / tick;
  if (total <= 0) return {};
  const double db = static_cast<double>(b.server - a.server) / tick;
  const double others = static_cast<double>(b.busy - a.busy) / tick - (b.own - a.own) - db;
  return {std::max(0.0, 100.0 * others / total), std::max(0.0, 100.0 * db / total)};
}

// ---- what is written ----------------------------------------------------------

struct config {
  int threads = 1;
  long tasks = 2000;
  int projects = 1;
  int server_pid = 0;
  std::string sqlite_synchronous = "FULL";  // a diagnostic knob; FULL is the default
  long chunk = 100;                         // orchestrator: tasks per submit_all
  long concurrency = 1;                     // orchestrator: tasks per agent at once
  bool group_commit = true;                 // orchestrator: its group commit on/off
  std::string workload;
  std::string url;
  bool postgres = false;
  [[nodiscard]] std::string sqlite_path() const { return url.substr(std::strlen("sqlite:")); }
};

/// Tasks of thread `t`: [begin, end).
struct share {
  long begin = 0;
  long end = 0;
};

share share_of(const config& c, int t) {
  return {c.tasks * t / c.threads, c.tasks * (t + 1) / c.threads};
}

std::string project_of(const config& c, int t) {
  return c.projects == 1 ? "bench" : fmt::format("bench-{}", t % c.projects);
}

std::string task_id(long i) {
  return fmt::format("t-{:08d}", i);
}
std::string agent_of(int t) {
  return fmt::format("worker-{}", t);
}
std::string payload_of(long i) {
  return fmt::format(R"({{"n":{}}})", i);
}
std::string result_of(long i) {
  return fmt::format(R"({{"n":{}}})", i + 1);
}
std::string running_data(int t) {
  return fmt::format(R"({{"attempt":1,"agent":"{}"}})", agent_of(t));
}

long long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// The first event sequence of thread `t` in its project for raw_batch
/// (threads sharing a project get disjoint ranges), and the project's last.
struct sequence_range {
  long long first = 1;
  long long project_last = 0;
};

sequence_range sequences_of(const config& c, int t) {
  sequence_range r;
  for (int u = 0; u < c.threads; ++u) {
    if (u % c.projects != t % c.projects) continue;
    const auto s = share_of(c, u);
    const long long events = 4 * (s.end - s.begin);
    if (u < t) r.first += events;
    r.project_last += events;
  }
  return r;
}

// ---- libaise ----------------------------------------------------------------

void run_cycle(aise::store& store, const config& c, int t) {
  const std::string project = project_of(c, t);
  const std::string agent = agent_of(t);
  const auto [begin, end] = share_of(c, t);
  for (long i = begin; i < end; ++i) {
    const std::string id = task_id(i);
    // 1. submit: the task and its task.pending event.
    aise::time_point at = std::chrono::system_clock::now();
    std::vector<aise::task> batch(1);
    aise::task& task = batch.front();
    task.id = id;
    task.project = project;
    task.kind = "step";
    task.payload = {{"n", i}};
    task.created_at = at;
    task.updated_at = at;
    std::vector<aise::event_draft> created;
    created.push_back({project, "task.pending", id, at, nullptr});
    if (auto r = store.insert_tasks(batch, std::move(created)); !r)
      fail("insert_tasks: " + r.error().describe());

    // 2. dispatch: pending → queued → running, attempt #1 started.
    at = std::chrono::system_clock::now();
    aise::task_update run;
    run.id = id;
    run.expected_version = 1;
    run.state = aise::task_state::running;
    run.attempt = 1;
    run.agent = agent;
    run.clear_error = true;
    run.at = at;
    run.attempt_row =
        aise::task_attempt{id, 1, agent, at, std::nullopt, aise::task_state::running, std::nullopt};
    run.via_event = aise::event_draft{project, "task.queued", id, at, nullptr};
    run.event = {project, "task.running", id, at, {{"attempt", 1}, {"agent", agent}}};
    if (auto r = store.update_task(std::move(run)); !r)
      fail("update_task: " + r.error().describe());

    // 3. finish: running → succeeded with its result, attempt #1 finished.
    const aise::time_point started = at;
    at = std::chrono::system_clock::now();
    aise::task_update done;
    done.id = id;
    done.expected_version = 2;
    done.state = aise::task_state::succeeded;
    done.attempt = 1;
    done.agent = agent;
    done.at = at;
    done.result = nlohmann::json{{"n", i + 1}};
    done.attempt_row =
        aise::task_attempt{id, 1, agent, started, at, aise::task_state::succeeded, std::nullopt};
    done.event = {project, "task.succeeded", id, at, nullptr};
    if (auto r = store.update_task(std::move(done)); !r)
      fail("update_task: " + r.error().describe());
  }
}

aise::sql::store_options store_options_of(const config& c) {
  aise::sql::store_options o;
  o.url = c.url;
  o.pool_size = static_cast<std::size_t>(std::max(1, c.threads));
  o.sqlite_synchronous = c.sqlite_synchronous;  // WAL + FULL unless asked otherwise
  return o;
}

// ---- libaise, the whole way: the orchestrator -------------------------------------

void run_threads(int threads, const std::function<void(int)>& body) {
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) pool.emplace_back(body, t);
  for (auto& th : pool) th.join();
}

/// The agent of the orchestrator workload: a task's result is its payload's n + 1.
class step_agent : public aise::agent {
 public:
  step_agent() {
    on_task("step", [](aise::task_context& ctx) -> aise::result<nlohmann::json> {
      return nlohmann::json{{"n", ctx.task().payload.at("n").get<long>() + 1}};
    });
  }
};

/// Everything the orchestrator writes for N tasks that T agents run: T
/// threads submit their share in chunks (submit_all), the agents (one task
/// at a time each) work them off; the clock stops when the orchestrator has
/// reported the last task done (with group commit: after its write).
class orchestrator_run {
 public:
  orchestrator_run(const config& c, std::shared_ptr<aise::store> store) : c_(c) {
    aise::runtime_options ro;
    ro.threads = 2;
    ro.logger = std::make_shared<spdlog::logger>("bench",
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
    ro.logger->set_level(spdlog::level::warn);
    rt_ = std::make_unique<aise::runtime>(std::move(ro));
    aise::orchestrator_options oo;
    oo.store = std::move(store);
    oo.group_commit = c.group_commit;
    orch_ = std::make_unique<aise::orchestrator>(*rt_, oo);
    if (auto r = orch_->register_kind("step", [] { return std::make_unique<step_agent>(); }); !r)
      fail("register_kind: " + r.error().describe());
    for (int t = 0; t < c.threads; ++t) {
      auto spawned = orch_->spawn({.kind = "step",
                                   .name = agent_of(t),
                                   .project = project_of(c, t),
                                   .concurrency = static_cast<std::size_t>(c.concurrency)});
      if (!spawned) fail("spawn: " + spawned.error().describe());
    }
  }
  orchestrator_run(const orchestrator_run&) = delete;
  orchestrator_run& operator=(const orchestrator_run&) = delete;
  ~orchestrator_run() {
    orch_.reset();
    rt_.reset();
  }

  void measured() {
    run_threads(c_.threads, [this](int t) { submit_share(t); });
    std::unique_lock lock(mutex_);
    if (!done_cv_.wait_for(lock, std::chrono::minutes(10), [&] { return done_ == c_.tasks; }))
      fail(fmt::format("orchestrator: {} of {} tasks done after 10 minutes", done_, c_.tasks));
    if (failed_ != 0) fail(fmt::format("orchestrator: {} tasks did not succeed", failed_));
  }

 private:
  void submit_share(int t) {
    const auto [begin, end] = share_of(c_, t);
    const std::string project = project_of(c_, t);
    for (long first = begin; first < end; first += c_.chunk) {
      std::vector<aise::task_spec> specs;
      for (long i = first; i < std::min(end, first + c_.chunk); ++i) {
        aise::task_spec& s = specs.emplace_back();
        s.id = task_id(i);
        s.project = project;
        s.kind = "step";
        s.payload = {{"n", i}};
      }
      auto ids = orch_->submit_all(std::move(specs));
      if (!ids) fail("submit_all: " + ids.error().describe());
      for (const auto& id : *ids) {
        auto watched = orch_->when_done(id, [this](const aise::task& done) {
          std::lock_guard lock(mutex_);
          if (done.state != aise::task_state::succeeded) ++failed_;
          if (++done_ == c_.tasks) done_cv_.notify_all();
        });
        if (!watched) fail("when_done: " + watched.error().describe());
      }
    }
  }

  const config& c_;
  std::unique_ptr<aise::runtime> rt_;
  std::unique_ptr<aise::orchestrator> orch_;
  std::mutex mutex_;
  std::condition_variable done_cv_;
  long done_ = 0;
  long failed_ = 0;
};

// ---- raw SQLite (sqlite3 C API) ------------------------------------------------

class sqlite_db {
 public:
  sqlite_db(const std::string& path, const std::string& synchronous) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK)
      fail("sqlite3_open " + path + ": " + sqlite3_errmsg(db_));
    // The settings aise::sql applies to its connections (src/sql/connection.cpp).
    // The busy timeout first: writers opening the file at once wait for
    // each other instead of failing ("database is locked").
    exec("PRAGMA busy_timeout=10000");
    exec("PRAGMA journal_mode=WAL");
    exec(("PRAGMA synchronous=" + synchronous).c_str());
    exec("PRAGMA foreign_keys=ON");
  }
  sqlite_db(const sqlite_db&) = delete;
  sqlite_db& operator=(const sqlite_db&) = delete;
  ~sqlite_db() { sqlite3_close_v2(db_); }
  void exec(const char* sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
      std::string what = fmt::format("{}: {}", sql, message != nullptr ? message : "?");
      sqlite3_free(message);
      fail(what);
    }
  }
  [[nodiscard]] sqlite3* get() const noexcept { return db_; }

 private:
  sqlite3* db_ = nullptr;
};

/// A prepared statement; bind(...) binds every parameter in order, step()
/// runs it once and resets it. Bound text is not copied (SQLITE_STATIC): it
/// must outlive step().
class sqlite_stmt {
 public:
  sqlite_stmt(sqlite_db& db, const char* sql) : db_(db.get()) {
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &st_, nullptr) != SQLITE_OK)
      fail(fmt::format("prepare {}: {}", sql, sqlite3_errmsg(db_)));
  }
  sqlite_stmt(const sqlite_stmt&) = delete;
  sqlite_stmt& operator=(const sqlite_stmt&) = delete;
  ~sqlite_stmt() { sqlite3_finalize(st_); }

  template <class... Args>
  sqlite_stmt& bind(const Args&... args) {
    int index = 0;
    (bind_one(++index, args), ...);
    return *this;
  }
  /// Runs the statement; returns column 0 of its first row (RETURNING), or 0.
  long long step() {
    long long out = 0;
    int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) {
      out = sqlite3_column_int64(st_, 0);
      rc = sqlite3_step(st_);
    }
    if (rc != SQLITE_DONE) fail(fmt::format("sqlite3_step: {}", sqlite3_errmsg(db_)));
    sqlite3_reset(st_);
    return out;
  }

 private:
  void bind_one(int i, const std::string& s) {
    sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
  }
  void bind_one(int i, const char* s) { sqlite3_bind_text(st_, i, s, -1, SQLITE_STATIC); }
  void bind_one(int i, long long v) { sqlite3_bind_int64(st_, i, v); }
  void bind_one(int i, long v) { sqlite3_bind_int64(st_, i, v); }
  void bind_one(int i, int v) { sqlite3_bind_int64(st_, i, v); }
  void bind_one(int i, std::nullptr_t) { sqlite3_bind_null(st_, i); }

  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

constexpr const char* insert_task_sql =
    "INSERT INTO tasks (id, project, kind, capability, effective_capability, description, "
    "priority, payload, depends_on, max_attempts, timeout_ns, deadline, requires_approval, "
    "on_dependency_failure, parent, state, attempt, agent, result, error, created_at, "
    "updated_at, not_before, version) VALUES (?, ?, 'step', '', 'step', '', 0, ?, '[]', 1, NULL, "
    "NULL, 0, 0, '', ?, ?, ?, ?, NULL, ?, ?, 0, ?)";
constexpr const char* insert_event_sql =
    "INSERT INTO events (project, sequence, type, subject, at, data) VALUES (?, ?, ?, ?, ?, ?)";
constexpr const char* insert_attempt_sql =
    "INSERT INTO task_attempts (task_id, number, agent, started_at, finished_at, outcome, error) "
    "VALUES (?, 1, ?, ?, ?, ?, NULL)";
constexpr const char* bump_counter_sql =
    "INSERT INTO event_counters (project, last_sequence) VALUES (?, 1) ON CONFLICT (project) DO "
    "UPDATE SET last_sequence = event_counters.last_sequence + 1 RETURNING last_sequence";
constexpr const char* update_task_sql =
    "UPDATE tasks SET state = ?, attempt = 1, agent = ?, updated_at = ?, version = version + 1, "
    "result = ?, error = NULL WHERE id = ? AND version = ?";
constexpr const char* finish_attempt_sql =
    "UPDATE task_attempts SET finished_at = ?, outcome = 'succeeded' WHERE task_id = ? AND "
    "number = 1";

void sqlite_raw_batch(const config& c, int t) {
  sqlite_db db(c.sqlite_path(), c.sqlite_synchronous);
  sqlite_stmt task(db, insert_task_sql);
  sqlite_stmt event(db, insert_event_sql);
  sqlite_stmt attempt(db, insert_attempt_sql);
  sqlite_stmt counter(db,
                      "INSERT INTO event_counters (project, last_sequence) VALUES (?, ?) ON "
                      "CONFLICT (project) DO UPDATE SET last_sequence = "
                      "max(event_counters.last_sequence, excluded.last_sequence)");
  const std::string project = project_of(c, t);
  const std::string agent = agent_of(t);
  const std::string data = running_data(t);
  const auto seq = sequences_of(c, t);
  long long sequence = seq.first;
  const auto [begin, end] = share_of(c, t);
  db.exec("BEGIN IMMEDIATE");
  for (long i = begin; i < end; ++i) {
    const std::string id = task_id(i);
    const std::string payload = payload_of(i);
    const std::string result = result_of(i);
    const long long at = now_ns();
    task.bind(id, project, payload, "succeeded", 1, agent, result, at, at, 3).step();
    event.bind(project, sequence++, "task.pending", id, at, "null").step();
    event.bind(project, sequence++, "task.queued", id, at, "null").step();
    event.bind(project, sequence++, "task.running", id, at, data).step();
    event.bind(project, sequence++, "task.succeeded", id, at, "null").step();
    attempt.bind(id, agent, at, at, "succeeded").step();
  }
  counter.bind(project, seq.project_last).step();
  db.exec("COMMIT");
}

void sqlite_raw_per_call(const config& c, int t) {
  sqlite_db db(c.sqlite_path(), c.sqlite_synchronous);
  sqlite_stmt task(db, insert_task_sql);
  sqlite_stmt event(db, insert_event_sql);
  sqlite_stmt attempt(db, insert_attempt_sql);
  sqlite_stmt counter(db, bump_counter_sql);
  sqlite_stmt update(db, update_task_sql);
  sqlite_stmt finish(db, finish_attempt_sql);
  const std::string project = project_of(c, t);
  const std::string agent = agent_of(t);
  const std::string data = running_data(t);
  const auto [begin, end] = share_of(c, t);
  auto append = [&](const char* type, const std::string& id, long long at, const std::string& d) {
    const long long sequence = counter.bind(project).step();
    event.bind(project, sequence, type, id, at, d).step();
  };
  const std::string null_json = "null";
  for (long i = begin; i < end; ++i) {
    const std::string id = task_id(i);
    const std::string payload = payload_of(i);
    const std::string result = result_of(i);
    long long at = now_ns();
    db.exec("BEGIN IMMEDIATE");
    task.bind(id, project, payload, "pending", 0, "", nullptr, at, at, 1).step();
    append("task.pending", id, at, null_json);
    db.exec("COMMIT");

    at = now_ns();
    db.exec("BEGIN IMMEDIATE");
    update.bind("running", agent, at, nullptr, id, 1).step();
    attempt.bind(id, agent, at, nullptr, "running").step();
    append("task.queued", id, at, null_json);
    append("task.running", id, at, data);
    db.exec("COMMIT");

    at = now_ns();
    db.exec("BEGIN IMMEDIATE");
    update.bind("succeeded", agent, at, result, id, 2).step();
    finish.bind(at, id).step();
    append("task.succeeded", id, at, null_json);
    db.exec("COMMIT");
  }
}

// ---- raw PostgreSQL (psql) ----------------------------------------------------

/// Runs psql with `args` after the connection URL; fails unless it exits 0.
int spawn_psql(const std::string& url, const std::vector<std::string>& args) {
  std::vector<std::string> all = {"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, "psql", nullptr, nullptr, argv.data(), environ) != 0)
    fail("cannot start psql (is it installed?)");
  return pid;
}

void wait_psql(int pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("psql failed");
}

/// A text value for COPY's text format.
std::string copy_text(std::string_view s) {
  std::string out;
  for (char ch : s) {
    if (ch == '\\' || ch == '\t' || ch == '\n' || ch == '\r') out += '\\';
    out += ch;
  }
  return out;
}

/// A SQL string literal.
std::string lit(std::string_view s) {
  std::string out = "'";
  for (char ch : s) {
    if (ch == '\'') out += '\'';
    out += ch;
  }
  return out + "'";
}

std::string pg_batch_script(const config& c, int t) {
  const std::string project = project_of(c, t);
  const std::string agent = agent_of(t);
  const std::string data = copy_text(running_data(t));
  const auto seq = sequences_of(c, t);
  long long sequence = seq.first;
  const auto [begin, end] = share_of(c, t);
  const long long at = now_ns();  // the rows' times do not matter to the cost
  std::string tasks, events, attempts;
  for (long i = begin; i < end; ++i) {
    const std::string id = task_id(i);
    tasks += fmt::format(
        "{0}\t{1}\tstep\t\tstep\t\t0\t{2}\t[]\t1\t\\N\t\\N\t0\t0\t\tsucceeded\t1\t{3}\t{4}\t\\N\t{"
        "5}\t{5}\t0\t3\n",
        id, project, copy_text(payload_of(i)), agent, copy_text(result_of(i)), at);
    events += fmt::format("{0}\t{1}\ttask.pending\t{2}\t{3}\tnull\n", project, sequence++, id, at);
    events += fmt::format("{0}\t{1}\ttask.queued\t{2}\t{3}\tnull\n", project, sequence++, id, at);
    events +=
        fmt::format("{0}\t{1}\ttask.running\t{2}\t{3}\t{4}\n", project, sequence++, id, at, data);
    events +=
        fmt::format("{0}\t{1}\ttask.succeeded\t{2}\t{3}\tnull\n", project, sequence++, id, at);
    attempts += fmt::format("{0}\t1\t{1}\t{2}\t{2}\tsucceeded\t\\N\n", id, agent, at);
  }
  return fmt::format(
      "BEGIN;\n"
      "COPY tasks (id, project, kind, capability, effective_capability, description, priority, "
      "payload, depends_on, max_attempts, timeout_ns, deadline, requires_approval, "
      "on_dependency_failure, parent, state, attempt, agent, result, error, created_at, "
      "updated_at, not_before, version) FROM STDIN;\n{}\\.\n"
      "COPY events (project, sequence, type, subject, at, data) FROM STDIN;\n{}\\.\n"
      "COPY task_attempts (task_id, number, agent, started_at, finished_at, outcome, error) FROM "
      "STDIN;\n{}\\.\n"
      "INSERT INTO event_counters (project, last_sequence) VALUES ({}, {}) ON CONFLICT (project) "
      "DO UPDATE SET last_sequence = GREATEST(event_counters.last_sequence, "
      "excluded.last_sequence);\n"
      "COMMIT;\n",
      tasks, events, attempts, lit(project), seq.project_last);
}

std::string pg_per_call_script(const config& c, int t) {
  const std::string project = lit(project_of(c, t));
  const std::string agent = lit(agent_of(t));
  const std::string data = lit(running_data(t));
  const auto [begin, end] = share_of(c, t);
  const long long at = now_ns();
  auto append = [&](std::string& out, const char* type, const std::string& id,
                    const std::string& d) {
    out += fmt::format(
        "WITH c AS (INSERT INTO event_counters (project, last_sequence) VALUES ({0}, 1) ON "
        "CONFLICT (project) DO UPDATE SET last_sequence = event_counters.last_sequence + 1 "
        "RETURNING last_sequence) INSERT INTO events (project, sequence, type, subject, at, data) "
        "SELECT {0}, last_sequence, '{1}', {2}, {3}, {4} FROM c;\n",
        project, type, id, at, d);
  };
  std::string out;
  for (long i = begin; i < end; ++i) {
    const std::string id = lit(task_id(i));
    out += fmt::format(
        "BEGIN;\nINSERT INTO tasks (id, project, kind, capability, effective_capability, "
        "description, priority, payload, depends_on, max_attempts, timeout_ns, deadline, "
        "requires_approval, on_dependency_failure, parent, state, attempt, agent, result, error, "
        "created_at, updated_at, not_before, version) VALUES ({}, {}, 'step', '', 'step', '', 0, "
        "{}, '[]', 1, NULL, NULL, 0, 0, '', 'pending', 0, '', NULL, NULL, {}, {}, 0, 1);\n",
        id, project, lit(payload_of(i)), at, at);
    append(out, "task.pending", id, "'null'");
    out += "COMMIT;\nBEGIN;\n";
    out += fmt::format(
        "UPDATE tasks SET state = 'running', attempt = 1, agent = {}, updated_at = {}, version = "
        "version + 1, error = NULL WHERE id = {} AND version = 1;\n",
        agent, at, id);
    out += fmt::format(
        "INSERT INTO task_attempts (task_id, number, agent, started_at, finished_at, outcome, "
        "error) VALUES ({}, 1, {}, {}, NULL, 'running', NULL);\n",
        id, agent, at);
    append(out, "task.queued", id, "'null'");
    append(out, "task.running", id, data);
    out += "COMMIT;\nBEGIN;\n";
    out += fmt::format(
        "UPDATE tasks SET state = 'succeeded', updated_at = {}, version = version + 1, result = "
        "{} WHERE id = {} AND version = 2;\n",
        at, lit(result_of(i)), id);
    out += fmt::format(
        "UPDATE task_attempts SET finished_at = {}, outcome = 'succeeded' WHERE task_id = {} AND "
        "number = 1;\n",
        at, id);
    append(out, "task.succeeded", id, "'null'");
    out += "COMMIT;\n";
  }
  return out;
}

// ---- checks -------------------------------------------------------------------

/// tasks succeeded, events, attempts succeeded, sum of the counters.
constexpr const char* check_sql =
    "SELECT (SELECT COUNT(*) FROM tasks WHERE state = 'succeeded' AND version = 3) || ' ' || "
    "(SELECT COUNT(*) FROM events) || ' ' || "
    "(SELECT COUNT(*) FROM task_attempts WHERE outcome = 'succeeded') || ' ' || "
    "(SELECT COALESCE(SUM(last_sequence), 0) FROM event_counters)";

/// The orchestrator's rows: tasks succeeded, task events, attempts
/// succeeded, and sequences used minus events stored (0: no gap). Its
/// tasks may pass through queued on their own (one version more) and its
/// agents add agent.started events.
constexpr const char* check_orchestrator_sql =
    "SELECT (SELECT COUNT(*) FROM tasks WHERE state = 'succeeded') || ' ' || "
    "(SELECT COUNT(*) FROM events WHERE type LIKE 'task.%') || ' ' || "
    "(SELECT COUNT(*) FROM task_attempts WHERE outcome = 'succeeded') || ' ' || "
    "((SELECT COALESCE(SUM(last_sequence), 0) FROM event_counters) - "
    "(SELECT COUNT(*) FROM events))";

std::string query_counts(const config& c) {
  const char* sql = c.workload == "orchestrator" ? check_orchestrator_sql : check_sql;
  if (!c.postgres) {
    sqlite_db db(c.sqlite_path(), c.sqlite_synchronous);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db.get(), sql, -1, &st, nullptr) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
      fail(fmt::format("check: {}", sqlite3_errmsg(db.get())));
    std::string out(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    sqlite3_finalize(st);
    return out;
  }
  const std::string cmd = fmt::format("psql -X -A -t -d '{}' -c \"{}\"", c.url, sql);
  std::FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) fail("cannot run psql");
  char buf[256] = {};
  std::string out;
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  if (pclose(p) != 0) fail("psql check failed");
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

void check_rows(const config& c) {
  const long n = c.tasks;
  const std::string expected = c.workload == "orchestrator"
                                   ? fmt::format("{} {} {} 0", n, 4 * n, n)
                                   : fmt::format("{} {} {} {}", n, 4 * n, n, 4 * n);
  const std::string got = query_counts(c);
  if (got != expected)
    fail(fmt::format("{}: the database holds '{}' (tasks events attempts sequence), expected '{}'",
                     c.workload, got, expected));
}

// ---- main ---------------------------------------------------------------------

const char* batching_of(const config& c) {
  if (c.workload == "aise") return "one transaction per store call (3 per task)";
  if (c.workload == "orchestrator")
    return c.group_commit ? "the orchestrator's group commit (one transaction per turn)"
                          : "the orchestrator, one transaction per change";
  if (c.workload == "raw_per_call") return "one transaction per cycle step (3 per task), plain SQL";
  return c.postgres ? "one transaction per thread for all its rows (psql COPY)"
                    : "one transaction per thread for all its rows (prepared INSERTs)";
}

int usage() {
  std::fprintf(stderr,
               "usage: aise_sql_bench [--threads T] [--tasks N] [--projects P] [--server-pid PID] "
               "[--sqlite-synchronous FULL|NORMAL] [--chunk K] [--concurrency C] "
               "[--group-commit 0|1] "
               "orchestrator|aise|raw_batch|raw_per_call <sqlite:path | postgresql://...>\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  config c;
  int i = 1;
  for (; i + 1 < argc && std::strncmp(argv[i], "--", 2) == 0; i += 2) {
    const std::string flag = argv[i];
    const long value = std::atol(argv[i + 1]);
    if (flag == "--threads") {
      c.threads = static_cast<int>(value);
    } else if (flag == "--tasks") {
      c.tasks = value;
    } else if (flag == "--projects") {
      c.projects = static_cast<int>(value);
    } else if (flag == "--server-pid") {
      c.server_pid = static_cast<int>(value);
    } else if (flag == "--chunk") {
      c.chunk = value;
      if (c.chunk < 1) return usage();
    } else if (flag == "--concurrency") {
      c.concurrency = value;
      if (c.concurrency < 1) return usage();
    } else if (flag == "--group-commit") {
      c.group_commit = value != 0;
    } else if (flag == "--sqlite-synchronous") {
      c.sqlite_synchronous = argv[i + 1];
      if (c.sqlite_synchronous != "FULL" && c.sqlite_synchronous != "NORMAL") return usage();
    } else {
      return usage();
    }
  }
  if (argc - i != 2 || c.threads < 1 || c.tasks < c.threads || c.projects < 1) return usage();
  c.workload = argv[i];
  c.url = argv[i + 1];
  c.postgres = c.url.starts_with("postgresql://") || c.url.starts_with("postgres://");
  if (!c.postgres && !c.url.starts_with("sqlite:")) return usage();
  if (c.workload != "aise" && c.workload != "orchestrator" && c.workload != "raw_batch" &&
      c.workload != "raw_per_call")
    return usage();

  // The schema, before the clock starts, for every workload.
  auto migrated = aise::sql::migrate(store_options_of(c));
  if (!migrated) fail("migrate: " + migrated.error().describe());

  std::function<void()> measured;
  std::shared_ptr<aise::store> store;
  std::vector<std::string> scripts;
  std::unique_ptr<orchestrator_run> orch;
  if (c.workload == "orchestrator") {
    auto opened = aise::sql::open_store(store_options_of(c));
    if (!opened) fail("open_store: " + opened.error().describe());
    orch = std::make_unique<orchestrator_run>(c, *opened);
    measured = [&] { orch->measured(); };
  } else if (c.workload == "aise") {
    auto opened = aise::sql::open_store(store_options_of(c));
    if (!opened) fail("open_store: " + opened.error().describe());
    store = *opened;
    measured = [&] { run_threads(c.threads, [&](int t) { run_cycle(*store, c, t); }); };
  } else if (!c.postgres) {
    auto body = c.workload == "raw_batch" ? sqlite_raw_batch : sqlite_raw_per_call;
    measured = [&, body] { run_threads(c.threads, [&](int t) { body(c, t); }); };
  } else {
    // Scripts are generated and written before the clock starts.
    char dir_template[] = "/tmp/aise-sql-bench-XXXXXX";
    const char* dir = mkdtemp(dir_template);
    if (dir == nullptr) fail("mkdtemp");
    for (int t = 0; t < c.threads; ++t) {
      scripts.push_back(fmt::format("{}/t{}.sql", dir, t));
      std::ofstream out(scripts.back());
      out << (c.workload == "raw_batch" ? pg_batch_script(c, t) : pg_per_call_script(c, t));
      if (!out.flush()) fail("cannot write " + scripts.back());
    }
    measured = [&] {
      std::vector<int> pids;
      for (const auto& s : scripts) pids.push_back(spawn_psql(c.url, {"-f", s}));
      for (int pid : pids) wait_psql(pid);
    };
  }

  const auto cpu0 = take_cpu(c.server_pid);
  const auto t0 = clock_type::now();
  measured();
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  const auto cpu1 = take_cpu(c.server_pid);
  orch.reset();
  store.reset();
  for (const auto& s : scripts) std::remove(s.c_str());
  if (!scripts.empty()) rmdir(scripts.front().substr(0, scripts.front().rfind('/')).c_str());
  check_rows(c);

  const auto cpu = split_cpu(cpu0, cpu1);
  const double tasks = static_cast<double>(c.tasks);
  const bool raw = c.workload != "aise" && c.workload != "orchestrator";
  // The orchestrator's commits depend on its batches: not counted (0).
  const double commits = c.workload == "raw_batch"      ? c.threads
                         : c.workload == "orchestrator" ? 0
                                                        : 3 * tasks;
  fmt::print(
      R"({{"workload":"{}","side":"{}","backend":"{}","threads":{},"projects":{},"tasks":{},)"
      R"("transitions":{:.0f},"commits":{:.0f},"batching":"{}","seconds":{:.3f},)"
      R"("transitions_per_s":{:.0f},"tasks_per_s":{:.0f},"commits_per_s":{:.0f},)"
      R"("sqlite_synchronous":"{}","other_cpu_pct":{:.1f},"db_cpu_pct":{:.1f}}})"
      "\n",
      c.workload, raw ? "raw" : "aise", c.postgres ? "postgresql" : "sqlite", c.threads, c.projects,
      c.tasks, 4 * tasks, commits, batching_of(c), secs, 4 * tasks / secs, tasks / secs,
      commits / secs, c.postgres ? "" : c.sqlite_synchronous, cpu.other_pct, cpu.db_pct);
  return 0;
}
