// The in-process transport: the conformance suite plus what only the
// in-process transport promises (synchronous delivery and refusal, sinks
// released on reset, reentrant sinks).

#include <aise/error.hpp>
#include <aise/message.hpp>
#include <aise/transport.hpp>

#include <atomic>
#include <cstddef>
#include <doctest/doctest.h>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "conformance/transport_suite.hpp"

AISE_TRANSPORT_CONFORMANCE_SUITE(inproc, "inproc", aise::make_inproc_transport);

namespace {

using aise::conformance::code_of;
using aise::conformance::seq_message;
using aise::conformance::seq_of;

// A sink that appends to `out`, for tests where the sink runs on the test's
// own thread and needs no locking.
aise::message_sink append_to(std::vector<aise::message>& out) {
  return [&out](aise::message&& m) -> aise::result<void> {
    out.push_back(std::move(m));
    return {};
  };
}

}  // namespace

TEST_CASE("inproc transport: send and publish deliver on the caller's thread before returning") {
  auto t = aise::make_inproc_transport();
  CHECK(t->name() == "inproc");

  std::vector<aise::message> got;
  std::thread::id sink_thread;
  auto bound = t->bind("a", [&](aise::message&& m) -> aise::result<void> {
    sink_thread = std::this_thread::get_id();
    got.push_back(std::move(m));
    return {};
  });
  REQUIRE(bound.ok());
  for (int i = 0; i < 3; ++i) {
    REQUIRE(t->send(seq_message("a", i)).ok());
    REQUIRE(got.size() == static_cast<std::size_t>(i + 1));
    CHECK(seq_of(got.back()) == i);
  }
  CHECK(sink_thread == std::this_thread::get_id());

  // Every subscriber gets its own copy: one emptying its message does not
  // touch what the next one sees.
  std::vector<aise::message> first;
  std::vector<aise::message> second;
  auto s1 = t->subscribe("news", [&](aise::message&& m) -> aise::result<void> {
    m.payload["seq"] = -1;
    first.push_back(std::move(m));
    return {};
  });
  auto s2 = t->subscribe("news", append_to(second));
  REQUIRE(s1.ok());
  REQUIRE(s2.ok());
  aise::message m;
  m.type = "news";
  m.topic = "news";
  m.payload = {{"seq", 7}, {"text", std::string(100, 'x')}};
  REQUIRE(t->publish(m).ok());
  REQUIRE(first.size() == 1);
  REQUIRE(second.size() == 1);
  CHECK(seq_of(first[0]) == -1);
  CHECK(second[0].payload == m.payload);
}

TEST_CASE("inproc transport: send returns the sink's refusal itself") {
  auto t = aise::make_inproc_transport();
  bool full = false;
  std::vector<aise::message> got;
  auto bound = t->bind("a", [&](aise::message&& m) -> aise::result<void> {
    if (full) return aise::fail(aise::errc::mailbox_full, "a is full");
    got.push_back(std::move(m));
    return {};
  });
  REQUIRE(bound.ok());
  REQUIRE(t->send(seq_message("a", 0)).ok());
  full = true;
  const auto refused = t->send(seq_message("a", 1));
  REQUIRE(code_of(refused) == "mailbox_full");
  CHECK(refused.error().message() == "a is full");
  full = false;
  REQUIRE(t->send(seq_message("a", 2)).ok());
  REQUIRE(got.size() == 2);
  CHECK(seq_of(got[1]) == 2);

  // publish: the refusing subscriber does not stop the others, and the
  // call reports the refusal after delivering to the rest.
  std::vector<aise::message> before;
  std::vector<aise::message> after;
  auto s1 = t->subscribe("news", append_to(before));
  auto s2 = t->subscribe("news", [](aise::message&&) -> aise::result<void> {
    return aise::fail(aise::errc::mailbox_full, "full");
  });
  auto s3 = t->subscribe("news", append_to(after));
  REQUIRE((s1.ok() && s2.ok() && s3.ok()));
  aise::message m;
  m.type = "news";
  m.topic = "news";
  CHECK(code_of(t->publish(m)) == "mailbox_full");
  CHECK(before.size() == 1);
  CHECK(after.size() == 1);
}

TEST_CASE("inproc transport: a throwing sink is reported as internal by send") {
  auto t = aise::make_inproc_transport();
  auto bound = t->bind("thrower", [](aise::message&& m) -> aise::result<void> {
    if (m.type == "std") throw std::runtime_error("boom");
    throw 42;  // NOLINT(hicpp-exception-baseclass): testing a non-standard exception
  });
  REQUIRE(bound.ok());
  aise::message m = seq_message("thrower", 0);
  m.type = "std";
  auto r = t->send(m);
  REQUIRE(code_of(r) == "internal");
  CHECK(r.error().message().find("boom") != std::string::npos);
  CHECK(r.error().message().find("thrower") != std::string::npos);
  m.type = "other";
  r = t->send(m);
  CHECK(code_of(r) == "internal");
}

TEST_CASE("inproc transport: an address is not found once its binding was reset") {
  auto t = aise::make_inproc_transport();
  std::vector<aise::message> got;
  auto bound = t->bind("a", append_to(got));
  REQUIRE(bound.ok());
  bound->reset();
  const auto r = t->send(seq_message("a", 0));
  CHECK(code_of(r) == "not_found");
  CHECK(got.empty());
  auto again = t->bind("a", append_to(got));  // and it can be bound again at once
  CHECK(again.ok());
}

TEST_CASE("inproc transport: reset releases what the sink holds") {
  auto t = aise::make_inproc_transport();
  auto token = std::make_shared<int>(1);
  const std::weak_ptr<int> watch = token;
  auto bound = t->bind("a", [token](aise::message&&) -> aise::result<void> { return {}; });
  auto sub = t->subscribe("news", [token](aise::message&&) -> aise::result<void> { return {}; });
  REQUIRE((bound.ok() && sub.ok()));
  token.reset();
  CHECK_FALSE(watch.expired());
  bound->reset();
  CHECK_FALSE(watch.expired());
  sub->reset();
  CHECK(watch.expired());
}

TEST_CASE("inproc transport: a sink may send, bind and reset its own binding") {
  auto t = aise::make_inproc_transport();
  std::vector<aise::message> echoed;
  aise::subscription echo;
  aise::subscription self;
  int calls = 0;
  auto bound = t->bind("self", [&](aise::message&& m) -> aise::result<void> {
    ++calls;
    if (!echo.active()) {
      auto e = t->bind("echo", append_to(echoed));
      if (!e.ok()) return e.error();
      echo = std::move(e).value();
    }
    if (auto r = t->send(seq_message("echo", seq_of(m))); !r.ok()) return r;
    if (m.type == "stop") self.reset();  // must not wait for itself
    return {};
  });
  REQUIRE(bound.ok());
  self = std::move(bound).value();

  REQUIRE(t->send(seq_message("self", 1)).ok());
  aise::message stop = seq_message("self", 2);
  stop.type = "stop";
  REQUIRE(t->send(stop).ok());
  CHECK_FALSE(self.active());
  CHECK(code_of(t->send(seq_message("self", 3))) == "not_found");
  CHECK(calls == 2);
  REQUIRE(echoed.size() == 2);
  CHECK(seq_of(echoed[1]) == 2);
}

TEST_CASE("inproc transport: subscriptions may outlive the transport") {
  auto t = aise::make_inproc_transport();
  auto bound = t->bind("a", [](aise::message&&) -> aise::result<void> { return {}; });
  auto sub = t->subscribe("news", [](aise::message&&) -> aise::result<void> { return {}; });
  REQUIRE((bound.ok() && sub.ok()));
  t.reset();
  bound->reset();
  sub->reset();
  CHECK_FALSE(bound->active());
}

TEST_CASE("inproc transport: concurrent bind, send and reset never call a reset sink") {
  // Four threads bind and subscribe on a few shared names, send and
  // publish to all of them, and reset again; every sink checks that the
  // reset of its subscription has not returned yet.
  constexpr int threads = 4;
  constexpr int iterations = 3000;
  constexpr int names = 3;
  auto t = aise::make_inproc_transport();
  std::atomic<long> late{0};
  std::atomic<long> delivered{0};
  std::atomic<long> unexpected{0};

  auto make_sink = [&](const std::shared_ptr<std::atomic<bool>>& reset_returned) {
    return [&, reset_returned](aise::message&&) -> aise::result<void> {
      // Give up the processor while in flight, so that resets on other
      // threads often find this call running and must wait for it.
      std::this_thread::yield();
      if (reset_returned->load()) late.fetch_add(1);
      delivered.fetch_add(1);
      return {};
    };
  };
  {
    std::vector<std::jthread> workers;
    workers.reserve(threads);
    for (int k = 0; k < threads; ++k) {
      workers.emplace_back([&, k] {
        for (int i = 0; i < iterations; ++i) {
          const std::string name = "busy-" + std::to_string((i + k) % names);
          auto bound_flag = std::make_shared<std::atomic<bool>>(false);
          auto sub_flag = std::make_shared<std::atomic<bool>>(false);
          auto bound = t->bind(name, make_sink(bound_flag));
          if (!bound.ok() && bound.error().code() != aise::errc::already_exists) {
            unexpected.fetch_add(1);
          }
          auto sub = t->subscribe(name, make_sink(sub_flag));
          if (!sub.ok()) unexpected.fetch_add(1);
          for (int j = 0; j < names; ++j) {
            const std::string to = "busy-" + std::to_string(j);
            auto r = t->send(seq_message(to, i));
            if (!r.ok() && r.error().code() != aise::errc::not_found) unexpected.fetch_add(1);
            aise::message m = seq_message("", i);
            m.topic = to;
            if (!t->publish(std::move(m)).ok()) unexpected.fetch_add(1);
          }
          if (bound.ok()) {
            bound->reset();
            bound_flag->store(true);
          }
          if (sub.ok()) {
            sub->reset();
            sub_flag->store(true);
          }
        }
      });
    }
  }
  CHECK(late.load() == 0);
  CHECK(unexpected.load() == 0);
  CHECK(delivered.load() > 0);
}
