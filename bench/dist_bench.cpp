// End-to-end durable tasks per second across processes (issue 4): this
// process is the orchestrator (PostgreSQL store, RabbitMQ dispatcher, default
// orchestrator options); `aise-worker` processes run the tasks (built-in kind
// `echo`). bench/run_dist.sh runs it beside Celery (the peers'
// bench_tasks.sh) and the raw RabbitMQ limit (the peers' broker/run.sh) on
// the same PostgreSQL and RabbitMQ, in the same run.
//
// Usage: aise_dist_bench --admin-url <postgresql://...> [--db-url <postgresql://...>]
//                        --amqp <url>
//                        [--workers N] [--agents echo:A:C] [--tasks T]
//                        [--warmup W] [--batch B] [--label L]
//                        [--infra-pids P1,P2] [--worker-bin PATH]
//
// One process = one measurement:
// 1. creates the database aise_bench_<pid> through --admin-url (a role that
//    may create databases; dropped at the end), owned by --db-url's user, so
//    every table starts empty; the store (default store options) and the
//    workers connect with --db-url (default --admin-url), its database name
//    replaced;
// 2. a RabbitMQ dispatcher with a prefix of its own (aise-bench-<pid>.)
//    serving capability "echo", and an orchestrator over both;
// 3. spawns N aise-worker processes (--agents, default echo:1:1: one task at
//    a time per worker, as Celery's layout "1" = one prefork process with
//    prefetch multiplier 1) and waits until the task queue has N consumers;
// 4. warm-up: W tasks, not counted, all completed;
// 5. measured: T tasks submitted with submit_all in batches of B, as fast as
//    the orchestrator takes them (as Celery's producer enqueues all N), until
//    all T are terminal. tasks_per_s = T / (first submit → last completion);
//    latency per task = its batch's submit call → its task.succeeded event;
// 6. checks in PostgreSQL that all W+T tasks succeeded, each with exactly one
//    succeeded attempt and a result; fails (exit 1) otherwise.
//
// Prints one JSON line. other_cpu_pct: CPU used while measuring by anything
// but this process, its workers and the infrastructure (--infra-pids: the
// postmaster and RabbitMQ's beam.smp, with their direct children), in % of
// all cores; infra_cpu_pct and workers_cpu_pct are reported beside it.
// commits_per_task: the database's xact_commit delta (pg_stat_database: every
// transaction, read-only ones included) over the measured tasks;
// wal_syncs_per_task: the cluster's WAL fsyncs (pg_stat_wal.wal_sync), the
// durable commits that reached the disk (concurrent commits share one).

#include <aise/orchestrator.hpp>
#include <aise/rabbitmq.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>

#include <algorithm>
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <libpq-fe.h>
#include <map>
#include <mutex>
#include <set>
#include <spawn.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "bench_cpu.hpp"

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "aise_dist_bench: %s\n", what.c_str());
  std::exit(1);
}

// ---- PostgreSQL through libpq ----------------------------------------------

/// A URL with its database name replaced.
std::string with_database(const std::string& url, const std::string& name) {
  const auto slash = url.rfind('/');
  if (slash == std::string::npos || slash < url.find("://") + 3) fail("bad URL: " + url);
  const auto query = url.find('?', slash);
  std::string out = url.substr(0, slash + 1) + name;
  if (query != std::string::npos) out += url.substr(query);
  return out;
}

class pg_connection {
 public:
  explicit pg_connection(const std::string& url) : conn_(PQconnectdb(url.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) fail(std::string("PostgreSQL: ") + PQerrorMessage(conn_));
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);  // "does not exist, skipping"
  }
  ~pg_connection() { PQfinish(conn_); }
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  [[nodiscard]] std::string user() const { return PQuser(conn_); }
  void exec(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const auto status = PQresultStatus(r);
    PQclear(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
      fail(sql + ": " + PQerrorMessage(conn_));
  }
  long long scalar(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
      PQclear(r);
      fail(sql + ": " + PQerrorMessage(conn_));
    }
    const long long v = std::atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
  }

 private:
  PGconn* conn_;
};

// ---- CPU accounting ----------------------------------------------------------

/// utime + stime of each process whose pid or parent pid is in `pids`, ticks.
long long tree_ticks(const std::set<long long>& pids) {
  if (pids.empty()) return 0;
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
    char state = 0;
    long long ppid = 0, skip = 0, utime = 0, stime = 0;
    if (std::sscanf(line.c_str() + paren + 1,
                    " %c %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld", &state,
                    &ppid, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &utime,
                    &stime) != 13)
      continue;
    if (pids.count(std::atoll(d->d_name)) != 0 || pids.count(ppid) != 0) sum += utime + stime;
  }
  closedir(proc);
  return sum;
}

struct cpu_snapshot {
  long long busy = 0;
  long long total = 0;
  long long infra = 0;
  long long workers = 0;
  double own = 0;
};

cpu_snapshot take_cpu(const std::set<long long>& infra, const std::set<long long>& workers) {
  cpu_snapshot s;
  aise::bench::system_ticks ticks;
  if (!aise::bench::read_system_ticks(ticks)) fail("cannot read /proc/stat");
  s.busy = ticks.busy;
  s.total = ticks.total;
  s.infra = tree_ticks(infra);
  s.workers = tree_ticks(workers);
  s.own = aise::bench::process_cpu_seconds(false);
  return s;
}

// ---- RabbitMQ: consumers on the task queue -----------------------------------

/// Consumers on `queue` (a passive declare on a connection of its own);
/// -1 when the queue does not exist yet or the broker is unreachable.
long consumers_on(const std::string& url, const std::string& queue) {
  amqp_connection_info info{};
  std::vector<char> buffer(url.begin(), url.end());
  buffer.push_back('\0');
  if (amqp_parse_url(buffer.data(), &info) != AMQP_STATUS_OK) fail("bad AMQP URL: " + url);
  amqp_connection_state_t conn = amqp_new_connection();
  long count = -1;
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (socket != nullptr && amqp_socket_open(socket, info.host, info.port) == AMQP_STATUS_OK &&
      amqp_login(conn, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password)
              .reply_type == AMQP_RESPONSE_NORMAL) {
    amqp_channel_open(conn, 1);
    if (amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL) {
      auto* ok = amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue.c_str()), 1, 0, 0, 0,
                                    amqp_empty_table);
      if (ok != nullptr && amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL)
        count = static_cast<long>(ok->consumer_count);
    }
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  }
  amqp_destroy_connection(conn);
  return count;
}

// ---- aise-worker processes ----------------------------------------------------

class worker_process {
 public:
  worker_process(const std::string& bin, std::vector<std::string> args) {
    args.insert(args.begin(), bin);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, bin.c_str(), nullptr, nullptr, argv.data(), environ) != 0)
      fail("cannot spawn " + bin);
  }
  ~worker_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  worker_process(const worker_process&) = delete;
  worker_process& operator=(const worker_process&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool alive() const { return ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  /// SIGTERM and wait (the workers have nothing running by then).
  void terminate() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// ---- Completion tracking -------------------------------------------------------

class completions {
 public:
  void finished(const std::string& id, bool succeeded) {
    const auto now = clock_type::now();
    std::lock_guard lock(mutex_);
    at_.emplace(id, now);
    if (!succeeded) ++failed_;
    cv_.notify_all();
  }
  bool wait(std::size_t n, std::chrono::seconds limit) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return at_.size() >= n; });
  }
  std::size_t count() {
    std::lock_guard lock(mutex_);
    return at_.size();
  }
  std::size_t failed() {
    std::lock_guard lock(mutex_);
    return failed_;
  }
  clock_type::time_point at(const std::string& id) {
    std::lock_guard lock(mutex_);
    const auto it = at_.find(id);
    if (it == at_.end()) fail("no completion seen for task " + id);
    return it->second;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::unordered_map<std::string, clock_type::time_point> at_;
  std::size_t failed_ = 0;
};

struct config {
  std::string admin_url;
  std::string db_url;
  std::string amqp = "amqp://guest:guest@127.0.0.1:5672/%2F";
  std::string worker_bin = AISE_WORKER_BIN;
  std::string agents = "echo:1:1";
  std::string label = "default";
  int workers = 1;
  int tasks = 5000;
  int warmup = 500;
  int batch = 500;
  std::set<long long> infra;
};

/// Agent slots per worker in "kind:count[:concurrency]".
long long slots_of(const std::string& agents) {
  long long slots = 0;
  std::size_t start = 0;
  while (start <= agents.size()) {
    const auto comma = agents.find(',', start);
    const std::string item =
        agents.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto c1 = item.find(':');
    const auto c2 = c1 == std::string::npos ? std::string::npos : item.find(':', c1 + 1);
    const long long count = c1 == std::string::npos ? 1 : std::atoll(item.c_str() + c1 + 1);
    const long long conc = c2 == std::string::npos ? 1 : std::atoll(item.c_str() + c2 + 1);
    slots += count * conc;
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return slots;
}

config parse(int argc, char** argv) {
  config c;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) fail(arg + " needs a value (or is unknown)");
    const std::string value = argv[++i];
    if (arg == "--admin-url") {
      c.admin_url = value;
    } else if (arg == "--db-url") {
      c.db_url = value;
    } else if (arg == "--amqp") {
      c.amqp = value;
    } else if (arg == "--worker-bin") {
      c.worker_bin = value;
    } else if (arg == "--agents") {
      c.agents = value;
    } else if (arg == "--label") {
      c.label = value;
    } else if (arg == "--workers") {
      c.workers = std::atoi(value.c_str());
    } else if (arg == "--tasks") {
      c.tasks = std::atoi(value.c_str());
    } else if (arg == "--warmup") {
      c.warmup = std::atoi(value.c_str());
    } else if (arg == "--batch") {
      c.batch = std::atoi(value.c_str());
    } else if (arg == "--infra-pids") {
      std::size_t start = 0;
      while (start < value.size()) {
        const auto comma = value.find(',', start);
        const long long pid = std::atoll(value.substr(start, comma - start).c_str());
        if (pid > 0) c.infra.insert(pid);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else {
      fail("unknown option " + arg);
    }
  }
  if (c.admin_url.empty()) fail("--admin-url is required");
  if (c.db_url.empty()) c.db_url = c.admin_url;
  if (c.workers < 1 || c.tasks < 1 || c.warmup < 0 || c.batch < 1) fail("bad sizes");
  return c;
}

/// Submits `n` echo tasks in batches; returns (id, submit time) per task.
std::vector<std::pair<std::string, clock_type::time_point>> submit(aise::orchestrator& orch, int n,
                                                                   int batch_size, int first) {
  std::vector<std::pair<std::string, clock_type::time_point>> out;
  out.reserve(static_cast<std::size_t>(n));
  std::vector<aise::task_spec> batch;
  for (int i = 0; i < n; ++i) {
    aise::task_spec s;
    s.kind = "echo";
    s.payload = nlohmann::json{{"i", first + i}};
    batch.push_back(std::move(s));
    if (static_cast<int>(batch.size()) == batch_size || i + 1 == n) {
      const auto at = clock_type::now();
      auto r = orch.submit_all(std::move(batch));
      if (!r) fail("submit_all: " + r.error().describe());
      for (auto& id : *r) out.emplace_back(std::move(id), at);
      batch.clear();
    }
  }
  return out;
}

double percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(k, sorted.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  const config c = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);

  const std::string db_name = fmt::format("aise_bench_{}", ::getpid());
  pg_connection admin(c.admin_url);
  admin.exec("DROP DATABASE IF EXISTS " + db_name);
  const std::string db_url = with_database(c.db_url, db_name);
  admin.exec(
      fmt::format("CREATE DATABASE {} OWNER \"{}\"", db_name, pg_connection(c.db_url).user()));
  const std::string prefix = fmt::format("aise-bench-{}.", ::getpid());

  std::string json;
  {
    aise::runtime_options ro;
    ro.logger =
        std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
    aise::runtime rt(ro);

    aise::sql::store_options so;
    so.url = db_url;
    auto store = aise::sql::open_store(so);
    if (!store) fail("open_store: " + store.error().describe());

    aise::rabbitmq_task_options q;
    q.connection.url = c.amqp;
    q.connection.prefix = prefix;
    q.capabilities = {"echo"};
    auto dispatcher = aise::make_rabbitmq_dispatcher(q);
    if (!dispatcher) fail("make_rabbitmq_dispatcher: " + dispatcher.error().describe());

    aise::orchestrator_options o;
    o.store = *store;
    o.dispatcher = *dispatcher;
    aise::orchestrator orch(rt, o);

    completions done;
    const auto key = orch.subscribe([&](const aise::event& e) {
      if (e.type == "task.succeeded") done.finished(e.subject, true);
      if (e.type == "task.failed" || e.type == "task.cancelled") done.finished(e.subject, false);
    });

    std::vector<std::unique_ptr<worker_process>> workers;
    std::set<long long> worker_pids;
    for (int i = 0; i < c.workers; ++i) {
      workers.push_back(std::make_unique<worker_process>(
          c.worker_bin, std::vector<std::string>{
                            "--db", db_url, "--amqp", c.amqp, "--prefix", prefix, "--id",
                            fmt::format("bench-{}-w{}", ::getpid(), i), "--agents", c.agents}));
      worker_pids.insert(workers.back()->pid());
    }
    const std::string queue = prefix + "task.echo";
    for (int i = 0;; ++i) {
      if (consumers_on(c.amqp, queue) >= c.workers) break;
      for (auto& w : workers)
        if (!w->alive()) fail("an aise-worker exited at start");
      if (i > 600) fail("workers not consuming after 60 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }

    // Warm-up (not counted).
    if (c.warmup > 0) {
      (void)submit(orch, c.warmup, c.batch, 0);
      if (!done.wait(static_cast<std::size_t>(c.warmup), std::chrono::seconds(300)))
        fail(fmt::format("warm-up: {} of {} tasks finished", done.count(), c.warmup));
    }

    pg_connection stats(db_url);
    // pg_stat_database is flushed by backends at most once a second.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    const long long commits0 =
        stats.scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()");
    const long long syncs0 = stats.scalar("SELECT wal_sync FROM pg_stat_wal");

    const auto cpu0 = take_cpu(c.infra, worker_pids);
    const auto t0 = clock_type::now();
    const auto submitted = submit(orch, c.tasks, c.batch, c.warmup);
    const auto t_submitted = clock_type::now();
    const auto total = static_cast<std::size_t>(c.warmup + c.tasks);
    if (!done.wait(total, std::chrono::seconds(600)))
      fail(fmt::format("measured: {} of {} tasks finished", done.count(), total));
    const auto cpu1 = take_cpu(c.infra, worker_pids);

    std::vector<double> latency;
    latency.reserve(submitted.size());
    clock_type::time_point last = t0;
    for (const auto& [id, at] : submitted) {
      const auto end = done.at(id);
      last = std::max(last, end);
      latency.push_back(std::chrono::duration<double, std::milli>(end - at).count());
    }
    std::sort(latency.begin(), latency.end());
    const double seconds = std::chrono::duration<double>(last - t0).count();

    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    const long long commits1 =
        stats.scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()");
    const long long syncs1 = stats.scalar("SELECT wal_sync FROM pg_stat_wal");

    // Exactly once, all succeeded.
    const long long tasks = stats.scalar("SELECT count(*) FROM tasks");
    const long long succeeded =
        stats.scalar("SELECT count(*) FROM tasks WHERE state = 'succeeded' AND result IS NOT NULL");
    const long long retried = stats.scalar("SELECT count(*) FROM tasks WHERE attempt > 1");
    const long long double_success = stats.scalar(
        "SELECT count(*) FROM (SELECT task_id FROM task_attempts WHERE outcome = 'succeeded' "
        "GROUP BY task_id HAVING count(*) > 1) AS d");
    const long long succeeded_attempts =
        stats.scalar("SELECT count(*) FROM task_attempts WHERE outcome = 'succeeded'");
    if (done.failed() != 0 || tasks != static_cast<long long>(total) ||
        succeeded != static_cast<long long>(total) || double_success != 0 ||
        succeeded_attempts != static_cast<long long>(total))
      fail(
          fmt::format("check failed: tasks {} succeeded {} failed events {} double success {} "
                      "succeeded attempts {} (expected {})",
                      tasks, succeeded, done.failed(), double_success, succeeded_attempts, total));

    const double tick = aise::bench::ticks_per_second();
    const double wall = static_cast<double>(cpu1.total - cpu0.total) / tick;
    const double infra = static_cast<double>(cpu1.infra - cpu0.infra) / tick;
    const double worker_cpu = static_cast<double>(cpu1.workers - cpu0.workers) / tick;
    const double own = cpu1.own - cpu0.own;
    const double others =
        static_cast<double>(cpu1.busy - cpu0.busy) / tick - own - infra - worker_cpu;
    const auto pct = [&](double v) { return wall > 0 ? std::max(0.0, 100.0 * v / wall) : 0.0; };

    json = fmt::format(
        R"({{"system":"libaise","variant":"{}","workers":{},"slots_per_worker":{},"agents":"{}",)"
        R"("tasks":{},"warmup":{},"batch":{},"seconds":{:.3f},"tasks_per_s":{:.1f},)"
        R"("submit_per_s":{:.1f},"p50_ms":{:.2f},"p99_ms":{:.2f},"max_ms":{:.2f},"retried":{},)"
        R"("commits_per_task":{:.2f},"wal_syncs_per_task":{:.2f},"other_cpu_pct":{:.1f},"orchestrator_cpu_pct":{:.1f},)"
        R"("workers_cpu_pct":{:.1f},"infra_cpu_pct":{:.1f}}})",
        c.label, c.workers, slots_of(c.agents), c.agents, c.tasks, c.warmup, c.batch, seconds,
        static_cast<double>(c.tasks) / seconds,
        static_cast<double>(c.tasks) / std::chrono::duration<double>(t_submitted - t0).count(),
        percentile(latency, 0.50), percentile(latency, 0.99), latency.back(), retried,
        static_cast<double>(commits1 - commits0) / static_cast<double>(c.tasks),
        static_cast<double>(syncs1 - syncs0) / static_cast<double>(c.tasks), pct(others), pct(own),
        pct(worker_cpu), pct(infra));

    for (auto& w : workers) w->terminate();
    orch.unsubscribe(key);
  }
  admin.exec("DROP DATABASE IF EXISTS " + db_name + " WITH (FORCE)");
  std::puts(json.c_str());
  return 0;
}
