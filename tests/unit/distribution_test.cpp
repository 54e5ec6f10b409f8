// The distribution protocol between an orchestrator and aise::worker
// (include/aise/distribution.hpp), carried in-process so that it runs fast
// and under the sanitizers; tests/unit/rabbitmq_tasks_test.cpp and
// tests/distributed/ run the same code over a real RabbitMQ and processes.
#include <aise/distribution.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/worker.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <doctest/doctest.h>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>

#include "test_util.hpp"

using namespace aise;
using namespace std::chrono_literals;

namespace {

// A carrier in memory: hand-offs wait in one queue until a source takes
// them; unsettled deliveries go back. Duplicate delivery on demand.
class carrier : public std::enable_shared_from_this<carrier> {
 public:
  class dispatcher : public task_dispatcher {
   public:
    explicit dispatcher(std::shared_ptr<carrier> c, std::set<std::string> caps)
        : c_(std::move(c)), caps_(std::move(caps)) {}
    bool serves(std::string_view cap) const override { return caps_.count(std::string(cap)) != 0; }
    result<void> start(dispatch_callbacks cb) override {
      std::lock_guard lock(c_->mutex_);
      c_->orch_cb_ = std::move(cb);
      return {};
    }
    void handoff(std::vector<task_handoff> batch) override {
      std::lock_guard lock(c_->mutex_);
      for (auto& h : batch) {
        ++c_->handoffs_;
        // Through JSON, as a broker would carry it.
        c_->queue_.push_back(to_json(h).dump());
        if (c_->duplicate_) c_->queue_.push_back(c_->queue_.back());
      }
      c_->cv_.notify_all();
    }
    void cancel(lease_key key) override {
      std::vector<std::function<void(lease_key)>> targets;
      {
        std::lock_guard lock(c_->mutex_);
        for (auto& s : c_->sources_) targets.push_back(s.cancel);
      }
      for (auto& t : targets) t(key);
    }
    void dead_letter(task_handoff last, std::string reason) override {
      std::lock_guard lock(c_->mutex_);
      c_->dead_.emplace_back(last.task.id, std::move(reason));
    }
    void stop() override {
      std::lock_guard lock(c_->mutex_);
      c_->orch_cb_ = {};
    }

   private:
    std::shared_ptr<carrier> c_;
    std::set<std::string> caps_;
  };

  class source : public task_source {
   public:
    explicit source(std::shared_ptr<carrier> c) : c_(std::move(c)) {}
    ~source() override { stop(); }
    result<void> start(std::vector<std::string>, std::size_t, source_callbacks cb) override {
      std::lock_guard lock(c_->mutex_);
      index_ = c_->sources_.size();
      c_->sources_.push_back(entry{cb.cancel});
      thread_ = std::thread([this, cb = std::move(cb)] { run(cb); });
      return {};
    }
    result<void> report(const task_outcome& o) override {
      std::function<void(task_outcome)> fn;
      {
        std::lock_guard lock(c_->mutex_);
        if (c_->drop_reports_) return error(errc::unavailable, "reports switched off");
        fn = c_->orch_cb_.outcome;
      }
      auto parsed = task_outcome_from_json(to_json(o));
      REQUIRE(parsed);
      if (fn) fn(std::move(*parsed));
      return {};
    }
    void stop() override {
      {
        std::lock_guard lock(c_->mutex_);
        if (stopped_) return;
        stopped_ = true;
        if (index_ < c_->sources_.size()) c_->sources_[index_].cancel = [](lease_key) {};
        c_->cv_.notify_all();
      }
      if (thread_.joinable()) thread_.join();
    }

   private:
    struct delivery : task_delivery {
      delivery(std::shared_ptr<carrier> c, std::string body)
          : c(std::move(c)), body(std::move(body)) {}
      ~delivery() override {
        if (!settled) requeue();
      }
      void ack() override { settled = true; }
      void dead_letter(std::string) override { settled = true; }
      void requeue() override {
        settled = true;
        std::lock_guard lock(c->mutex_);
        c->queue_.push_front(body);
        c->cv_.notify_all();
      }
      std::shared_ptr<carrier> c;
      std::string body;
      bool settled = false;
    };
    void run(const source_callbacks& cb) {
      for (;;) {
        std::string body;
        {
          std::unique_lock lock(c_->mutex_);
          c_->cv_.wait(lock, [&] { return stopped_ || (!c_->queue_.empty() && !c_->paused_); });
          if (stopped_) return;
          body = std::move(c_->queue_.front());
          c_->queue_.pop_front();
        }
        auto h = task_handoff_from_json(nlohmann::json::parse(body));
        REQUIRE(h);
        cb.delivery(std::move(*h), std::make_unique<delivery>(c_, body));
      }
    }
    std::shared_ptr<carrier> c_;
    std::thread thread_;
    std::size_t index_ = 0;
    bool stopped_ = false;  // carrier's mutex
  };

  std::shared_ptr<dispatcher> make_dispatcher(std::set<std::string> caps) {
    return std::make_shared<dispatcher>(shared_from_this(), std::move(caps));
  }
  std::shared_ptr<source> make_source() { return std::make_shared<source>(shared_from_this()); }

  void set_duplicate(bool on) {
    std::lock_guard lock(mutex_);
    duplicate_ = on;
  }
  void set_drop_reports(bool on) {
    std::lock_guard lock(mutex_);
    drop_reports_ = on;
  }
  std::vector<std::pair<std::string, std::string>> dead_letters() {
    std::lock_guard lock(mutex_);
    return dead_;
  }
  std::size_t handoffs() {
    std::lock_guard lock(mutex_);
    return handoffs_;
  }

 private:
  struct entry {
    std::function<void(lease_key)> cancel;
  };
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::vector<entry> sources_;
  std::vector<std::pair<std::string, std::string>> dead_;
  dispatch_callbacks orch_cb_;
  std::size_t handoffs_ = 0;
  bool duplicate_ = false;
  bool drop_reports_ = false;
  bool paused_ = false;
};

// A store whose lease renewals can be switched off: its worker looks dead.
class frozen_renewals : public store {
 public:
  explicit frozen_renewals(std::shared_ptr<store> s) : s_(std::move(s)) {}
  std::atomic<bool> frozen{false};
  std::string_view backend() const noexcept override { return s_->backend(); }
  bool blocking() const noexcept override { return s_->blocking(); }
  result<project> create_project(project p) override { return s_->create_project(std::move(p)); }
  result<project> get_project(std::string_view id) override { return s_->get_project(id); }
  result<page<project>> list_projects(std::string_view a, std::size_t l) override {
    return s_->list_projects(a, l);
  }
  result<project> update_project(project p) override { return s_->update_project(std::move(p)); }
  result<void> put_agent(agent_record a) override { return s_->put_agent(std::move(a)); }
  result<agent_record> get_agent(std::string_view id) override { return s_->get_agent(id); }
  result<std::vector<agent_record>> list_agents(std::string_view p) override {
    return s_->list_agents(p);
  }
  result<agent_snapshot> save_snapshot(agent_snapshot s) override {
    return s_->save_snapshot(std::move(s));
  }
  result<agent_snapshot> load_snapshot(std::string_view id) override {
    return s_->load_snapshot(id);
  }
  result<std::vector<std::uint64_t>> insert_tasks(const std::vector<task>& t,
                                                  std::vector<event_draft>&& e) override {
    return s_->insert_tasks(t, std::move(e));
  }
  result<std::uint64_t> update_task(task_update&& u) override {
    return s_->update_task(std::move(u));
  }
  result<std::vector<std::uint64_t>> update_tasks(const std::vector<task_update>& b) override {
    return s_->update_tasks(b);
  }
  result<task> get_task(std::string_view id) override { return s_->get_task(id); }
  result<page<task>> list_tasks(const task_filter& f) override { return s_->list_tasks(f); }
  result<std::vector<task_attempt>> list_attempts(std::string_view id) override {
    return s_->list_attempts(id);
  }
  result<event> append_event(event_draft e) override { return s_->append_event(std::move(e)); }
  result<std::vector<event>> read_events(std::string_view p, std::uint64_t a,
                                         std::size_t l) override {
    return s_->read_events(p, a, l);
  }
  result<std::uint64_t> last_sequence(std::string_view p) override { return s_->last_sequence(p); }
  result<compaction_stats> compact(const retention_policy& p) override { return s_->compact(p); }
  result<artifact_meta> put_artifact(artifact_meta a) override {
    return s_->put_artifact(std::move(a));
  }
  result<artifact_meta> get_artifact(std::string_view id) override { return s_->get_artifact(id); }
  result<std::vector<artifact_meta>> list_artifacts(std::string_view p) override {
    return s_->list_artifacts(p);
  }
  result<std::vector<artifact_meta>> artifact_versions(std::string_view p,
                                                       std::string_view n) override {
    return s_->artifact_versions(p, n);
  }
  result<bool> artifact_digest_in_use(std::string_view d) override {
    return s_->artifact_digest_in_use(d);
  }
  result<task_lease> acquire_lease(const lease_key& k, std::string_view w, time_point now,
                                   duration ttl) override {
    return s_->acquire_lease(k, w, now, ttl);
  }
  result<std::vector<lease_key>> renew_leases(std::string_view w, const std::vector<lease_key>& k,
                                              time_point now, duration ttl) override {
    if (frozen.load()) return error(errc::unavailable, "renewals frozen by the test");
    return s_->renew_leases(w, k, now, ttl);
  }
  result<task_lease> finish_lease(const lease_key& k, std::string_view w, nlohmann::json o,
                                  time_point now) override {
    return s_->finish_lease(k, w, std::move(o), now);
  }
  result<task_lease> end_lease(const lease_key& k, lease_state to, time_point now,
                               bool only_if_expired) override {
    return s_->end_lease(k, to, now, only_if_expired);
  }
  result<std::vector<task_lease>> get_leases(const std::vector<std::string>& ids) override {
    return s_->get_leases(ids);
  }

 private:
  std::shared_ptr<store> s_;
};

// An agent of kind "remote": echoes, fails on request, or parks its task.
class remote_agent : public agent {
 public:
  explicit remote_agent(test::parked_tasks* parked = nullptr) {
    on_task_async("remote", [parked](task_context ctx) {
      const auto& p = ctx.payload();
      if (p.contains("fail_attempts") && ctx.task().attempt <= p["fail_attempts"].get<int>()) {
        (void)ctx.fail(error(errc::handler_failed, "asked to fail"));
        return;
      }
      if (p.contains("park") && parked != nullptr) {
        parked->park(std::move(ctx));
        return;
      }
      nlohmann::json deps = nlohmann::json::object();
      for (const auto& [id, v] : ctx.dependency_results()) deps[id] = v;
      (void)ctx.succeed({{"echo", p}, {"attempt", ctx.task().attempt}, {"deps", deps}});
    });
  }
};

class local_agent : public agent {
 public:
  local_agent() {
    on_task("local", [](task_context&) -> result<nlohmann::json> { return nlohmann::json(42); });
  }
};

struct fixture {
  std::shared_ptr<carrier> net = std::make_shared<carrier>();
  std::shared_ptr<store> db = make_memory_store();
  runtime orch_rt{test::quiet_options(2)};
  runtime worker_rt{test::quiet_options(2)};

  orchestrator_options orch_options(duration sweep = 50ms) {
    orchestrator_options o;
    o.store = db;
    o.dispatcher = net->make_dispatcher({"remote"});
    o.lease_check_interval = sweep;
    o.retry_initial_backoff = 10ms;
    o.seed = 7;
    // Also run with the orchestrator on its own thread, as with a SQL store
    // (CTest's core/distribution_cases_on_own_thread).
    const char* env = std::getenv("AISE_TEST_ORCHESTRATOR_THREADING");
    if (env != nullptr && std::string_view(env) == "own_thread") {
      o.threading = orchestrator_threading::own_thread;
    }
    return o;
  }
  worker_options work_options(std::string id, std::shared_ptr<store> s = nullptr) {
    worker_options w;
    w.id = std::move(id);
    w.store = s ? std::move(s) : db;
    w.source = net->make_source();
    w.lease_ttl = 300ms;
    w.heartbeat_interval = 50ms;
    return w;
  }
};

std::size_t succeeded_attempts(store& db, const std::string& id) {
  auto attempts = db.list_attempts(id);
  REQUIRE(attempts);
  std::size_t n = 0;
  for (const auto& a : *attempts) n += a.outcome == task_state::succeeded ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE("distribution: tasks of a served capability run on a worker, results come back") {
  fixture f;
  orchestrator orch(f.orch_rt, f.orch_options());
  worker w(f.worker_rt, f.work_options("w1"));
  REQUIRE(w.add_agents(
      "remote", [] { return std::make_unique<remote_agent>(); }, 2, 2));
  REQUIRE(w.start());
  CHECK(w.capabilities() == std::vector<std::string>{"remote"});

  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    task_spec s;
    s.kind = "remote";
    s.payload = {{"i", i}};
    auto id = orch.submit(s);
    REQUIRE(id);
    ids.push_back(*id);
  }
  for (const auto& id : ids) {
    auto t = orch.wait(id, 10s);
    REQUIRE(t);
    CHECK(t->state == task_state::succeeded);
    CHECK((*t->result)["echo"]["i"].is_number());
    CHECK(t->agent.rfind("w1/w1.remote-", 0) == 0);  // the worker's agent ran it
    auto leases = f.db->get_leases({id});
    REQUIRE(leases);
    REQUIRE(leases->size() == 1);
    CHECK((*leases)[0].state == lease_state::done);
    CHECK((*leases)[0].worker == "w1");
    CHECK(succeeded_attempts(*f.db, id) == 1);
  }
  CHECK(w.stats().succeeded == 40);
  CHECK(w.stats().leased == 40);
  // The worker's agents are recorded, alive ("remote"), then "stopped".
  auto agents = f.db->list_agents("");
  REQUIRE(agents);
  REQUIRE(agents->size() == 2);
  CHECK((*agents)[0].id == "w1.remote-1");
  CHECK((*agents)[0].status == "remote");
  CHECK((*agents)[0].capabilities == std::vector<std::string>{"remote"});
  w.stop(1s);
  agents = f.db->list_agents("");
  REQUIRE(agents);
  CHECK((*agents)[1].status == "stopped");
}

TEST_CASE("distribution: a remote task gets its dependency results and failures retry") {
  fixture f;
  orchestrator orch(f.orch_rt, f.orch_options());
  REQUIRE(orch.register_kind("local", [] { return std::make_unique<local_agent>(); }));
  REQUIRE(orch.spawn({.kind = "local"}));
  worker w(f.worker_rt, f.work_options("w1"));
  REQUIRE(w.add_agents("remote", [] { return std::make_unique<remote_agent>(); }));
  REQUIRE(w.start());

  task_spec first;
  first.id = "first";
  first.kind = "local";
  task_spec second;
  second.id = "second";
  second.kind = "remote";
  second.depends_on = {"first"};
  second.max_attempts = 3;
  second.payload = {{"fail_attempts", 1}};
  REQUIRE(orch.submit_all({first, second}));
  auto t = orch.wait("second", 10s);
  REQUIRE(t);
  REQUIRE(t->state == task_state::succeeded);
  CHECK(t->attempt == 2);
  CHECK((*t->result)["deps"]["first"] == 42);
  auto attempts = f.db->list_attempts("second");
  REQUIRE(attempts);
  REQUIRE(attempts->size() == 2);
  CHECK((*attempts)[0].outcome == task_state::failed);
  CHECK((*attempts)[0].error->message() == "asked to fail");
  CHECK((*attempts)[1].outcome == task_state::succeeded);
  CHECK(f.net->dead_letters().empty());

  // Failing every attempt: failed for good, and dead-lettered with the reason.
  task_spec poison;
  poison.id = "poison";
  poison.kind = "remote";
  poison.max_attempts = 2;
  poison.payload = {{"fail_attempts", 99}};
  REQUIRE(orch.submit(poison));
  auto failed = orch.wait("poison", 10s);
  REQUIRE(failed);
  CHECK(failed->state == task_state::failed);
  CHECK(failed->attempt == 2);
  test::notifier sig;
  CHECK(sig.wait([&] { return f.net->dead_letters().size() == 1; }));
  const auto dead = f.net->dead_letters();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].first == "poison");
  CHECK(dead[0].second.find("failed after attempt 2 of 2") != std::string::npos);
  CHECK(dead[0].second.find("asked to fail") != std::string::npos);
  w.stop(1s);
}

TEST_CASE("distribution: a duplicated hand-off runs once and an unreported outcome is swept in") {
  fixture f;
  f.net->set_duplicate(true);
  f.net->set_drop_reports(true);  // every outcome reaches the orchestrator through its lease
  orchestrator orch(f.orch_rt, f.orch_options());
  worker w(f.worker_rt, f.work_options("w1"));
  REQUIRE(w.add_agents(
      "remote", [] { return std::make_unique<remote_agent>(); }, 2));
  REQUIRE(w.start());
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    auto id = orch.submit({.kind = "remote"});
    REQUIRE(id);
    ids.push_back(*id);
  }
  for (const auto& id : ids) {
    auto t = orch.wait(id, 10s);
    REQUIRE(t);
    CHECK(t->state == task_state::succeeded);
    CHECK(t->attempt == 1);
  }
  test::notifier sig;
  CHECK(sig.wait([&] { return w.stats().report_failures == 10; }));
  const auto s = w.stats();
  CHECK(s.leased == 10);
  CHECK(s.duplicates == 10);
  w.stop(1s);
}

TEST_CASE("distribution: a worker that stops renewing loses the attempt and another runs it once") {
  fixture f;
  auto flaky = std::make_shared<frozen_renewals>(f.db);
  test::parked_tasks parked;
  orchestrator orch(f.orch_rt, f.orch_options());
  test::event_recorder events(orch);
  runtime second_rt(test::quiet_options(2));
  auto dying_options = f.work_options("dying", flaky);
  auto dying_source = dying_options.source;
  worker dying(f.worker_rt, dying_options);
  REQUIRE(dying.add_agents("remote", [&] { return std::make_unique<remote_agent>(&parked); }));
  REQUIRE(dying.start());

  task_spec s;
  s.id = "long";
  s.kind = "remote";
  s.max_attempts = 2;
  s.payload = {{"park", true}};
  REQUIRE(orch.submit(s));
  REQUIRE(parked.wait_count(1));
  task_context first = parked.take("long");
  // The worker goes silent (as if SIGKILLed); its lease expires and the
  // orchestrator's sweep ends it and retries on a healthy worker.
  flaky->frozen = true;
  dying_source->stop();  // and hears nothing more from the broker
  worker healthy(second_rt, f.work_options("healthy"));
  REQUIRE(healthy.add_agents("remote", [] { return std::make_unique<remote_agent>(); }));
  REQUIRE(healthy.start());
  auto t = orch.wait("long", 10s);
  REQUIRE(t);
  REQUIRE(t->state == task_state::succeeded);
  CHECK(t->attempt == 2);
  CHECK(t->agent.rfind("healthy/", 0) == 0);
  auto attempts = f.db->list_attempts("long");
  REQUIRE(attempts);
  REQUIRE(attempts->size() == 2);
  CHECK((*attempts)[0].outcome == task_state::failed);
  CHECK((*attempts)[0].error->message().find("stopped renewing") != std::string::npos);
  // The first worker, cut off, still completes: accepted locally, refused
  // by its lease (lost), so it counts nowhere.
  REQUIRE(first.succeed("late"));
  test::notifier sig;
  CHECK(sig.wait([&] { return dying.stats().lost == 1; }));
  CHECK(dying.stats().succeeded == 0);
  auto leases = f.db->get_leases({"long"});
  REQUIRE(leases);
  REQUIRE(leases->size() == 2);
  CHECK((*leases)[0].state == lease_state::lost);
  CHECK((*leases)[1].state == lease_state::done);
  CHECK(succeeded_attempts(*f.db, "long") == 1);
  auto stored = f.db->get_task("long");
  REQUIRE(stored);
  CHECK(stored->result->at("attempt") == 2);
  healthy.stop(1s);
  dying.stop(0ms);
}

TEST_CASE("distribution: cancelling or timing out a remote attempt revokes its lease") {
  fixture f;
  test::parked_tasks parked;
  orchestrator orch(f.orch_rt, f.orch_options());
  worker w(f.worker_rt, f.work_options("w1"));
  REQUIRE(w.add_agents(
      "remote", [&] { return std::make_unique<remote_agent>(&parked); }, 1, 4));
  REQUIRE(w.start());

  task_spec c;
  c.id = "to-cancel";
  c.kind = "remote";
  c.payload = {{"park", true}};
  REQUIRE(orch.submit(c));
  REQUIRE(parked.wait_count(1));
  task_context cctx = parked.take("to-cancel");
  REQUIRE(orch.cancel("to-cancel"));
  test::notifier sig;
  // The worker hears the cancel notice and sets the token.
  CHECK(sig.wait([&] { return cctx.cancelled(); }));
  CHECK(cctx.succeed(1).error().code() == errc::cancelled);
  auto leases = f.db->get_leases({"to-cancel"});
  REQUIRE(leases);
  REQUIRE(leases->size() == 1);
  CHECK((*leases)[0].state == lease_state::revoked);

  task_spec t;
  t.id = "to-time-out";
  t.kind = "remote";
  t.timeout = 200ms;
  t.max_attempts = 2;
  t.payload = {{"park", true}};
  REQUIRE(orch.submit(t));
  REQUIRE(parked.wait_count(1));
  task_context tctx = parked.take("to-time-out");
  REQUIRE(parked.wait_count(1, 10s));  // attempt 2, after the first timed out
  task_context t2 = parked.take("to-time-out");
  CHECK(t2.task().attempt == 2);
  CHECK(tctx.cancelled());
  CHECK(tctx.succeed(1).error().code() == errc::cancelled);
  REQUIRE(t2.succeed(2));
  auto done = orch.wait("to-time-out", 10s);
  REQUIRE(done);
  CHECK(done->state == task_state::succeeded);
  CHECK(*done->result == 2);
  CHECK(succeeded_attempts(*f.db, "to-time-out") == 1);
  w.stop(1s);
}

TEST_CASE("distribution: a new orchestrator adopts attempts still running on workers") {
  fixture f;
  test::parked_tasks parked;
  worker w(f.worker_rt, f.work_options("w1"));
  REQUIRE(w.add_agents("remote", [&] { return std::make_unique<remote_agent>(&parked); }));
  REQUIRE(w.start());
  {
    runtime rt1(test::quiet_options(2));
    orchestrator first(rt1, f.orch_options());
    task_spec s;
    s.id = "adopted";
    s.kind = "remote";
    s.payload = {{"park", true}};
    REQUIRE(first.submit(s));
    REQUIRE(parked.wait_count(1));
  }  // the first orchestrator is gone; the worker still runs the attempt
  orchestrator second(f.orch_rt, f.orch_options());
  auto report = second.recover();
  REQUIRE(report);
  CHECK(report->tasks == 1);
  CHECK(report->lost_attempts == 0);
  task_context ctx = parked.take("adopted");
  REQUIRE(ctx.succeed("finished after the restart"));
  auto t = second.wait("adopted", 10s);
  REQUIRE(t);
  CHECK(t->state == task_state::succeeded);
  CHECK(t->attempt == 1);
  CHECK(*t->result == "finished after the restart");
  w.stop(1s);
}

TEST_CASE("distribution: stop releases running attempts so they are retried at once") {
  fixture f;
  test::parked_tasks parked;
  orchestrator orch(f.orch_rt, f.orch_options());
  worker w(f.worker_rt, f.work_options("w1"));
  REQUIRE(w.add_agents("remote", [&] { return std::make_unique<remote_agent>(&parked); }));
  REQUIRE(w.start());
  task_spec s;
  s.id = "released";
  s.kind = "remote";
  s.max_attempts = 2;
  s.payload = {{"park", true}};
  REQUIRE(orch.submit(s));
  REQUIRE(parked.wait_count(1));
  task_context ctx = parked.take("released");
  w.stop(50ms);
  CHECK(w.stats().released == 1);
  CHECK(ctx.cancelled());
  runtime other_rt(test::quiet_options(2));
  worker other(other_rt, f.work_options("w2"));
  REQUIRE(other.add_agents("remote", [] { return std::make_unique<remote_agent>(); }));
  REQUIRE(other.start());
  auto t = orch.wait("released", 10s);
  REQUIRE(t);
  CHECK(t->state == task_state::succeeded);
  CHECK(t->attempt == 2);
  other.stop(1s);
}
