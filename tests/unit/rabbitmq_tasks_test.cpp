// aise::rabbitmq task queues on a real RabbitMQ: make_rabbitmq_dispatcher and
// make_rabbitmq_task_source (include/aise/distribution.hpp). scripts/test.sh
// starts the broker and sets AISE_TEST_RABBITMQ_URL. Every case uses a name
// prefix of its own. The cases named "broker restart" stop and start the
// broker through scripts/services.sh (CTest runs them alone); "broker closed"
// closes only this process's connections.

#include <aise/distribution.hpp>
#include <aise/rabbitmq.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <doctest/doctest.h>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "raw_amqp.hpp"

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

std::string broker_url() {
  const char* url = std::getenv("AISE_TEST_RABBITMQ_URL");
  REQUIRE_MESSAGE(url != nullptr,
                  "AISE_TEST_RABBITMQ_URL is not set: run the tests through scripts/test.sh, "
                  "which starts RabbitMQ (or: eval \"$(scripts/services.sh start rabbitmq)\" "
                  "and export it)");
  return url;
}

/// "aise-tasks.<pid>.<random>.<n>.": names of one case only.
std::string fresh_prefix() {
  static const std::string process = [] {
    std::random_device rd;
    return "aise-tasks." + std::to_string(::getpid()) + "." + std::to_string(rd() % 1'000'000);
  }();
  static std::atomic<int> counter{0};
  return process + "." + std::to_string(counter.fetch_add(1)) + ".";
}

aise::rabbitmq_task_options task_options(const std::string& prefix,
                                         std::vector<std::string> capabilities = {"work"}) {
  aise::rabbitmq_task_options o;
  o.connection.url = broker_url();
  o.connection.prefix = prefix;
  o.connection.connection_name = prefix + "conn";
  o.connection.connect_timeout = 2s;
  o.connection.reconnect_backoff = 50ms;
  o.connection.reconnect_backoff_max = 500ms;
  o.capabilities = std::move(capabilities);
  return o;
}

std::string describe(const aise::error& e) {
  return e.describe();
}

template <class T>
std::string describe_result(const aise::result<T>& r) {
  return r ? std::string("ok") : describe(r.error());
}

/// Runs scripts/services.sh with `args`; returns its exit status.
int services(const std::string& args) {
  const std::string command = "bash '" AISE_SOURCE_DIR "/scripts/services.sh' " + args + " >&2";
  return std::system(command.c_str());  // NOLINT(cert-env33-c): a test helper
}

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 15s) {
  const auto give_up = steady::now() + timeout;
  while (!pred()) {
    if (steady::now() >= give_up) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

aise::task_handoff handoff(const std::string& id, const std::string& capability = "work",
                           int priority = 0, int attempt = 1) {
  aise::task_handoff h;
  h.task.id = id;
  h.task.kind = capability;
  h.task.priority = priority;
  h.task.state = aise::task_state::running;
  h.task.attempt = attempt;
  h.task.payload = {{"n", id}};
  h.dependency_results["dep-1"] = {{"value", 42}};
  return h;
}

/// What a dispatcher reported.
struct dispatch_log {
  std::mutex mutex;
  std::vector<aise::task_outcome> outcomes;
  std::vector<std::pair<aise::lease_key, aise::error>> undeliverable;

  aise::dispatch_callbacks callbacks() {
    aise::dispatch_callbacks c;
    c.outcome = [this](aise::task_outcome o) {
      std::lock_guard lock(mutex);
      outcomes.push_back(std::move(o));
    };
    c.undeliverable = [this](aise::lease_key k, aise::error e) {
      std::lock_guard lock(mutex);
      undeliverable.emplace_back(std::move(k), std::move(e));
    };
    return c;
  }
  std::size_t outcome_count() {
    std::lock_guard lock(mutex);
    return outcomes.size();
  }
  std::size_t undeliverable_count() {
    std::lock_guard lock(mutex);
    return undeliverable.size();
  }
};

/// What a source delivered; deliveries are held for the test to settle (or
/// acknowledged at once in `auto_ack` mode).
struct source_box {
  std::mutex mutex;
  std::condition_variable changed;
  bool auto_ack = false;
  std::vector<std::string> ids;  ///< Every delivery, in order.
  std::set<std::string> seen;    ///< The distinct ones.
  std::deque<std::pair<aise::task_handoff, std::unique_ptr<aise::task_delivery>>> held;
  std::vector<aise::lease_key> cancels;

  aise::source_callbacks callbacks() {
    aise::source_callbacks c;
    c.delivery = [this](aise::task_handoff h, std::unique_ptr<aise::task_delivery> d) {
      std::lock_guard lock(mutex);
      ids.push_back(h.task.id);
      seen.insert(h.task.id);
      if (auto_ack) {
        d->ack();
      } else {
        held.emplace_back(std::move(h), std::move(d));
      }
      changed.notify_all();
    };
    c.cancel = [this](aise::lease_key k) {
      std::lock_guard lock(mutex);
      cancels.push_back(std::move(k));
      changed.notify_all();
    };
    return c;
  }

  /// The next held delivery, waiting at most `timeout`.
  std::optional<std::pair<aise::task_handoff, std::unique_ptr<aise::task_delivery>>> take(
      std::chrono::milliseconds timeout = 15s) {
    std::unique_lock lock(mutex);
    if (!changed.wait_for(lock, timeout, [&] { return !held.empty(); })) return std::nullopt;
    auto front = std::move(held.front());
    held.pop_front();
    return front;
  }

  std::size_t count() {
    std::lock_guard lock(mutex);
    return ids.size();
  }
  std::set<std::string> distinct() {
    std::lock_guard lock(mutex);
    return seen;
  }
  bool wait_distinct(std::size_t n, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return seen.size() >= n; });
  }
};

std::shared_ptr<aise::rabbitmq_task_dispatcher> make_dispatcher(
    const aise::rabbitmq_task_options& o, dispatch_log& log) {
  auto d = aise::make_rabbitmq_dispatcher(o);
  REQUIRE_MESSAGE(d.ok(), describe_result(d));
  auto typed = std::dynamic_pointer_cast<aise::rabbitmq_task_dispatcher>(*d);
  REQUIRE(typed != nullptr);
  auto started = typed->start(log.callbacks());
  REQUIRE_MESSAGE(started.ok(), describe_result(started));
  return typed;
}

std::shared_ptr<aise::rabbitmq_task_source> make_source(const aise::rabbitmq_task_options& o) {
  auto s = aise::make_rabbitmq_task_source(o);
  REQUIRE_MESSAGE(s.ok(), describe_result(s));
  auto typed = std::dynamic_pointer_cast<aise::rabbitmq_task_source>(*s);
  REQUIRE(typed != nullptr);
  return typed;
}

void start_source(aise::task_source& s, source_box& box, std::size_t prefetch = 16,
                  std::vector<std::string> capabilities = {"work"}) {
  auto r = s.start(std::move(capabilities), prefetch, box.callbacks());
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
}

/// Deletes a case's broker objects when it ends.
struct cleanup {
  std::string prefix;
  std::vector<std::string> capabilities{"work"};
  ~cleanup() {
    try {
      aise::test::raw_connection raw(broker_url());
      raw.clean(prefix, capabilities);
    } catch (...) {  // NOLINT(bugprone-empty-catch): best effort
    }
  }
};

}  // namespace

TEST_CASE("rabbitmq tasks: options and an unreachable broker fail creation clearly") {
  const auto prefix = fresh_prefix();
  auto o = task_options(prefix);
  o.max_priority = 0;
  CHECK(aise::make_rabbitmq_dispatcher(o).error().code() == aise::errc::invalid_argument);
  o = task_options(prefix);
  o.connection.url = "amqp://guest:guest@127.0.0.1:1/%2F";
  auto d = aise::make_rabbitmq_dispatcher(o);
  REQUIRE_FALSE(d.ok());
  CHECK(d.error().code() == aise::errc::unavailable);
  CHECK(d.error().message().find("127.0.0.1:1") != std::string::npos);
  auto s = aise::make_rabbitmq_task_source(o);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code() == aise::errc::unavailable);
}

TEST_CASE("rabbitmq tasks: a hand-off reaches a source and an ack removes it") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  CHECK(dispatcher->serves("work"));
  CHECK_FALSE(dispatcher->serves("other"));
  dispatcher->handoff({handoff("t-1")});

  source_box box;
  auto source = make_source(o);
  start_source(*source, box);
  auto got = box.take();
  REQUIRE(got.has_value());
  CHECK(got->first.task.id == "t-1");
  CHECK(got->first.task.attempt == 1);
  CHECK(got->first.task.payload == nlohmann::json{{"n", "t-1"}});
  CHECK(got->first.dependency_results.at("dep-1") == nlohmann::json{{"value", 42}});
  // Acknowledged from this thread, not the source's.
  got->second->ack();
  got->second.reset();
  source->stop();
  source->stop();  // idempotent

  // A second hand-off, then a new source: it gets only the second (a
  // redelivered first would come before it).
  dispatcher->handoff({handoff("t-2")});
  source_box again;
  auto second = make_source(o);
  start_source(*second, again);
  auto next = again.take();
  REQUIRE(next.has_value());
  CHECK(next->first.task.id == "t-2");
  next->second->ack();
  CHECK(dispatcher->stats().confirmed == 2);
  CHECK(log.undeliverable_count() == 0);
}

TEST_CASE("rabbitmq tasks: requeue and a delivery dropped unsettled give the task back") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  dispatcher->handoff({handoff("t-1")});
  source_box box;
  auto source = make_source(o);
  start_source(*source, box);

  auto first = box.take();
  REQUIRE(first.has_value());
  first->second->requeue();
  first->second->ack();  // a second settlement does nothing
  auto second = box.take();
  REQUIRE(second.has_value());
  CHECK(second->first.task.id == "t-1");
  second->second.reset();  // destroyed unsettled: requeued
  auto third = box.take();
  REQUIRE(third.has_value());
  CHECK(third->first.task.id == "t-1");
  third->second->ack();
  CHECK(box.count() == 3);
  CHECK(source->stats().delivered == 3);
}

TEST_CASE("rabbitmq tasks: a higher priority is delivered first") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  // Priorities beyond max_priority are clamped: 50 counts as 9, -3 as 0.
  dispatcher->handoff(
      {handoff("low", "work", -3), handoff("mid", "work", 4), handoff("high", "work", 50)});
  REQUIRE(eventually([&] { return dispatcher->stats().confirmed == 3; }));

  source_box box;
  auto source = make_source(o);
  start_source(*source, box, 1);
  std::vector<std::string> order;
  for (int i = 0; i < 3; ++i) {
    auto got = box.take();
    REQUIRE(got.has_value());
    order.push_back(got->first.task.id);
    got->second->ack();
  }
  CHECK(order == std::vector<std::string>{"high", "mid", "low"});
}

TEST_CASE("rabbitmq tasks: prefetch bounds the deliveries held across capabilities") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix, {"a", "b"}};
  const auto o = task_options(prefix, {"a", "b"});
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  std::vector<aise::task_handoff> batch;
  for (int i = 0; i < 6; ++i) {
    batch.push_back(handoff("a-" + std::to_string(i), "a"));
    batch.push_back(handoff("b-" + std::to_string(i), "b"));
  }
  dispatcher->handoff(std::move(batch));
  REQUIRE(eventually([&] { return dispatcher->stats().confirmed == 12; }));
  source_box box;
  auto source = make_source(o);
  start_source(*source, box, 3, {"a", "b"});
  REQUIRE(box.wait_distinct(3));
  // Nothing more arrives while three are held: a fourth delivery would need an ack.
  auto marker = box.count();
  std::this_thread::sleep_for(300ms);  // a negative check: no event to wait for
  CHECK(box.count() == marker);
  CHECK(marker == 3);
  for (int i = 0; i < 12; ++i) {
    auto got = box.take();
    REQUIRE(got.has_value());
    got->second->ack();
  }
  CHECK(box.distinct().size() == 12);
}

TEST_CASE("rabbitmq tasks: an undecodable hand-off is dead-lettered with the reason") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  source_box box;
  auto source = make_source(o);
  start_source(*source, box);

  aise::test::raw_connection raw(broker_url());
  raw.publish("", prefix + "task.work", "this is not json");
  raw.publish("", prefix + "task.work", R"({"task": {"kind": "x"}})");  // JSON, not a hand-off
  dispatcher->handoff({handoff("t-good")});

  auto got = box.take();
  REQUIRE(got.has_value());
  CHECK(got->first.task.id == "t-good");
  got->second->ack();

  auto first = raw.wait_get(prefix + "dead");
  REQUIRE(first.has_value());
  CHECK(first->body == "this is not json");
  CHECK(first->headers["aise-capability"] == "work");
  CHECK(first->headers["aise-dead-reason"].find("not JSON") != std::string::npos);
  auto second = raw.wait_get(prefix + "dead");
  REQUIRE(second.has_value());
  CHECK(second->headers["aise-dead-reason"].find("hand-off") != std::string::npos);
  CHECK(eventually([&] { return source->stats().dead_lettered == 2; }));
  CHECK(box.count() == 1);  // the worker never saw the poison
  CHECK(raw.ready_messages(prefix + "task.work") == 0);
}

TEST_CASE("rabbitmq tasks: the worker dead-letters a delivery with its reason") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  dispatcher->handoff({handoff("t-bad"), handoff("t-next")});
  source_box box;
  auto source = make_source(o);
  start_source(*source, box, 1);
  auto bad = box.take();
  REQUIRE(bad.has_value());
  CHECK(bad->first.task.id == "t-bad");
  // From another thread, later.
  std::thread([d = std::move(bad->second)] { d->dead_letter("input is not valid"); }).join();

  aise::test::raw_connection raw(broker_url());
  auto dead = raw.wait_get(prefix + "dead");
  REQUIRE(dead.has_value());
  CHECK(dead->headers["aise-dead-reason"] == "input is not valid");
  CHECK(dead->headers["aise-capability"] == "work");
  CHECK(nlohmann::json::parse(dead->body)["task"]["id"] == "t-bad");
  auto next = box.take();
  REQUIRE(next.has_value());
  CHECK(next->first.task.id == "t-next");  // t-bad was not redelivered
  next->second->ack();
  CHECK(box.count() == 2);
}

TEST_CASE("rabbitmq tasks: outcomes reported by a source reach the dispatcher") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  source_box box;
  auto source = make_source(o);
  CHECK(source->report(aise::task_outcome{}).error().code() ==
        aise::errc::unavailable);  // not started
  start_source(*source, box);

  aise::task_outcome ok;
  ok.task_id = "t-1";
  ok.attempt = 2;
  ok.worker = "w-1";
  ok.agent = "agent-a";
  ok.state = aise::task_state::succeeded;
  ok.result = nlohmann::json{{"answer", 42}};
  auto r = source->report(ok);
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
  aise::task_outcome failed = ok;
  failed.task_id = "t-2";
  failed.state = aise::task_state::failed;
  failed.result.reset();
  failed.error = aise::error(aise::errc::handler_failed, "boom");
  failed.retryable = false;
  r = source->report(failed);
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
  // Something undecodable on the outcome queue goes to the dead-letter queue.
  aise::test::raw_connection raw(broker_url());
  raw.publish("", prefix + "outcomes", "{\"garbage\": true}");

  REQUIRE(eventually([&] { return log.outcome_count() == 2; }));
  {
    std::lock_guard lock(log.mutex);
    CHECK(log.outcomes[0].task_id == "t-1");
    CHECK(log.outcomes[0].attempt == 2);
    CHECK(log.outcomes[0].worker == "w-1");
    CHECK(log.outcomes[0].agent == "agent-a");
    CHECK(log.outcomes[0].result == nlohmann::json{{"answer", 42}});
    CHECK(log.outcomes[1].state == aise::task_state::failed);
    REQUIRE(log.outcomes[1].error.has_value());
    CHECK(log.outcomes[1].error->message() == "boom");
    CHECK_FALSE(log.outcomes[1].retryable);
  }
  auto dead = raw.wait_get(prefix + "dead");
  REQUIRE(dead.has_value());
  CHECK(dead->body == "{\"garbage\": true}");
  CHECK(dead->headers["aise-dead-reason"].find("outcome") != std::string::npos);
  CHECK(eventually([&] { return raw.ready_messages(prefix + "outcomes") == 0; }));
  CHECK(source->stats().outcomes == 2);
  CHECK(dispatcher->stats().outcomes == 2);
  source->stop();
  CHECK(source->report(ok).error().code() == aise::errc::unavailable);
}

TEST_CASE("rabbitmq tasks: a cancel notice reaches every source") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  source_box one, two;
  auto first = make_source(o);
  auto second = make_source(o);
  start_source(*first, one);
  start_source(*second, two);
  dispatcher->cancel(aise::lease_key{"t-9", 3});
  auto heard = [](source_box& b) {
    std::unique_lock lock(b.mutex);
    return b.changed.wait_for(lock, 15s, [&] { return !b.cancels.empty(); });
  };
  REQUIRE(heard(one));
  REQUIRE(heard(two));
  std::lock_guard lock(one.mutex);
  CHECK(one.cancels.front() == aise::lease_key{"t-9", 3});
}

TEST_CASE("rabbitmq tasks: a hand-off for a capability declared lazily, thousands pipelined") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix, {"work", "late"}};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  source_box box;
  box.auto_ack = true;
  auto source = make_source(o);
  start_source(*source, box, 256, {"work", "late"});

  constexpr int n = 5000;
  const auto started = steady::now();
  std::vector<aise::task_handoff> batch;
  for (int i = 0; i < n; ++i) {
    batch.push_back(handoff("t-" + std::to_string(i), i % 10 == 0 ? "late" : "work"));
    if (batch.size() == 100) dispatcher->handoff(std::exchange(batch, {}));
  }
  REQUIRE(eventually([&] { return dispatcher->stats().confirmed == n; }, 120s));
  const auto confirmed = steady::now() - started;
  REQUIRE(box.wait_distinct(n, 120s));
  const auto delivered = steady::now() - started;
  MESSAGE(n << " hand-offs confirmed in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(confirmed).count()
            << " ms, delivered and acknowledged in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(delivered).count() << " ms");
  CHECK(box.distinct().size() == n);
  CHECK(log.undeliverable_count() == 0);
}

TEST_CASE("rabbitmq tasks: broker closed connections: every hand-off still arrives") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  source_box box;
  box.auto_ack = true;
  auto source = make_source(o);
  start_source(*source, box, 64);

  constexpr int n = 3000;
  for (int i = 0; i < n; i += 100) {
    std::vector<aise::task_handoff> batch;
    for (int j = i; j < i + 100; ++j) batch.push_back(handoff("t-" + std::to_string(j)));
    dispatcher->handoff(std::move(batch));
    if (i == 1500)
      REQUIRE(services("disconnect rabbitmq '" + o.connection.connection_name + "'") == 0);
  }
  REQUIRE_MESSAGE(box.wait_distinct(n, 60s), "delivered " << box.distinct().size() << " of " << n);
  CHECK(eventually([&] { return dispatcher->stats().reconnects >= 1; }));
  CHECK(eventually([&] { return source->stats().reconnects >= 1; }));
  CHECK(log.undeliverable_count() == 0);
  // Reporting works again once the source is back.
  CHECK(eventually([&] {
    aise::task_outcome out;
    out.task_id = "t-1";
    out.attempt = 1;
    return source->report(out).ok();
  }));
}

TEST_CASE("rabbitmq tasks: stop returns held deliveries and calls nothing afterwards") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  dispatcher->handoff({handoff("t-1")});
  source_box box;
  auto source = make_source(o);
  start_source(*source, box);
  auto held = box.take();
  REQUIRE(held.has_value());
  source->stop();
  held->second->ack();  // after stop: nothing (the delivery went back)
  held->second.reset();

  source_box again;
  auto second = make_source(o);
  start_source(*second, again);
  auto redelivered = again.take();
  REQUIRE(redelivered.has_value());
  CHECK(redelivered->first.task.id == "t-1");
  redelivered->second->ack();

  dispatcher->stop();
  dispatcher->stop();
  const auto outcomes = log.outcome_count();
  dispatcher->handoff({handoff("t-after")});  // dropped: no callback after stop
  aise::task_outcome out;
  out.task_id = "t-1";
  out.attempt = 1;
  REQUIRE(second->report(out).ok());
  std::this_thread::sleep_for(200ms);  // a negative check: nothing may arrive
  CHECK(log.outcome_count() == outcomes);
  CHECK(log.undeliverable_count() == 0);
}

TEST_CASE("rabbitmq tasks: broker restart: hand-offs buffered, bounded, and delivered after") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  auto small_options = o;
  small_options.connection.connection_name = prefix + "small";
  small_options.buffer_bound = 3;
  small_options.buffer_deadline = 3s;
  dispatch_log small_log;
  auto small = make_dispatcher(small_options, small_log);
  auto stopping_options = o;
  stopping_options.connection.connection_name = prefix + "stopping";
  dispatch_log stopping_log;
  auto stopping = make_dispatcher(stopping_options, stopping_log);
  source_box box;
  box.auto_ack = true;
  auto source = make_source(o);
  start_source(*source, box, 64);

  std::vector<aise::task_handoff> before;
  before.reserve(200);
  for (int i = 0; i < 200; ++i) before.push_back(handoff("t-" + std::to_string(i)));
  dispatcher->handoff(std::move(before));

  REQUIRE(services("stop rabbitmq") == 0);
  struct restart_guard {
    ~restart_guard() { (void)services("start rabbitmq"); }  // the broker is shared
  } guard;
  CHECK(eventually([&] { return !dispatcher->stats().connected && !source->stats().connected; }));

  std::vector<aise::task_handoff> during;
  for (int i = 200; i < 400; ++i) during.push_back(handoff("t-" + std::to_string(i)));
  dispatcher->handoff(std::move(during));  // buffered
  aise::task_outcome out;
  out.task_id = "t-1";
  out.attempt = 1;
  const auto asked = steady::now();
  CHECK(source->report(out).error().code() == aise::errc::unavailable);  // at once
  CHECK(steady::now() - asked < 2s);

  // Bound 3: of five, two are reported at once; the other three after the deadline.
  small->handoff({handoff("s-1"), handoff("s-2"), handoff("s-3"), handoff("s-4"), handoff("s-5")});
  REQUIRE(eventually([&] { return small_log.undeliverable_count() >= 2; }, 5s));
  CHECK(small_log.undeliverable_count() == 2);
  REQUIRE(eventually([&] { return small_log.undeliverable_count() == 5; }, 10s));
  {
    std::lock_guard lock(small_log.mutex);
    CHECK(small_log.undeliverable[0].second.message().find("buffer_bound") != std::string::npos);
    CHECK(small_log.undeliverable[4].second.message().find("buffer_deadline") != std::string::npos);
    CHECK(small_log.undeliverable[4].second.code() == aise::errc::unavailable);
  }
  // stop() reports what it still buffers, before it returns.
  stopping->handoff({handoff("x-1"), handoff("x-2")});
  stopping->stop();
  CHECK(stopping_log.undeliverable_count() == 2);

  REQUIRE(services("start rabbitmq") == 0);
  REQUIRE_MESSAGE(box.wait_distinct(400, 60s), "delivered " << box.distinct().size() << " of 400");
  CHECK(log.undeliverable_count() == 0);
  CHECK(dispatcher->stats().reconnects >= 1);
  CHECK(eventually([&] { return source->report(out).ok(); }));
}

TEST_CASE("rabbitmq tasks: a task queue deleted under the dispatcher is declared again") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  dispatcher->handoff({handoff("t-1")});
  REQUIRE(eventually([&] { return dispatcher->stats().confirmed == 1; }));
  {
    aise::test::raw_connection raw(broker_url());
    REQUIRE(raw.get(prefix + "task.work").has_value());  // consumed by hand
  }
  {
    aise::test::raw_connection raw(broker_url());
    raw.delete_queue(prefix + "task.work");
  }
  // No queue: the mandatory hand-off comes back (basic.return); the
  // dispatcher declares the queue again and publishes it again.
  dispatcher->handoff({handoff("t-2")});
  // A capability that cannot name a queue is reported at once.
  dispatcher->handoff({handoff("t-3", std::string(300, 'x'))});
  REQUIRE(eventually([&] { return log.undeliverable_count() == 1; }));
  {
    std::lock_guard lock(log.mutex);
    CHECK(log.undeliverable[0].first == aise::lease_key{"t-3", 1});
  }
  source_box box;
  auto source = make_source(o);
  start_source(*source, box);
  auto got = box.take();
  REQUIRE(got.has_value());
  CHECK(got->first.task.id == "t-2");
  got->second->ack();
  CHECK(dispatcher->stats().republished >= 1);
}

TEST_CASE("rabbitmq tasks: stop from inside the delivery callback ends the calls") {
  const auto prefix = fresh_prefix();
  cleanup done{prefix};
  const auto o = task_options(prefix);
  dispatch_log log;
  auto dispatcher = make_dispatcher(o, log);
  dispatcher->handoff({handoff("t-1"), handoff("t-2"), handoff("t-3")});
  REQUIRE(eventually([&] { return dispatcher->stats().confirmed == 3; }));

  auto source = make_source(o);
  std::weak_ptr<aise::rabbitmq_task_source> weak = source;
  std::atomic<int> calls{0};
  aise::source_callbacks c;
  auto holder = std::make_shared<std::shared_ptr<aise::rabbitmq_task_source>>(source);
  c.delivery = [&calls, holder](const aise::task_handoff&, std::unique_ptr<aise::task_delivery> d) {
    calls.fetch_add(1);
    (*holder)->stop();  // from the source's own thread
    holder->reset();    // and the test's last reference goes later: no join on itself
    d->ack();           // after stop: does nothing, the delivery goes back
  };
  REQUIRE(source->start({"work"}, 10, c).ok());
  REQUIRE(eventually([&] { return calls.load() >= 1; }));
  source.reset();
  CHECK(eventually([&] { return weak.expired(); }));
  CHECK(calls.load() == 1);

  source_box box;
  auto again = make_source(o);
  start_source(*again, box);
  REQUIRE(box.wait_distinct(3));
  for (int i = 0; i < 3; ++i) {
    auto got = box.take();
    REQUIRE(got.has_value());
    got->second->ack();
  }
}
