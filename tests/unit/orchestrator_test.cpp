#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <doctest/doctest.h>
#include <future>
#include <mutex>
#include <set>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>
#include <string_view>
#include <thread>

#include "test_util.hpp"

using namespace std::chrono_literals;
using aise::task_state;
using aise::test::event_recorder;
using aise::test::notifier;
using aise::test::parked_tasks;

namespace {

aise::runtime_options quiet(std::shared_ptr<aise::clock> clock = nullptr) {
  return aise::test::quiet_options(2, std::move(clock));
}

// Every orchestrator case also runs with the orchestrator on its own thread
// (CTest sets AISE_TEST_ORCHESTRATOR_THREADING=own_thread for that run; see
// tests/CMakeLists.txt): the behaviour must not depend on where it works.
aise::orchestrator_threading test_threading() {
  const char* env = std::getenv("AISE_TEST_ORCHESTRATOR_THREADING");
  if (env != nullptr && std::string_view(env) == "own_thread")
    return aise::orchestrator_threading::own_thread;
  return aise::orchestrator_threading::automatic;
}

// Completes "add" tasks at once, and parks "hold" tasks for the test.
class worker : public aise::agent {
 public:
  explicit worker(parked_tasks* parked = nullptr) : parked_(parked) {
    on_task("add", [](aise::task_context& ctx) -> aise::result<nlohmann::json> {
      int sum = ctx.payload().is_object() ? ctx.payload().value("n", 0) : 0;
      for (const auto& [id, r] : ctx.dependency_results()) sum += r.get<int>();
      return sum;
    });
    on_task("fail", [](aise::task_context&) -> aise::result<nlohmann::json> {
      return aise::error(aise::errc::handler_failed, "always fails");
    });
    on_task("throw", [](aise::task_context&) -> aise::result<nlohmann::json> {
      throw std::runtime_error("handler exploded");
    });
    on_task_async("hold", [this](aise::task_context ctx) { parked_->park(std::move(ctx)); });
    on_task_async("drop", [](aise::task_context) {});
    // Asks a human on its first attempt, then does the work.
    on_task_async("escalate_once", [](aise::task_context ctx) {
      if (ctx.task().attempt == 1) {
        (void)ctx.escalate(aise::error(aise::errc::limit_exceeded, "token budget reached"));
      } else {
        (void)ctx.succeed(ctx.task().attempt);
      }
    });
  }

 private:
  parked_tasks* parked_;
};

struct fixture {
  explicit fixture(std::shared_ptr<aise::manual_clock> c = nullptr, std::uint64_t seed = 7)
      : clock(std::move(c)), rt(quiet(clock)), orch(rt, options(seed)), events(orch) {
    REQUIRE(
        orch.register_kind("worker", [this] { return std::make_unique<worker>(&parked); }).ok());
  }
  static aise::orchestrator_options options(std::uint64_t seed) {
    aise::orchestrator_options o;
    o.seed = seed;
    o.retry_jitter = 0.0;
    o.threading = test_threading();
    return o;
  }
  std::string spawn(std::size_t concurrency = 1, std::string name = {}) {
    auto r = orch.spawn({.kind = "worker", .name = std::move(name), .concurrency = concurrency});
    REQUIRE(r.ok());
    REQUIRE(events.wait_for("agent.started", *r));
    return *r;
  }
  aise::task wait(const std::string& id) {
    auto t = orch.wait(id, 10s);
    REQUIRE(t.ok());
    return *t;
  }
  std::shared_ptr<aise::manual_clock> clock;
  parked_tasks parked;
  aise::runtime rt;
  aise::orchestrator orch;
  event_recorder events;
};

aise::task_spec spec(std::string kind, nlohmann::json payload = nullptr) {
  aise::task_spec s;
  s.kind = std::move(kind);
  s.payload = std::move(payload);
  return s;
}

}  // namespace

TEST_CASE("orchestrator: a task runs to success and every change is a numbered event") {
  fixture f;
  f.spawn();
  auto id = f.orch.submit(spec("add", {{"n", 5}}));
  REQUIRE(id.ok());
  auto t = f.wait(*id);
  CHECK(t.state == task_state::succeeded);
  CHECK(t.result == nlohmann::json(5));
  CHECK(t.attempt == 1);
  REQUIRE(f.events.wait_for("task.succeeded", *id));
  CHECK(f.events.types_of(*id) ==
        std::vector<std::string>{"task.pending", "task.queued", "task.running", "task.succeeded"});
  // Sequences of the project have no gaps or duplicates, and the store has them.
  auto all = f.orch.store().read_events("default", 0, 1000);
  REQUIRE(all.ok());
  for (std::size_t i = 0; i < all->size(); ++i) CHECK((*all)[i].sequence == i + 1);
  auto attempts = f.orch.store().list_attempts(*id);
  REQUIRE(attempts.ok());
  REQUIRE(attempts->size() == 1);
  CHECK((*attempts)[0].outcome == task_state::succeeded);
}

TEST_CASE("orchestrator: queued tasks run in priority order") {
  fixture f;
  f.spawn(1);
  auto blocker = f.orch.submit(spec("hold"));
  REQUIRE(blocker.ok());
  REQUIRE(f.parked.wait_count(1));
  std::vector<std::string> ids;
  for (int p : {1, 5, 3}) {
    auto s = spec("hold");
    s.priority = p;
    ids.push_back(f.orch.submit(s).value());
  }
  std::vector<std::string> order;
  REQUIRE(f.parked.take(*blocker).succeed().ok());
  for (int i = 0; i < 3; ++i) {
    REQUIRE(f.parked.wait_count(1));
    auto ctx = f.parked.take_all().at(0);
    order.push_back(ctx.task().id);
    REQUIRE(ctx.succeed().ok());
  }
  CHECK(order == std::vector<std::string>{ids[1], ids[2], ids[0]});
}

TEST_CASE("orchestrator: a DAG runs in dependency order and dependents see results") {
  fixture f;
  f.spawn(2);
  std::vector<aise::task_spec> graph;
  auto a = spec("add", {{"n", 1}});
  a.id = "a";
  auto b = spec("add", {{"n", 10}});
  b.id = "b";
  b.depends_on = {"a"};
  auto c = spec("add", {{"n", 100}});
  c.id = "c";
  c.depends_on = {"a"};
  auto d = spec("add", {{"n", 1000}});
  d.id = "d";
  d.depends_on = {"b", "c"};
  auto ids = f.orch.submit_all({d, b, c, a});  // order of submission does not matter
  REQUIRE(ids.ok());
  auto t = f.wait("d");
  CHECK(t.state == task_state::succeeded);
  // d = 1000 + b (10 + 1) + c (100 + 1)
  CHECK(t.result == nlohmann::json(1112));
}

TEST_CASE("orchestrator: cycles and unknown dependencies are rejected and nothing is stored") {
  fixture f;
  auto a = spec("add");
  a.id = "x";
  a.depends_on = {"y"};
  auto b = spec("add");
  b.id = "y";
  b.depends_on = {"x"};
  auto r = f.orch.submit_all({a, b});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == aise::errc::cycle);
  CHECK(r.error().message().find("x") != std::string::npos);

  auto self = spec("add");
  self.id = "s";
  self.depends_on = {"s"};
  CHECK(f.orch.submit(self).error().code() == aise::errc::cycle);

  auto orphan = spec("add");
  orphan.depends_on = {"ghost"};
  auto u = f.orch.submit(orphan);
  REQUIRE_FALSE(u.ok());
  CHECK(u.error().code() == aise::errc::not_found);
  CHECK(u.error().message().find("ghost") != std::string::npos);

  CHECK(f.orch.store().list_tasks({}).value().items.empty());
  CHECK(f.orch.submit(spec("")).error().code() == aise::errc::invalid_argument);
}

TEST_CASE("orchestrator: a failed dependency cancels or fails its dependents by policy") {
  fixture f;
  f.spawn(2);
  auto root = spec("fail");
  root.id = "root";
  auto cancel_me = spec("add");
  cancel_me.id = "cancel-me";
  cancel_me.depends_on = {"root"};
  auto transitive = spec("add");
  transitive.id = "transitive";
  transitive.depends_on = {"cancel-me"};
  auto fail_me = spec("add");
  fail_me.id = "fail-me";
  fail_me.depends_on = {"root"};
  fail_me.on_dependency_failure = aise::dependency_failure_policy::fail;
  REQUIRE(f.orch.submit_all({root, cancel_me, transitive, fail_me}).ok());
  CHECK(f.wait("root").state == task_state::failed);
  auto c = f.wait("cancel-me");
  CHECK(c.state == task_state::cancelled);
  CHECK(c.error->message().find("root") != std::string::npos);
  CHECK(f.wait("transitive").state == task_state::cancelled);
  auto x = f.wait("fail-me");
  CHECK(x.state == task_state::failed);
  CHECK(x.attempt == 0);  // it never ran
  // A dependency that already failed dooms a new dependent at submission.
  auto late = spec("add");
  late.depends_on = {"root"};
  auto id = f.orch.submit(late);
  REQUIRE(id.ok());
  CHECK(f.wait(*id).state == task_state::cancelled);
}

TEST_CASE("orchestrator: retry runs a failed or cancelled task again as a new task") {
  fixture f;
  f.spawn(2);
  auto rejected = spec("add", {{"n", 41}});
  rejected.id = "rejected";
  rejected.requires_approval = true;
  rejected.priority = 3;
  REQUIRE(f.orch.submit(rejected).ok());
  REQUIRE(f.events.wait_for("task.awaiting_approval", "rejected"));
  REQUIRE(f.orch.reject("rejected", "reviewer", "not now").ok());
  CHECK(f.wait("rejected").state == task_state::cancelled);

  auto copy = f.orch.retry("rejected");
  REQUIRE(copy.ok());
  CHECK(*copy != "rejected");
  auto t = f.orch.get(*copy);
  REQUIRE(t.ok());
  CHECK(t->payload == nlohmann::json{{"n", 41}});
  CHECK(t->priority == 3);
  CHECK(t->requires_approval);
  REQUIRE(f.events.wait_for("task.awaiting_approval", *copy));
  REQUIRE(f.orch.approve(*copy, "reviewer").ok());
  auto done = f.wait(*copy);
  CHECK(done.state == task_state::succeeded);
  CHECK(done.result == nlohmann::json(41));
  CHECK(f.wait("rejected").state == task_state::cancelled);  // the original is untouched

  auto failing = f.orch.submit(spec("fail"));
  REQUIRE(failing.ok());
  CHECK(f.wait(*failing).state == task_state::failed);
  auto again = f.orch.retry(*failing);
  REQUIRE(again.ok());
  CHECK(f.wait(*again).state == task_state::failed);
  CHECK(f.wait(*again).attempt == 1);

  CHECK(f.orch.retry(*copy).error().code() == aise::errc::illegal_transition);  // succeeded
  CHECK(f.orch.retry("no-such-task").error().code() == aise::errc::not_found);
}

TEST_CASE("orchestrator: routing picks the least-loaded capable agent within its limit") {
  fixture f;
  auto w1 = f.spawn(2, "w1");
  auto w2 = f.spawn(2, "w2");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(f.orch.submit(spec("hold")).value());
  REQUIRE(f.parked.wait_count(4));
  auto ctxs = f.parked.take_all();
  REQUIRE(ctxs.size() == 4);  // 2 agents × concurrency 2; the fifth waits
  int on_w1 = 0;
  for (auto& c : ctxs) on_w1 += c.task().agent == "w1" ? 1 : 0;
  CHECK(on_w1 == 2);
  auto fifth = f.orch.get(ids[4]);
  CHECK(fifth->state == task_state::queued);
  REQUIRE(ctxs[0].succeed().ok());
  REQUIRE(f.parked.wait_count(1));
  auto info = f.orch.agent_info(ctxs[0].task().agent);
  CHECK(info->running_tasks == 2);
  for (auto& c : ctxs) (void)c.succeed();
  for (auto& c : f.parked.take_all()) REQUIRE(c.succeed().ok());
  for (auto& id : ids) CHECK(f.wait(id).state == task_state::succeeded);
}

TEST_CASE("orchestrator: retries back off exponentially on the manual clock") {
  auto clock = std::make_shared<aise::manual_clock>();
  fixture f(clock);
  f.spawn();
  auto s = spec("hold");
  s.max_attempts = 3;
  auto id = f.orch.submit(s).value();
  // Attempt 1 fails → retrying, due after 200 ms (initial backoff, no jitter).
  REQUIRE(f.parked.wait_count(1));
  REQUIRE(f.parked.take(id).fail(aise::error(aise::errc::handler_failed, "flaky")).ok());
  REQUIRE(f.events.wait_for("task.retrying", id));
  CHECK(f.orch.get(id)->state == task_state::retrying);
  clock->advance(199ms);
  CHECK_FALSE(f.parked.wait_count(1, 50ms));
  clock->advance(1ms);
  REQUIRE(f.parked.wait_count(1));
  // Attempt 2 fails → 400 ms.
  REQUIRE(f.parked.take(id).fail(aise::error(aise::errc::handler_failed, "flaky")).ok());
  REQUIRE(f.events.wait_count("task.retrying", id, 2));
  clock->advance(399ms);
  CHECK_FALSE(f.parked.wait_count(1, 50ms));
  clock->advance(1ms);
  REQUIRE(f.parked.wait_count(1));
  auto ctx = f.parked.take(id);
  CHECK(ctx.task().attempt == 3);
  REQUIRE(ctx.succeed(nlohmann::json("third time")).ok());
  auto t = f.wait(id);
  CHECK(t.state == task_state::succeeded);
  auto attempts = f.orch.store().list_attempts(id).value();
  REQUIRE(attempts.size() == 3);
  CHECK(attempts[0].outcome == task_state::failed);
  CHECK(attempts[1].outcome == task_state::failed);
  CHECK(attempts[2].outcome == task_state::succeeded);
}

TEST_CASE(
    "orchestrator: exhausted retries fail the task and a throwing handler fails only the attempt") {
  fixture f;
  auto agent = f.spawn();
  auto s = spec("throw");
  s.max_attempts = 2;
  auto id = f.orch.submit(s).value();
  // The backoff runs on the real clock here (200 ms); wait for the outcome.
  auto t = f.wait(id);
  CHECK(t.state == task_state::failed);
  CHECK(t.attempt == 2);
  REQUIRE(t.error.has_value());
  CHECK(t.error->code() == aise::errc::handler_failed);
  CHECK(t.error->message().find("handler exploded") != std::string::npos);
  CHECK(f.orch.agent_info(agent)->status == "running");
  CHECK(f.wait(f.orch.submit(spec("add", {{"n", 2}})).value()).state == task_state::succeeded);
}

TEST_CASE("orchestrator: a timed-out attempt is cancelled and retried") {
  auto clock = std::make_shared<aise::manual_clock>();
  fixture f(clock);
  f.spawn();
  auto s = spec("hold");
  s.timeout = 1s;
  s.max_attempts = 2;
  auto id = f.orch.submit(s).value();
  REQUIRE(f.parked.wait_count(1));
  auto first = f.parked.take(id);
  notifier sig;
  bool saw_cancel = false;
  first.cancellation().on_cancel([&] { sig.update([&] { saw_cancel = true; }); });
  clock->advance(1s);
  REQUIRE(f.events.wait_for("task.retrying", id));
  CHECK(first.cancelled());
  // The flag is set with the change; callbacks run just after the lock is released.
  CHECK(sig.wait([&] { return saw_cancel; }));
  // The late completion of the timed-out attempt changes nothing.
  auto late = first.succeed(nlohmann::json("too late"));
  REQUIRE_FALSE(late.ok());
  clock->advance(200ms);
  REQUIRE(f.parked.wait_count(1));
  auto second = f.parked.take(id);
  CHECK(second.task().attempt == 2);
  REQUIRE(second.succeed(nlohmann::json("in time")).ok());
  auto t = f.wait(id);
  CHECK(t.result == nlohmann::json("in time"));
  auto attempts = f.orch.store().list_attempts(id).value();
  REQUIRE(attempts.size() == 2);
  CHECK(attempts[0].error->code() == aise::errc::timeout);
}

TEST_CASE("orchestrator: cancellation of queued and running tasks") {
  fixture f;
  f.spawn(1);
  auto running = f.orch.submit(spec("hold")).value();
  auto queued = f.orch.submit(spec("hold")).value();
  REQUIRE(f.parked.wait_count(1));
  auto ctx = f.parked.take(running);
  CHECK(f.orch.get(queued)->state == task_state::queued);

  REQUIRE(f.orch.cancel(queued, "not needed").ok());
  auto q = f.wait(queued);
  CHECK(q.state == task_state::cancelled);
  CHECK(q.error->message() == "not needed");

  REQUIRE(f.orch.cancel(running).ok());
  CHECK(ctx.cancelled());
  CHECK(f.wait(running).state == task_state::cancelled);
  CHECK(ctx.succeed().error().code() == aise::errc::cancelled);
  CHECK(f.orch.cancel(running).error().code() == aise::errc::illegal_transition);
  CHECK(f.orch.cancel("ghost").error().code() == aise::errc::not_found);
  // The slot is free again.
  CHECK(f.wait(f.orch.submit(spec("add")).value()).state == task_state::succeeded);
}

TEST_CASE("orchestrator: approval steps wait for approve or reject") {
  fixture f;
  f.spawn();
  auto s = spec("add", {{"n", 3}});
  s.requires_approval = true;
  auto yes = f.orch.submit(s).value();
  auto no = f.orch.submit(s).value();
  REQUIRE(f.events.wait_for("task.awaiting_approval", yes));
  REQUIRE(f.events.wait_for("task.awaiting_approval", no));
  CHECK(f.orch.get(yes)->state == task_state::awaiting_approval);
  REQUIRE(f.orch.approve(yes, "alice").ok());
  CHECK(f.wait(yes).state == task_state::succeeded);
  REQUIRE(f.orch.reject(no, "bob", "too risky").ok());
  auto r = f.wait(no);
  CHECK(r.state == task_state::cancelled);
  CHECK(r.error->code() == aise::errc::rejected);
  CHECK(r.error->message() == "rejected by bob: too risky");
  CHECK(f.orch.approve(yes).error().code() == aise::errc::illegal_transition);
}

namespace {
// Sends every task to the agent named "b" while it is free; counts outcomes.
class prefer_b : public aise::router {
 public:
  void prepare(const aise::task_spec& t) override {
    std::lock_guard lock(mutex);
    prepared.push_back(t.id);
  }
  std::optional<std::size_t> pick(const aise::task&,
                                  const std::vector<aise::routing_candidate>& c) override {
    for (std::size_t i = 0; i < c.size(); ++i)
      if (c[i].name == "b") return i;
    return std::nullopt;
  }
  void observe(const aise::task&, const aise::routing_candidate& a, bool ok) override {
    std::lock_guard lock(mutex);
    outcomes.emplace_back(a.name, ok);
  }
  std::mutex mutex;
  std::vector<std::string> prepared;
  std::vector<std::pair<std::string, bool>> outcomes;
};
}  // namespace

TEST_CASE("orchestrator: a router chooses among the free capable agents and hears outcomes") {
  auto r = std::make_shared<prefer_b>();
  aise::runtime rt(quiet(nullptr));
  auto o = fixture::options(7);
  o.router = r;
  aise::orchestrator orch(rt, o);
  REQUIRE(orch.register_kind("worker", [] { return std::make_unique<worker>(); }));
  REQUIRE(orch.spawn({.kind = "worker", .name = "a", .concurrency = 4}));
  REQUIRE(orch.spawn({.kind = "worker", .name = "b", .concurrency = 4}));
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    // One at a time: "b" is always free, so the router's choice is visible.
    auto id = orch.submit(spec("add", {{"n", i}}));
    REQUIRE(id);
    auto done = orch.wait(*id, 10s);
    REQUIRE(done);
    CHECK(done->state == aise::task_state::succeeded);
    CHECK(done->agent == "b");  // least loaded would pick either
    ids.push_back(*id);
  }
  auto failing = orch.submit(spec("fail"));
  REQUIRE(failing);
  CHECK(orch.wait(*failing, 10s)->state == aise::task_state::failed);
  std::lock_guard lock(r->mutex);
  CHECK(r->prepared.size() == 7);
  CHECK(r->prepared.front() == ids.front());  // ids are assigned before prepare
  REQUIRE(r->outcomes.size() == 7);
  CHECK(r->outcomes.front() == std::pair<std::string, bool>{"b", true});
  CHECK(r->outcomes.back() == std::pair<std::string, bool>{"b", false});
}

TEST_CASE("orchestrator: a handler escalates to a human instead of failing") {
  fixture f;
  f.spawn();
  auto s = spec("escalate_once");
  s.max_attempts = 1;  // an escalation is not a failed attempt
  auto paused = f.orch.submit(s).value();
  auto refused = f.orch.submit(s).value();
  REQUIRE(f.events.wait_for("task.awaiting_approval", paused));
  REQUIRE(f.events.wait_for("task.awaiting_approval", refused));
  auto t = f.orch.get(paused);
  REQUIRE(t);
  CHECK(t->state == aise::task_state::awaiting_approval);
  REQUIRE(t->error);
  CHECK(t->error->code() == aise::errc::limit_exceeded);
  CHECK(t->error->message() == "token budget reached");
  bool flagged = false;
  for (const auto& e : f.events.all()) {
    if (e.type == "task.awaiting_approval" && e.subject == paused)
      flagged = e.data.value("escalated", false) &&
                e.data.at("reason").at("message") == "token budget reached";
  }
  CHECK(flagged);
  REQUIRE(f.orch.approve(paused, "alice"));
  auto done = f.wait(paused);
  CHECK(done.state == aise::task_state::succeeded);
  CHECK(done.result == nlohmann::json(2));  // the second attempt
  CHECK_FALSE(done.error);
  auto history = f.orch.store().list_attempts(paused);
  REQUIRE(history);
  REQUIRE(history->size() == 2);
  CHECK((*history)[0].outcome == aise::task_state::awaiting_approval);
  CHECK((*history)[1].outcome == aise::task_state::succeeded);
  REQUIRE(f.orch.reject(refused, "bob", "over budget"));
  CHECK(f.wait(refused).state == aise::task_state::cancelled);
}

namespace {
// Fans out `n` "add" subtasks and joins their results.
class planner : public aise::agent {
 public:
  planner() {
    on_task_async("plan", [](aise::task_context ctx) {
      std::vector<std::string> kids;
      for (int i = 1; i <= ctx.payload().at("n").get<int>(); ++i) {
        auto id = ctx.spawn([&] {
          aise::task_spec s;
          s.kind = "add";
          s.payload = {{"n", i}};
          return s;
        }());
        if (!id) {
          (void)ctx.fail(id.error());
          return;
        }
        kids.push_back(*id);
      }
      ctx.when_all(kids, [](aise::task_context& c, std::vector<aise::task> done) {
        int sum = 0;
        for (const auto& t : done) sum += t.result->get<int>();
        (void)c.succeed(sum);
      });
    });
    // A subtask that cannot be submitted (its dependency is unknown): the
    // fan-in reports how it ended.
    on_task_async("plan_unknown_dependency", [](aise::task_context ctx) {
      aise::task_spec s;
      s.kind = "add";
      s.depends_on = {"no-such-task"};
      auto id = ctx.spawn(s);
      if (!id) {
        (void)ctx.fail(id.error());
        return;
      }
      ctx.when_all({*id}, [](aise::task_context& c, std::vector<aise::task> done) {
        const auto& kid = done.front();
        (void)c.succeed({{"state", aise::to_string(kid.state)},
                         {"code", kid.error ? aise::to_string(kid.error->code()) : "none"}});
      });
    });
  }
};
}  // namespace

TEST_CASE("orchestrator: fan-out subtasks and fan-in on their results") {
  fixture f;
  f.spawn(2);
  REQUIRE(f.orch.register_kind("planner", [] { return std::make_unique<planner>(); }).ok());
  REQUIRE(f.orch.spawn({.kind = "planner"}).ok());
  auto id = f.orch.submit(spec("plan", {{"n", 5}})).value();
  auto t = f.wait(id);
  CHECK(t.state == task_state::succeeded);
  CHECK(t.result == nlohmann::json(15));
  auto kids = f.orch.store().list_tasks({.parent = id}).value();
  CHECK(kids.items.size() == 5);
}

TEST_CASE("orchestrator: a dropped context fails the attempt") {
  fixture f;
  f.spawn();
  auto t = f.wait(f.orch.submit(spec("drop")).value());
  CHECK(t.state == task_state::failed);
  CHECK(t.error->message().find("dropped") != std::string::npos);
}

TEST_CASE("orchestrator: a deadline fails the task without retry") {
  auto clock = std::make_shared<aise::manual_clock>();
  fixture f(clock);
  f.spawn();
  auto s = spec("hold");
  s.max_attempts = 5;
  s.deadline = clock->now() + 10s;
  auto id = f.orch.submit(s).value();
  REQUIRE(f.parked.wait_count(1));
  auto ctx = f.parked.take(id);
  clock->advance(10s);
  auto t = f.wait(id);
  CHECK(t.state == task_state::failed);
  CHECK(t.error->code() == aise::errc::timeout);
  CHECK(ctx.cancelled());
}

namespace {
// Counts tasks in its state; crashes (fails the agent) on "crash" messages.
class stateful : public aise::agent {
 public:
  stateful() {
    on_task("count",
            [this](aise::task_context&) -> aise::result<nlohmann::json> { return ++count_; });
    on("crash", [](const aise::message&) { throw std::runtime_error("segfault, pretend"); });
  }
  [[nodiscard]] nlohmann::json snapshot() const override { return {{"count", count_}}; }
  void restore(const nlohmann::json& s) override { count_ = s.at("count").get<int>(); }

 private:
  int count_ = 0;
};
}  // namespace

TEST_CASE("orchestrator: a failing agent restarts with backoff from its last snapshot") {
  auto clock = std::make_shared<aise::manual_clock>();
  fixture f(clock);
  REQUIRE(f.orch.register_kind("stateful", [] { return std::make_unique<stateful>(); }).ok());
  auto name = f.orch.spawn({.kind = "stateful", .name = "s"}).value();
  REQUIRE(f.events.wait_for("agent.started", "s"));
  for (int i = 1; i <= 3; ++i) {
    CHECK(f.wait(f.orch.submit(spec("count")).value()).result == nlohmann::json(i));
  }
  REQUIRE(f.rt.send(name, "crash").ok());
  REQUIRE(f.events.wait_for("agent.restarting", "s"));
  CHECK(f.orch.agent_info("s")->status == "restarting");
  // A task submitted while it is down waits, then runs on the restored agent.
  auto id = f.orch.submit(spec("count")).value();
  clock->advance(100ms);  // restart_initial_backoff
  REQUIRE(f.events.wait_count("agent.started", "s", 2));
  CHECK(f.wait(id).result == nlohmann::json(4));
  CHECK(f.orch.agent_info("s")->restarts == 1);
}

TEST_CASE("orchestrator: an agent failing too often in the window stays down") {
  auto clock = std::make_shared<aise::manual_clock>();
  aise::runtime rt(quiet(clock));
  aise::orchestrator_options o;
  o.max_restarts = 2;
  o.threading = test_threading();
  aise::orchestrator orch(rt, o);
  event_recorder events(orch);
  REQUIRE(orch.register_kind("stateful", [] { return std::make_unique<stateful>(); }).ok());
  REQUIRE(orch.spawn({.kind = "stateful", .name = "s"}).ok());
  for (std::size_t i = 1; i <= 3; ++i) {
    REQUIRE(events.wait_count("agent.started", "s", i));
    REQUIRE(rt.send("s", "crash").ok());
    REQUIRE(events.wait_count("agent.failed", "s", i));
    clock->advance(10s);  // past any backoff, well inside the 60 s window
  }
  REQUIRE(events.wait_for("agent.gave_up", "s"));
  CHECK(orch.agent_info("s")->status == "failed");
  CHECK_FALSE(rt.has_agent("s"));
}

TEST_CASE("orchestrator: stopping an agent retries its running task elsewhere") {
  fixture f;
  auto first = f.spawn(1, "first");
  auto s = spec("hold");
  s.max_attempts = 2;
  auto id = f.orch.submit(s).value();
  REQUIRE(f.parked.wait_count(1));
  auto lost = f.parked.take(id);
  CHECK(lost.task().agent == "first");
  f.spawn(1, "second");
  REQUIRE(f.orch.stop_agent(first).ok());
  REQUIRE(f.events.wait_for("agent.stopped", first));
  CHECK(lost.cancelled());
  REQUIRE(f.parked.wait_count(1));  // after the retry backoff (200 ms, real clock)
  auto again = f.parked.take(id);
  CHECK(again.task().agent == "second");
  CHECK(again.task().attempt == 2);
  REQUIRE(again.succeed().ok());
  CHECK(f.wait(id).state == task_state::succeeded);
  CHECK(f.orch.agent_info(first)->status == "stopped");
}

TEST_CASE("orchestrator: recover schedules what a stopped process left unfinished") {
  // What a killed process leaves in a store: tasks in every unfinished
  // state (written as the orchestrator writes them), and numbered events.
  auto store = aise::make_memory_store();
  const auto now = std::chrono::system_clock::now();
  auto task = [&](std::string id, task_state state, int attempt, int max_attempts,
                  std::vector<std::string> deps = {}) {
    aise::task t;
    t.id = std::move(id);
    t.kind = "add";
    t.payload = {{"n", 1}};
    t.state = state;
    t.attempt = attempt;
    t.max_attempts = max_attempts;
    t.depends_on = std::move(deps);
    t.agent = attempt > 0 ? "gone-worker" : "";
    t.created_at = now - 10s;
    t.updated_at = now - 5s;
    t.not_before = state == task_state::retrying ? now - 1s : aise::time_point{};
    return t;
  };
  auto done = task("done", task_state::succeeded, 1, 1);
  done.result = 41;
  auto broken = task("broken", task_state::failed, 1, 1);
  auto needs_approval = task("approve-me", task_state::awaiting_approval, 0, 1);
  needs_approval.requires_approval = true;
  REQUIRE(store
              ->insert_tasks({done, broken, task("queued", task_state::queued, 0, 1),
                              task("running-2", task_state::running, 1, 2),
                              task("running-last", task_state::running, 1, 1),
                              task("after-queued", task_state::pending, 0, 1, {"queued"}),
                              task("after-done", task_state::pending, 0, 1, {"done"}),
                              task("after-broken", task_state::pending, 0, 1, {"broken"}),
                              task("retrying", task_state::retrying, 1, 3), needs_approval},
                             {aise::event_draft{"default", "task.pending", "queued", now, nullptr}})
              .ok());
  const std::uint64_t before = *store->last_sequence("default");

  aise::runtime rt(quiet());
  aise::orchestrator_options options;
  options.store = store;
  options.seed = 7;
  options.retry_jitter = 0.0;
  options.retry_initial_backoff = 1ms;
  options.threading = test_threading();
  aise::orchestrator orch(rt, options);
  event_recorder events(orch);
  REQUIRE(orch.register_kind("worker", [] { return std::make_unique<worker>(); }).ok());
  // The dead process's agent record says running: recover spawns it again.
  aise::agent_record rec;
  rec.id = "gone-worker";
  rec.kind = "worker";
  rec.status = "running";
  REQUIRE(store->put_agent(rec).ok());

  auto report = orch.recover();
  REQUIRE(report.ok());
  CHECK(report->tasks == 8);
  CHECK(report->lost_attempts == 2);
  CHECK(report->agents == 1);
  CHECK(orch.recover().error().code() == aise::errc::already_exists);

  auto wait = [&](const char* id) {
    auto t = orch.wait(id, 10s);
    REQUIRE_MESSAGE(t.ok(), id);
    return *t;
  };
  CHECK(wait("queued").state == task_state::succeeded);
  CHECK(*wait("after-queued").result == 2);  // its payload 1 + the dependency's 1
  CHECK(*wait("after-done").result == 42);   // the stored result of a finished dependency
  CHECK(wait("after-broken").state == task_state::cancelled);
  CHECK(wait("retrying").state == task_state::succeeded);
  // A lost attempt counts: 1 of 2 lost → the second runs; 1 of 1 lost → failed.
  auto second = wait("running-2");
  CHECK(second.state == task_state::succeeded);
  auto attempts = *store->list_attempts("running-2");
  CHECK(second.attempt == 2);
  REQUIRE(attempts.size() == 2);
  CHECK(attempts[0].outcome == task_state::failed);
  REQUIRE(attempts[0].error.has_value());
  CHECK(attempts[0].error->code() == aise::errc::unavailable);
  CHECK(attempts[0].error->message().find("lost") != std::string::npos);
  CHECK(attempts[1].outcome == task_state::succeeded);
  auto last = wait("running-last");
  CHECK(last.state == task_state::failed);
  CHECK(last.attempt == 1);
  // Approval steps keep waiting.
  CHECK(orch.get("approve-me")->state == task_state::awaiting_approval);
  REQUIRE(orch.approve("approve-me", "tester").ok());
  CHECK(wait("approve-me").state == task_state::succeeded);

  // The event log went on from where it was, without a gap.
  auto log = *store->read_events("default", 0, 100000);
  REQUIRE(log.size() > before);
  for (std::size_t i = 0; i < log.size(); ++i) CHECK(log[i].sequence == i + 1);
}

namespace {

// An in-memory store that says it blocks (as a SQL store does) and counts
// the calls that arrive on an executor thread of `rt`.
class blocking_store final : public aise::store {
 public:
  explicit blocking_store(const aise::runtime& rt) : rt_(rt) {}
  std::atomic<int> on_executor{0};
  std::atomic<int> calls{0};
  // Failure injection for update_tasks (group commit): the next N batches
  // are refused as `unavailable` (the database is away) or as `conflict`
  // (as if another writer had changed a task) without being written.
  std::atomic<int> unavailable_batches{0};
  std::atomic<int> conflict_batches{0};
  std::atomic<int> refused_batches{0};
  // Writes of task changes: batches, changes in them, single updates, and
  // the largest batch; attempts started (task.running) while batches were
  // being refused.
  std::atomic<int> batches{0};
  std::atomic<int> batched_changes{0};
  std::atomic<int> single_updates{0};
  std::atomic<std::size_t> largest_batch{0};
  std::atomic<bool> refusing{false};
  std::atomic<int> started_while_refusing{0};
  // While held, update_tasks waits (as a slow database would) until released.
  void hold_batches() {
    std::lock_guard lock(hold_mutex_);
    held_ = true;
  }
  void release_batches() {
    std::lock_guard lock(hold_mutex_);
    held_ = false;
    hold_cv_.notify_all();
  }
  // Waits until at least `n` batches were refused as unavailable.
  bool wait_for_refusals(int n, std::chrono::milliseconds limit) {
    std::unique_lock lock(hold_mutex_);
    return hold_cv_.wait_for(lock, limit, [&] { return refused_batches.load() >= n; });
  }
  // Waits until `done()` holds; checked again after every batch written.
  bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
    std::unique_lock lock(hold_mutex_);
    return hold_cv_.wait_for(lock, limit, done);
  }
  bool wait_for_held_batch(std::chrono::milliseconds limit) {
    std::unique_lock lock(hold_mutex_);
    return hold_cv_.wait_for(lock, limit, [&] { return waiting_ > 0; });
  }

  [[nodiscard]] std::string_view backend() const noexcept override { return "blocking"; }
  [[nodiscard]] bool blocking() const noexcept override { return true; }
  aise::result<aise::project> create_project(aise::project p) override {
    return note(), inner_->create_project(std::move(p));
  }
  aise::result<aise::project> get_project(std::string_view id) override {
    return note(), inner_->get_project(id);
  }
  aise::result<aise::page<aise::project>> list_projects(std::string_view a,
                                                        std::size_t n) override {
    return note(), inner_->list_projects(a, n);
  }
  aise::result<aise::project> update_project(aise::project p) override {
    return note(), inner_->update_project(std::move(p));
  }
  aise::result<void> put_agent(aise::agent_record a) override {
    return note(), inner_->put_agent(std::move(a));
  }
  aise::result<aise::agent_record> get_agent(std::string_view id) override {
    return note(), inner_->get_agent(id);
  }
  aise::result<std::vector<aise::agent_record>> list_agents(std::string_view p) override {
    return note(), inner_->list_agents(p);
  }
  aise::result<aise::agent_snapshot> save_snapshot(aise::agent_snapshot s) override {
    return note(), inner_->save_snapshot(std::move(s));
  }
  aise::result<aise::agent_snapshot> load_snapshot(std::string_view id) override {
    return note(), inner_->load_snapshot(id);
  }
  using aise::store::insert_tasks;
  using aise::store::update_task;
  std::atomic<bool> inserts_wait_for_batches{false};
  aise::result<std::vector<std::uint64_t>> insert_tasks(
      const std::vector<aise::task>& t, std::vector<aise::event_draft>&& e) override {
    if (inserts_wait_for_batches.load()) {
      std::unique_lock lock(hold_mutex_);
      ++inserts_waiting;
      hold_cv_.wait(lock, [&] { return !held_ && writing_ == 0; });
    }
    return note(), inner_->insert_tasks(t, std::move(e));
  }
  aise::result<std::uint64_t> update_task(aise::task_update&& u) override {
    ++single_updates;
    return note(), inner_->update_task(std::move(u));
  }
  aise::result<std::vector<std::uint64_t>> update_tasks(
      const std::vector<aise::task_update>& b) override {
    note();
    struct writing_guard {
      blocking_store* s;
      ~writing_guard() {
        std::lock_guard lock(s->hold_mutex_);
        --s->writing_;
        s->hold_cv_.notify_all();
      }
    };
    {
      std::lock_guard lock(hold_mutex_);
      ++writing_;
    }
    writing_guard guard{this};
    {
      std::unique_lock lock(hold_mutex_);
      ++waiting_;
      hold_cv_.notify_all();
      hold_cv_.wait(lock, [&] { return !held_; });
      --waiting_;
    }
    {
      std::lock_guard lock(seen_mutex_);
      for (const auto& u : b) {
        if (u.state != task_state::running) continue;
        const bool fresh = seen_running_.insert(u.id + "#" + std::to_string(u.attempt)).second;
        if (fresh && refusing.load()) ++started_while_refusing;
      }
    }
    if (take(unavailable_batches)) {
      {
        std::lock_guard lock(hold_mutex_);
        ++refused_batches;
        hold_cv_.notify_all();
      }
      refusing.store(true);
      return aise::error(aise::errc::unavailable, "injected: the database is away");
    }
    if (take(conflict_batches)) {
      ++refused_batches;
      return aise::error(aise::errc::conflict, "injected: a task changed elsewhere");
    }
    refusing.store(false);
    ++batches;
    batched_changes += static_cast<int>(b.size());
    std::size_t seen = largest_batch.load();
    while (b.size() > seen && !largest_batch.compare_exchange_weak(seen, b.size())) {
    }
    auto written = inner_->update_tasks(b);
    {
      std::lock_guard lock(hold_mutex_);
      hold_cv_.notify_all();  // for wait_until
    }
    return written;
  }
  aise::result<aise::task> get_task(std::string_view id) override {
    return note(), inner_->get_task(id);
  }
  aise::result<aise::page<aise::task>> list_tasks(const aise::task_filter& f) override {
    return note(), inner_->list_tasks(f);
  }
  aise::result<std::vector<aise::task_attempt>> list_attempts(std::string_view id) override {
    return note(), inner_->list_attempts(id);
  }
  aise::result<aise::event> append_event(aise::event_draft e) override {
    return note(), inner_->append_event(std::move(e));
  }
  aise::result<std::vector<aise::event>> read_events(std::string_view p, std::uint64_t a,
                                                     std::size_t n) override {
    return note(), inner_->read_events(p, a, n);
  }
  aise::result<std::uint64_t> last_sequence(std::string_view p) override {
    return note(), inner_->last_sequence(p);
  }
  aise::result<aise::compaction_stats> compact(const aise::retention_policy& r) override {
    return note(), inner_->compact(r);
  }
  aise::result<aise::artifact_meta> put_artifact(aise::artifact_meta a) override {
    return note(), inner_->put_artifact(std::move(a));
  }
  aise::result<aise::artifact_meta> get_artifact(std::string_view id) override {
    return note(), inner_->get_artifact(id);
  }
  aise::result<std::vector<aise::artifact_meta>> list_artifacts(std::string_view p) override {
    return note(), inner_->list_artifacts(p);
  }
  aise::result<std::vector<aise::artifact_meta>> artifact_versions(std::string_view p,
                                                                   std::string_view n) override {
    return note(), inner_->artifact_versions(p, n);
  }
  aise::result<bool> artifact_digest_in_use(std::string_view h) override {
    return note(), inner_->artifact_digest_in_use(h);
  }

 private:
  void note() {
    ++calls;
    if (rt_.on_executor()) ++on_executor;
  }
  static bool take(std::atomic<int>& n) {
    int left = n.load();
    while (left > 0 && !n.compare_exchange_weak(left, left - 1)) {
    }
    return left > 0;
  }
  const aise::runtime& rt_;
  std::shared_ptr<aise::store> inner_ = aise::make_memory_store();
  std::mutex seen_mutex_;
  std::set<std::string> seen_running_;
  std::mutex hold_mutex_;
  std::condition_variable hold_cv_;
  bool held_ = false;
  int waiting_ = 0;
  int writing_ = 0;

 public:
  std::atomic<int> inserts_waiting{0};
};

}  // namespace

TEST_CASE("orchestrator: with a blocking store, executor threads never wait for it") {
  aise::runtime rt(quiet());
  auto store = std::make_shared<blocking_store>(rt);
  aise::orchestrator_options options;
  options.store = store;  // blocking(): the orchestrator works on a thread of its own
  options.retry_initial_backoff = 1ms;
  options.retry_jitter = 0.0;
  aise::orchestrator orch(rt, options);
  event_recorder events(orch);
  parked_tasks parked;
  REQUIRE(
      orch.register_kind("worker", [&parked] { return std::make_unique<worker>(&parked); }).ok());
  REQUIRE(orch.register_kind("stateful", [] { return std::make_unique<stateful>(); }).ok());
  REQUIRE(orch.register_kind("planner", [] { return std::make_unique<planner>(); }).ok());
  REQUIRE(orch.spawn({.kind = "worker", .name = "w", .concurrency = 2}).ok());
  REQUIRE(orch.spawn({.kind = "stateful", .name = "s"}).ok());
  REQUIRE(orch.spawn({.kind = "planner", .name = "p"}).ok());
  REQUIRE(events.wait_for("agent.started", "w"));
  REQUIRE(events.wait_for("agent.started", "s"));

  // A DAG, a retried failure, a snapshotting agent that crashes and comes back.
  auto a = spec("add", {{"n", 1}});
  a.id = "a";
  auto b = spec("add", {{"n", 2}});
  b.id = "b";
  b.depends_on = {"a"};
  auto flaky = spec("fail");
  flaky.id = "flaky";
  flaky.max_attempts = 3;
  REQUIRE(orch.submit_all({a, b, flaky}).ok());
  for (int i = 1; i <= 3; ++i) {
    CHECK(orch.wait(orch.submit(spec("count")).value(), 10s)->result == nlohmann::json(i));
  }
  REQUIRE(rt.send("s", "crash").ok());
  REQUIRE(events.wait_count("agent.started", "s", 2));
  CHECK(orch.wait(orch.submit(spec("count")).value(), 10s)->result == nlohmann::json(4));
  CHECK(*orch.wait("b", 10s)->result == 3);  // its n (2) + a's result (1)
  auto failed = orch.wait("flaky", 10s);
  CHECK(failed->state == task_state::failed);
  CHECK(failed->attempt == 3);
  // Fan-out from a handler: the subtasks reach the store from the
  // orchestrator's thread, not from the handler's executor.
  auto plan = orch.wait(orch.submit(spec("plan", {{"n", 4}})).value(), 10s);
  REQUIRE(plan.ok());
  CHECK(plan->result == nlohmann::json(10));
  auto refused = orch.wait(orch.submit(spec("plan_unknown_dependency")).value(), 10s);
  REQUIRE(refused.ok());
  CHECK(refused->result == nlohmann::json{{"state", "failed"}, {"code", "not_found"}});

  CHECK(store->calls.load() > 20);
  CHECK(store->on_executor.load() == 0);
}

namespace {
// An orchestrator on a blocking_store (so on its own thread, with group
// commit) and a "worker" kind whose "hold" tasks park in `parked`.
struct group_commit_fixture {
  aise::runtime rt{quiet()};
  std::shared_ptr<blocking_store> store = std::make_shared<blocking_store>(rt);
  aise::orchestrator orch{rt, [this] {
                            aise::orchestrator_options o;
                            o.store = store;
                            return o;
                          }()};
  parked_tasks parked;
  group_commit_fixture() {
    REQUIRE(
        orch.register_kind("worker", [this] { return std::make_unique<worker>(&parked); }).ok());
  }
  // Spawns agent "w" running up to `concurrency` tasks at once and submits
  // `n` "hold" tasks; returns their ids once the first of them are parked.
  std::vector<std::string> hold(std::size_t concurrency, std::size_t n) {
    REQUIRE(orch.spawn({.kind = "worker", .name = "w", .concurrency = concurrency}).ok());
    std::vector<std::string> ids;
    for (std::size_t i = 0; i < n; ++i) ids.push_back(orch.submit(spec("hold")).value());
    REQUIRE(parked.wait_count(std::min(n, concurrency)));
    return ids;
  }
  // The event log: numbered from 1 without a gap.
  void check_gapless() {
    auto log = store->read_events("default", 0, 100000).value();
    for (std::size_t i = 0; i < log.size(); ++i) REQUIRE(log[i].sequence == i + 1);
  }
};
}  // namespace

TEST_CASE("orchestrator: group commit writes the changes of a turn in one batch") {
  group_commit_fixture f;
  auto& orch = f.orch;
  auto& store = f.store;
  event_recorder events(orch);
  for (int i = 0; i < 4; ++i) REQUIRE(orch.spawn({.kind = "worker"}).ok());
  std::vector<aise::task_spec> specs;
  for (int i = 0; i < 200; ++i) specs.push_back(spec("add", {{"n", i}}));
  auto ids = orch.submit_all(specs);
  REQUIRE(ids.ok());
  for (std::size_t i = 0; i < ids->size(); ++i) {
    auto t = orch.wait((*ids)[i], 10s);
    REQUIRE(t.ok());
    CHECK(t->state == task_state::succeeded);
    CHECK(t->result == nlohmann::json(static_cast<int>(i)));
  }
  // The tasks were stored queued (waiting for nothing); every later change
  // went through update_tasks: 200 × (running, succeeded), in fewer
  // batches than changes; submit_all's dispatch to the 4 agents is one.
  CHECK(store->single_updates.load() == 0);
  CHECK(store->batched_changes.load() == 200 * 2);
  CHECK(store->largest_batch.load() >= 4);
  CHECK(store->batches.load() < store->batched_changes.load());
  for (const auto& id : *ids) {
    REQUIRE(events.wait_count("task.succeeded", id, 1));
    CHECK(events.types_of(id) == std::vector<std::string>{"task.pending", "task.queued",
                                                          "task.running", "task.succeeded"});
  }
  // Announced after the write, in the store's order, without a gap.
  f.check_gapless();
  REQUIRE(events.wait_count("task.succeeded", "", 200));
}

TEST_CASE("orchestrator: group commit keeps changes the store refuses and writes them later") {
  group_commit_fixture f;
  auto& orch = f.orch;
  auto& store = f.store;
  auto& parked = f.parked;
  REQUIRE(orch.spawn({.kind = "worker", .name = "w", .concurrency = 1}).ok());

  SUBCASE("the database is away for a while") {
    // One slot, three tasks. The first completes while the store refuses
    // every batch; the second starts in that same turn (before anything
    // was refused) and completes too. The third must wait: nothing new
    // starts while the store is behind. Once it is back, all three finish.
    auto first = orch.submit(spec("hold")).value();
    auto second = orch.submit(spec("hold")).value();
    auto third = orch.submit(spec("hold")).value();
    REQUIRE(parked.wait_count(1));
    store->unavailable_batches.store(1000);
    REQUIRE(parked.take(first).succeed(nlohmann::json("held")).ok());
    REQUIRE(parked.wait_count(1));
    // Once the store has refused a batch (written on the orchestrator's
    // thread, which records completions too), the second completes.
    REQUIRE(store->wait_for_refusals(1, 10s));
    REQUIRE(parked.take(second).succeed(nlohmann::json("held too")).ok());
    const int refused = store->refused_batches.load();
    REQUIRE(store->wait_for_refusals(refused + 2, 10s));          // retried meanwhile
    CHECK(orch.get(second)->state == task_state::succeeded);      // the orchestrator's view
    CHECK(store->get_task(second)->state == task_state::queued);  // none of it written yet
    CHECK(orch.get(third)->state == task_state::queued);
    store->unavailable_batches.store(0);
    REQUIRE(parked.wait_count(1));
    REQUIRE(parked.take(third).succeed(nlohmann::json(7)).ok());
    for (const auto& id : {first, second, third}) {
      auto t = orch.wait(id, 10s);
      REQUIRE(t.ok());
      CHECK(t->state == task_state::succeeded);
      CHECK(store->get_task(id)->state == task_state::succeeded);
    }
    CHECK(store->started_while_refusing.load() == 0);
    CHECK(store->get_task(third)->result == nlohmann::json(7));
  }
  SUBCASE("a batch refused as a whole is written change by change") {
    store->conflict_batches.store(1);
    auto id = orch.submit(spec("add", {{"n", 3}})).value();
    auto t = orch.wait(id, 10s);
    REQUIRE(t.ok());
    CHECK(t->state == task_state::succeeded);
    CHECK(store->refused_batches.load() == 1);
    CHECK(store->single_updates.load() >= 1);
    CHECK(store->get_task(id)->state == task_state::succeeded);
  }
  f.check_gapless();
}

TEST_CASE("orchestrator: while a batch is written, calls from other threads do not wait for it") {
  group_commit_fixture f;
  auto& orch = f.orch;
  auto& store = f.store;
  auto& parked = f.parked;
  const auto ids = f.hold(2, 2);
  const std::string& held = ids[0];
  const std::string& other = ids[1];

  store->hold_batches();
  REQUIRE(parked.take(held).succeed(nlohmann::json("done")).ok());
  REQUIRE(store->wait_for_held_batch(10s));  // the completion's batch is being written
  // Reads, a completion and a fan-in registration go on meanwhile.
  auto calls = std::async(std::launch::async, [&] {
    CHECK(orch.get(held)->state == task_state::succeeded);  // the orchestrator's view
    CHECK(orch.get(other)->state == task_state::running);
    CHECK(parked.take(other).succeed(nlohmann::json("also")).ok());
    CHECK(orch.when_done(held, [](const aise::task&) {}).ok());
  });
  const bool in_time = calls.wait_for(10s) == std::future_status::ready;
  if (!in_time) store->release_batches();  // no hang when this fails
  REQUIRE(in_time);
  CHECK(store->get_task(held)->state == task_state::running);  // not written yet
  store->release_batches();
  CHECK(orch.wait(held, 10s)->state == task_state::succeeded);
  CHECK(orch.wait(other, 10s)->state == task_state::succeeded);
  CHECK(store->get_task(held)->state == task_state::succeeded);
  CHECK(store->get_task(other)->result == nlohmann::json("also"));
}

// ---- races around a batch being written (found in review) ------------------

TEST_CASE("orchestrator: events are announced in sequence order when a submit overlaps a batch") {
  group_commit_fixture f;
  auto& orch = f.orch;
  auto& store = f.store;
  auto& parked = f.parked;
  event_recorder events(orch);
  const auto a = f.hold(2, 1).front();
  store->inserts_wait_for_batches.store(true);
  store->hold_batches();
  REQUIRE(parked.take(a).succeed(nlohmann::json(1)).ok());
  REQUIRE(store->wait_for_held_batch(10s));
  auto sub = std::async(std::launch::async, [&] { return orch.submit(spec("add")); });
  // The submit waits for the batch in flight (before its insert); give it
  // time to get there, then let the batch finish.
  std::this_thread::sleep_for(50ms);
  store->release_batches();
  auto id = sub.get();
  REQUIRE(id.ok());
  REQUIRE(orch.wait(*id, 10s).ok());
  REQUIRE(events.wait_for("task.succeeded", *id));
  REQUIRE(events.wait_for("task.succeeded", a));
  std::uint64_t last = 0;
  std::string seen;
  for (const auto& e : events.all()) {
    if (e.project != "default") continue;
    seen += std::to_string(e.sequence) + ":" + e.type + " ";
    CHECK_MESSAGE(e.sequence > last, seen);
    last = e.sequence;
  }
  MESSAGE(seen);
}

TEST_CASE("orchestrator: cancel while a batch is being written") {
  int unavailable = 0, ok = 0, illegal = 0, other = 0;
  for (int round = 0; round < 30; ++round) {
    group_commit_fixture f;
    auto& orch = f.orch;
    auto& store = f.store;
    auto& parked = f.parked;
    const auto ids = f.hold(2, 2);
    const std::string& x = ids[0];
    const std::string& y = ids[1];
    auto cx = parked.take(x);
    store->hold_batches();
    REQUIRE(parked.take(y).succeed(nlohmann::json(1)).ok());
    REQUIRE(store->wait_for_held_batch(10s));
    auto c = std::async(std::launch::async, [&] { return orch.cancel(x, "stop"); });
    std::this_thread::sleep_for(20ms);            // cancel now waits in flush_locked, lock released
    REQUIRE(cx.succeed(nlohmann::json(2)).ok());  // finish_completion(x) queued on the engine
    store->release_batches();
    auto r = c.get();
    if (r.ok())
      ++ok;
    else if (r.error().code() == aise::errc::unavailable)
      ++unavailable;
    else if (r.error().code() == aise::errc::illegal_transition)
      ++illegal;
    else
      ++other;
    auto t = orch.wait(x, 10s);
    REQUIRE(t.ok());
  }
  MESSAGE("cancel ok=" << ok << " unavailable(store refused)=" << unavailable
                       << " illegal=" << illegal << " other=" << other);
  CHECK(unavailable == 0);
}

TEST_CASE("orchestrator: a subtask queued when close() begins is not lost silently") {
  aise::runtime rt{quiet()};
  auto store = std::make_shared<blocking_store>(rt);
  parked_tasks parked;
  auto orch = std::make_unique<aise::orchestrator>(rt, [&] {
    aise::orchestrator_options o;
    o.store = store;
    return o;
  }());
  REQUIRE(orch->register_kind("worker", [&] { return std::make_unique<worker>(&parked); }).ok());
  REQUIRE(orch->spawn({.kind = "worker", .name = "w", .concurrency = 2}).ok());
  auto x = orch->submit(spec("hold")).value();
  auto y = orch->submit(spec("hold")).value();
  REQUIRE(parked.wait_count(2));
  auto cx = parked.take(x);
  store->hold_batches();
  REQUIRE(parked.take(y).succeed(nlohmann::json(1)).ok());
  REQUIRE(store->wait_for_held_batch(10s));
  auto sub = cx.spawn(spec("add"));  // queued; its drain waits behind the held batch
  REQUIRE(sub.ok());
  std::promise<aise::task_state> outcome;
  auto told = outcome.get_future();
  REQUIRE(
      orch->when_done(*sub, [&outcome](const aise::task& t) { outcome.set_value(t.state); }).ok());
  auto closer = std::async(std::launch::async, [&] { orch.reset(); });
  std::this_thread::sleep_for(100ms);  // close() has set closed_ and waits for the thread
  store->release_batches();
  closer.get();
  // Either it reached the store before the orchestrator closed, or it ended
  // as a failed record whose waiters were told; never silently pending.
  auto stored = store->get_task(*sub);
  if (!stored) CHECK(told.wait_for(10s) == std::future_status::ready);
}

TEST_CASE("orchestrator: writing change by change never overwrites another writer's change") {
  group_commit_fixture f;
  auto& orch = f.orch;
  auto& store = f.store;
  auto& parked = f.parked;
  const auto ids = f.hold(1, 2);
  const std::string& first = ids[0];
  const std::string& second = ids[1];
  store->unavailable_batches.store(1000);
  REQUIRE(parked.take(first).succeed(nlohmann::json(1)).ok());
  REQUIRE(parked.wait_count(1));
  REQUIRE(store->wait_for_refusals(1, 10s));
  REQUIRE(parked.take(second).succeed(nlohmann::json(2)).ok());
  const int refused = store->refused_batches.load();
  REQUIRE(store->wait_for_refusals(refused + 2, 10s));
  // Someone else cancels `second` in the store (one change).
  auto st = store->get_task(second);
  REQUIRE(st.ok());
  REQUIRE(st->state == task_state::queued);
  aise::task_update u;
  u.id = second;
  u.expected_version = st->version;
  u.state = task_state::cancelled;
  u.event = aise::event_draft{"default", "task.cancelled", second, {}, nullptr};
  REQUIRE(store->update_task(u).ok());
  store->unavailable_batches.store(0);
  REQUIRE(orch.wait(first, 10s).ok());
  REQUIRE(store->wait_until([&] { return store->get_task(first)->state == task_state::succeeded; },
                            10s));
  std::string types;
  auto log = store->read_events("default", 0, 1000);
  if (!log)
    types = "read failed: " + log.error().describe();
  else
    for (const auto& e : *log)
      if (e.subject == second) types += std::to_string(e.sequence) + ":" + e.type + " ";
  MESSAGE("stored events of second: " << types);
  CHECK(store->get_task(second)->state == task_state::cancelled);
}
