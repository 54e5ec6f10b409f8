// Distribution for real: this process is the orchestrator (PostgreSQL store,
// RabbitMQ dispatcher); `aise-worker` processes run the tasks. Needs the
// PostgreSQL and RabbitMQ that scripts/test.sh starts
// (AISE_TEST_POSTGRES_URL, AISE_TEST_RABBITMQ_URL).
//
// - 3 workers, 5,000 tasks, one worker SIGKILLed mid-run: every task
//   succeeds exactly once (one succeeded attempt row, one result) and none
//   is lost; the killed worker's attempts were retried elsewhere.
// - a broker restart mid-run: every task still completes.
// - a task longer than the broker's consumer timeout (shortened to 2 s)
//   completes in its first attempt.

#include <aise/orchestrator.hpp>
#include <aise/rabbitmq.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <libpq-fe.h>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "../unit/postgres_url.hpp"
#include "../unit/raw_amqp.hpp"
#include "../unit/test_util.hpp"

extern char** environ;

using namespace std::chrono_literals;

namespace {

std::string env_or_skip(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    FAIL("set " << name << " (scripts/test.sh starts the services and sets it)");
  }
  return v;
}

int services(const std::string& args) {
  const std::string command = "bash '" AISE_SOURCE_DIR "/scripts/services.sh' " + args + " >&2";
  return std::system(command.c_str());  // NOLINT(cert-env33-c): a test helper
}

/// A database of its own on the test PostgreSQL; returns its URL.
std::string fresh_database() {
  static std::atomic<int> counter{0};
  const std::string admin = env_or_skip("AISE_TEST_POSTGRES_URL");
  const std::string name = fmt::format("aise_dist_{}_{}", ::getpid(), counter.fetch_add(1));
  {
    soci::session db(soci::postgresql, aise::test::conninfo(admin));
    db << "DROP DATABASE IF EXISTS " + name;
    db << "CREATE DATABASE " + name;
  }
  const auto slash = admin.rfind('/');
  const auto query = admin.find('?', slash);
  std::string url = admin.substr(0, slash + 1) + name;
  if (query != std::string::npos) url += admin.substr(query);
  return url;
}

std::string fresh_prefix(const char* what) {
  static std::atomic<int> counter{0};
  return fmt::format("aise-dist-{}-{}-{}.", what, ::getpid(), counter.fetch_add(1));
}

/// One aise-worker process.
class worker_process {
 public:
  worker_process(const std::string& db, const std::string& amqp, const std::string& prefix,
                 const std::string& id, const std::string& agents) {
    std::vector<std::string> args = {
        AISE_WORKER_BIN, "--db",           db,    "--amqp",     amqp,   "--prefix",
        prefix,          "--id",           id,    "--agents",   agents, "--lease-ttl-ms",
        "2000",          "--heartbeat-ms", "400", "--grace-ms", "5000"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid_, AISE_WORKER_BIN, nullptr, nullptr, argv.data(), environ) == 0);
  }
  ~worker_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  worker_process(const worker_process&) = delete;
  worker_process& operator=(const worker_process&) = delete;

  void kill_hard() {
    REQUIRE(::kill(pid_, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid_, &status, 0) == pid_);
    CHECK(WIFSIGNALED(status));
    pid_ = -1;
  }
  /// SIGTERM; the exit status (0 expected).
  int terminate() {
    REQUIRE(::kill(pid_, SIGTERM) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
};

/// The orchestrator side: a runtime, the PostgreSQL store, the dispatcher.
struct scheduler {
  std::string db_url = fresh_database();
  std::string amqp = env_or_skip("AISE_TEST_RABBITMQ_URL");
  std::string prefix;
  std::shared_ptr<aise::store> db;
  aise::runtime rt{aise::test::quiet_options(2)};
  std::unique_ptr<aise::orchestrator> orch;

  explicit scheduler(const char* what, std::vector<std::string> capabilities)
      : prefix(fresh_prefix(what)) {
    aise::sql::store_options so;
    so.url = db_url;
    so.pool_size = 4;
    auto s = aise::sql::open_store(so);
    REQUIRE_MESSAGE(s, (s ? std::string() : s.error().describe()));
    db = *s;
    aise::rabbitmq_task_options q;
    q.connection.url = amqp;
    q.connection.prefix = prefix;
    q.connection.connect_timeout = 2s;
    q.connection.reconnect_backoff_max = 500ms;
    q.capabilities = std::move(capabilities);
    auto d = aise::make_rabbitmq_dispatcher(q);
    REQUIRE_MESSAGE(d, (d ? std::string() : d.error().describe()));
    aise::orchestrator_options o;
    o.store = db;
    o.dispatcher = *d;
    o.lease_check_interval = 250ms;
    o.retry_initial_backoff = 20ms;
    o.retry_max_backoff = 200ms;
    orch = std::make_unique<aise::orchestrator>(rt, o);
  }

  /// Submits `n` tasks of `kind` (in batches); returns their ids.
  std::vector<std::string> submit(int n, const std::string& kind, nlohmann::json payload = {}) {
    std::vector<std::string> ids;
    std::vector<aise::task_spec> batch;
    for (int i = 0; i < n; ++i) {
      aise::task_spec s;
      s.kind = kind;
      s.max_attempts = 5;
      s.payload = payload.is_null() ? nlohmann::json{{"i", i}} : payload;
      batch.push_back(std::move(s));
      if (batch.size() == 500 || i + 1 == n) {
        auto r = orch->submit_all(std::move(batch));
        REQUIRE_MESSAGE(r, (r ? std::string() : r.error().describe()));
        ids.insert(ids.end(), r->begin(), r->end());
        batch.clear();
      }
    }
    return ids;
  }
};

/// Counts finished tasks as their events arrive.
class finish_counter {
 public:
  explicit finish_counter(aise::orchestrator& o) : orch_(o) {
    key_ = o.subscribe([this](const aise::event& e) {
      if (e.type == "task.succeeded" || e.type == "task.failed" || e.type == "task.cancelled") {
        sig_.update([&] { ++finished_; });
      }
    });
  }
  ~finish_counter() { orch_.unsubscribe(key_); }
  finish_counter(const finish_counter&) = delete;
  finish_counter& operator=(const finish_counter&) = delete;
  bool wait(std::size_t n, std::chrono::milliseconds limit) {
    return sig_.wait([&] { return finished_ >= n; }, limit);
  }
  std::size_t count() {
    std::lock_guard lock(sig_.mutex());
    return finished_;
  }

 private:
  aise::orchestrator& orch_;
  aise::test::notifier sig_;
  std::size_t finished_ = 0;
  std::size_t key_ = 0;
};

/// What the database says about the tasks: per task, attempts that
/// succeeded, and whether it succeeded with a result.
struct tally {
  long long tasks = 0;
  long long succeeded = 0;
  long long retried = 0;         // tasks needing more than one attempt
  long long double_success = 0;  // tasks with more than one succeeded attempt
  long long missing_result = 0;
};

tally count_in_database(const std::string& url) {
  tally t;
  soci::session db(soci::postgresql, aise::test::conninfo(url));
  db << "SELECT count(*) FROM tasks", soci::into(t.tasks);
  db << "SELECT count(*) FROM tasks WHERE state = 'succeeded'", soci::into(t.succeeded);
  db << "SELECT count(*) FROM tasks WHERE attempt > 1", soci::into(t.retried);
  db << "SELECT count(*) FROM (SELECT task_id FROM task_attempts WHERE outcome = 'succeeded' "
        "GROUP BY task_id HAVING count(*) > 1) AS d",
      soci::into(t.double_success);
  db << "SELECT count(*) FROM tasks WHERE state = 'succeeded' AND result IS NULL",
      soci::into(t.missing_result);
  return t;
}

/// The control for the consumer-timeout case: a raw consumer that holds
/// one delivery without acknowledging it. Returns how long until the broker
/// closed its channel (nullopt: not within `limit`).
std::optional<std::chrono::milliseconds> raw_consumer_timed_out(const std::string& url,
                                                                std::chrono::seconds limit) {
  amqp_connection_info info{};
  std::vector<char> buffer(url.begin(), url.end());
  buffer.push_back('\0');
  REQUIRE(amqp_parse_url(buffer.data(), &info) == AMQP_STATUS_OK);
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  REQUIRE(amqp_socket_open(socket, info.host, info.port) == AMQP_STATUS_OK);
  REQUIRE(
      amqp_login(conn, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password)
          .reply_type == AMQP_RESPONSE_NORMAL);
  amqp_channel_open(conn, 1);
  REQUIRE(amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL);
  amqp_queue_declare_ok_t* q =
      amqp_queue_declare(conn, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
  REQUIRE(q != nullptr);
  const amqp_bytes_t queue = amqp_bytes_malloc_dup(q->queue);
  REQUIRE(amqp_basic_publish(conn, 1, amqp_empty_bytes, queue, 0, 0, nullptr,
                             amqp_cstring_bytes("held")) == AMQP_STATUS_OK);
  amqp_basic_consume(conn, 1, queue, amqp_empty_bytes, 0, /*no_ack=*/0, 0, amqp_empty_table);
  REQUIRE(amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL);
  const auto start = std::chrono::steady_clock::now();
  std::optional<std::chrono::milliseconds> closed;
  while (std::chrono::steady_clock::now() - start < limit && !closed) {
    amqp_frame_t frame{};
    timeval tv{1, 0};
    const int rc = amqp_simple_wait_frame_noblock(conn, &frame, &tv);
    if (rc == AMQP_STATUS_TIMEOUT) continue;
    if (rc != AMQP_STATUS_OK) break;
    if (frame.frame_type == AMQP_FRAME_METHOD &&
        (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
         frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)) {
      closed = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
    }
  }
  amqp_bytes_free(queue);
  amqp_destroy_connection(conn);
  return closed;
}

}  // namespace

TEST_CASE("distributed: 3 workers and 5000 tasks with one worker SIGKILLed mid-run") {
  scheduler s("kill", {"echo"});
  finish_counter done(*s.orch);
  std::vector<std::unique_ptr<worker_process>> workers;
  for (int i = 1; i <= 3; ++i) {
    workers.push_back(std::make_unique<worker_process>(s.db_url, s.amqp, s.prefix,
                                                       fmt::format("w{}", i), "echo:2:8"));
  }
  constexpr int n = 5000;
  const auto ids = s.submit(n, "echo");
  REQUIRE(ids.size() == n);
  // Mid-run: a third done, kill worker 2 (its leased attempts die with it).
  REQUIRE(done.wait(n / 3, 120s));
  workers[1]->kill_hard();
  const std::size_t at_kill = done.count();
  INFO("finished when worker 2 was killed: " << at_kill);
  REQUIRE_MESSAGE(done.wait(n, 180s), "finished: " << done.count() << " of " << n);

  const tally t = count_in_database(s.db_url);
  CHECK(t.tasks == n);
  CHECK(t.succeeded == n);       // none lost
  CHECK(t.double_success == 0);  // none completed twice
  CHECK(t.missing_result == 0);
  // Results name the worker that produced them; the killed one's unfinished
  // attempts were retried (lost leases) — only if it held some at the kill.
  std::map<std::string, std::size_t> by_worker;
  for (const auto& id : ids) {
    auto task = s.db->get_task(id);
    REQUIRE(task);
    REQUIRE(task->result);
    ++by_worker[task->result->value("worker", std::string())];
  }
  CHECK(by_worker.size() == 3);
  MESSAGE("results per worker: w1 " << by_worker["w1"] << ", w2 " << by_worker["w2"] << ", w3 "
                                    << by_worker["w3"] << "; tasks retried: " << t.retried);
  CHECK(workers[0]->terminate() == 0);
  CHECK(workers[2]->terminate() == 0);
}

TEST_CASE("distributed: a broker restart mid-run loses no task") {
  scheduler s("restart", {"echo"});
  finish_counter done(*s.orch);
  worker_process w1(s.db_url, s.amqp, s.prefix, "r1", "echo:2:8");
  worker_process w2(s.db_url, s.amqp, s.prefix, "r2", "echo:2:8");
  constexpr int n = 2000;
  const auto ids = s.submit(n, "echo");
  REQUIRE(done.wait(n / 4, 120s));
  REQUIRE(services("stop rabbitmq") == 0);
  std::this_thread::sleep_for(1s);
  REQUIRE(services("start rabbitmq") == 0);
  REQUIRE_MESSAGE(done.wait(n, 180s), "finished: " << done.count() << " of " << n);
  const tally t = count_in_database(s.db_url);
  CHECK(t.succeeded == n);
  CHECK(t.double_success == 0);
  CHECK(w1.terminate() == 0);
  CHECK(w2.terminate() == 0);
}

TEST_CASE("distributed: a task longer than the consumer timeout completes in one attempt") {
  // New channels get a 2 s consumer timeout: a worker that acknowledged only
  // after the task (Celery's acks_late) would have its channel closed and
  // the task delivered again. Ours acknowledges once the lease is durable.
  REQUIRE(services("consumer-timeout rabbitmq 2000") == 0);
  struct restore {
    ~restore() { services("consumer-timeout rabbitmq 1800000"); }
  } restore_timeout;
  // The control: the shortened timeout is in force (a consumer holding a
  // delivery unacknowledged has its channel closed).
  const auto control = raw_consumer_timed_out(env_or_skip("AISE_TEST_RABBITMQ_URL"), 30s);
  REQUIRE_MESSAGE(control.has_value(), "the broker never enforced its consumer timeout");
  MESSAGE("a raw consumer holding one delivery lost its channel after " << control->count()
                                                                        << " ms");
  scheduler s("long", {"sleep"});
  worker_process w(s.db_url, s.amqp, s.prefix, "long-1", "sleep:1");
  aise::task_spec spec;
  spec.kind = "sleep";
  spec.payload = {{"ms", 7000}};  // well past the 2 s timeout and the control's time
  auto id = s.orch->submit(spec);
  REQUIRE(id);
  auto t = s.orch->wait(*id, 60s);
  REQUIRE(t);
  CHECK(t->state == aise::task_state::succeeded);
  CHECK(t->attempt == 1);
  CHECK((*t->result)["slept_ms"] == 7000);
  CHECK(w.terminate() == 0);
}

TEST_CASE("distributed: poison work ends in the dead-letter queue with its reason") {
  scheduler s("poison", {"fail"});
  worker_process w(s.db_url, s.amqp, s.prefix, "poison-1", "fail:1");
  // A task that fails every attempt: failed for good, then dead-lettered.
  aise::task_spec spec;
  spec.kind = "fail";
  spec.max_attempts = 2;
  spec.payload = {{"message", "this input always breaks the tool"}};
  auto id = s.orch->submit(spec);
  REQUIRE(id);
  auto t = s.orch->wait(*id, 60s);
  REQUIRE(t);
  CHECK(t->state == aise::task_state::failed);
  CHECK(t->attempt == 2);
  // A message no worker can decode, published straight into the task queue.
  aise::test::raw_connection raw(s.amqp);
  raw.publish(s.prefix + "tasks", "fail", "{not json");
  std::map<std::string, std::string> reasons;  // by body kind
  aise::test::notifier sig;
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (reasons.size() < 2 && std::chrono::steady_clock::now() < give_up) {
    if (auto g = raw.wait_get(s.prefix + "dead")) {
      reasons[g->body == "{not json" ? "garbage" : "task"] = g->headers["aise-dead-reason"];
    }
  }
  REQUIRE(reasons.size() == 2);
  INFO("reasons: task '" << reasons["task"] << "', garbage '" << reasons["garbage"] << "'");
  CHECK(reasons["task"].find("failed after attempt 2 of 2") != std::string::npos);
  CHECK(reasons["task"].find("this input always breaks the tool") != std::string::npos);
  CHECK(!reasons["garbage"].empty());
  CHECK(w.terminate() == 0);
}
