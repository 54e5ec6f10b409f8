#include <aise/runtime.hpp>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <doctest/doctest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>
#include <thread>

#include "test_util.hpp"

using namespace std::chrono_literals;
using aise::test::notifier;

namespace {

aise::runtime_options opts(std::size_t threads = 2) {
  return aise::test::quiet_options(threads);
}

// Counts "hit" messages and records whether two handlers ever overlapped.
class counter_agent : public aise::agent {
 public:
  counter_agent(notifier& sig, int& count, std::atomic<bool>& overlap)
      : sig_(sig), count_(count), overlap_(overlap) {
    on("hit", [this](const aise::message&) {
      if (inside_.exchange(true)) overlap_ = true;
      volatile int spin = 0;
      for (int i = 0; i < 50; ++i) spin = spin + i;
      inside_ = false;
      sig_.update([&] { ++count_; });
    });
    on("boom", [](const aise::message&) { throw std::runtime_error("kaboom"); });
  }

 private:
  notifier& sig_;
  int& count_;
  std::atomic<bool>& overlap_;
  std::atomic<bool> inside_{false};
};

}  // namespace

TEST_CASE("runtime: messages reach their handler one at a time") {
  notifier sig;
  int count = 0;
  std::atomic<bool> overlap{false};
  aise::runtime rt(opts(2));
  auto name =
      rt.spawn<counter_agent>({.name = "counter", .mailbox_capacity = 100000}, sig, count, overlap);
  REQUIRE(name.ok());
  CHECK(*name == "counter");

  std::vector<std::thread> senders;
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) REQUIRE(rt.send("counter", "hit").ok());
    });
  }
  for (auto& s : senders) s.join();
  CHECK(sig.wait([&] { return count == 4000; }));
  CHECK_FALSE(overlap.load());
}

TEST_CASE("runtime: names, duplicates and unknown addresses") {
  notifier sig;
  int count = 0;
  std::atomic<bool> overlap{false};
  aise::runtime rt(opts(1));
  auto a = rt.spawn<counter_agent>({.kind = "counter"}, sig, count, overlap);
  auto b = rt.spawn<counter_agent>({.kind = "counter"}, sig, count, overlap);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a == "counter-1");
  CHECK(*b == "counter-2");
  auto dup = rt.spawn<counter_agent>({.name = "counter-1"}, sig, count, overlap);
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.error().code() == aise::errc::already_exists);

  auto missing = rt.send("nobody", "hit");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code() == aise::errc::not_found);
  CHECK(rt.agents() == std::vector<std::string>{"counter-1", "counter-2"});
}

TEST_CASE("runtime: a throwing handler fails only its agent") {
  notifier sig;
  int count = 0;
  std::atomic<bool> overlap{false};
  std::optional<aise::agent_exit> exit;
  aise::runtime rt(opts(2));
  rt.on_agent_exit([&](const aise::agent_exit& ex) { sig.update([&] { exit = ex; }); });
  REQUIRE(rt.spawn<counter_agent>({.name = "fragile"}, sig, count, overlap).ok());
  REQUIRE(rt.spawn<counter_agent>({.name = "sturdy"}, sig, count, overlap).ok());
  REQUIRE(rt.send("fragile", "boom").ok());
  REQUIRE(sig.wait([&] { return exit.has_value(); }));
  CHECK(exit->name == "fragile");
  CHECK(exit->failed);
  REQUIRE(exit->reason.has_value());
  CHECK(exit->reason->code() == aise::errc::handler_failed);
  CHECK(exit->reason->message().find("kaboom") != std::string::npos);
  CHECK_FALSE(rt.has_agent("fragile"));
  REQUIRE(rt.send("sturdy", "hit").ok());
  CHECK(sig.wait([&] { return count == 1; }));
}

namespace {
// Blocks in its handler until released, so that its mailbox fills up.
class gated_agent : public aise::agent {
 public:
  gated_agent(notifier& sig, bool& started, bool& open, int& handled)
      : sig_(sig), started_(started), open_(open), handled_(handled) {
    on("work", [this](const aise::message&) {
      sig_.wait([&] { return open_; });
      sig_.update([&] { ++handled_; });
    });
  }

 protected:
  void on_start() override {
    sig_.update([&] { started_ = true; });
  }

 private:
  notifier& sig_;
  bool& started_;
  bool& open_;
  int& handled_;
};
}  // namespace

TEST_CASE("runtime: a full mailbox rejects the newest message and loses nothing accepted") {
  notifier sig;
  bool started = false;
  bool open = false;
  int handled = 0;
  aise::runtime rt(opts(2));
  REQUIRE(
      rt.spawn<gated_agent>({.name = "gated", .mailbox_capacity = 8}, sig, started, open, handled)
          .ok());
  // The start job is admitted beyond the bound but counts against it while
  // queued (docs/concepts.md, "Mailbox and overflow"): wait until it has been
  // taken, so that all eight slots are free for messages.
  REQUIRE(sig.wait([&] { return started; }));
  int accepted = 0;
  int rejected = 0;
  for (int i = 0; i < 30; ++i) {
    auto r = rt.send("gated", "work");
    if (r.ok()) {
      ++accepted;
    } else {
      CHECK(r.error().code() == aise::errc::mailbox_full);
      ++rejected;
    }
  }
  // Up to eight wait in the mailbox, and up to eight more may already have
  // been taken into the batch the blocked handler is working through.
  CHECK(accepted >= 8);
  CHECK(accepted <= 16);
  CHECK(rejected == 30 - accepted);
  sig.update([&] { open = true; });
  CHECK(sig.wait([&] { return handled == accepted; }));
  CHECK(rt.send("gated", "work").ok());
}

TEST_CASE("runtime: timers follow a manual clock") {
  auto clock = std::make_shared<aise::manual_clock>();
  auto o = opts(1);
  o.clock = clock;
  notifier sig;
  aise::runtime rt(o);
  int fired = 0;
  rt.schedule(10s, [&] { sig.update([&] { ++fired; }); });
  rt.schedule(20s, [&] { sig.update([&] { fired += 10; }); });
  auto cancelled = rt.schedule(15s, [&] { sig.update([&] { fired += 100; }); });
  CHECK(rt.cancel_timer(cancelled));
  clock->advance(9s);
  CHECK_FALSE(sig.wait([&] { return fired != 0; }, 50ms));
  clock->advance(1s);
  CHECK(sig.wait([&] { return fired == 1; }));
  clock->advance(10s);
  CHECK(sig.wait([&] { return fired == 11; }));
}

TEST_CASE("runtime: runs on a host io_context") {
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread host([&] { io.run(); });
  {
    notifier sig;
    int count = 0;
    std::atomic<bool> overlap{false};
    aise::runtime rt(io, opts());
    REQUIRE(rt.spawn<counter_agent>({.name = "hosted"}, sig, count, overlap).ok());
    for (int i = 0; i < 100; ++i) REQUIRE(rt.send("hosted", "hit").ok());
    CHECK(sig.wait([&] { return count == 100; }));
    CHECK(rt.shutdown().ok());
  }
  guard.reset();
  host.join();
}

TEST_CASE("runtime: two runtimes share an in-process transport") {
  auto shared = aise::make_inproc_transport();
  auto oa = opts(1);
  oa.transport = shared;
  oa.name = "a";
  auto ob = opts(1);
  ob.transport = shared;
  ob.name = "b";
  notifier sig;
  int count = 0;
  std::atomic<bool> overlap{false};
  aise::runtime a(oa);
  aise::runtime b(ob);
  REQUIRE(b.spawn<counter_agent>({.name = "in-b"}, sig, count, overlap).ok());
  REQUIRE(a.send("in-b", "hit").ok());
  CHECK(sig.wait([&] { return count == 1; }));
}

namespace {
class lifecycle_agent : public aise::agent {
 public:
  lifecycle_agent(notifier& sig, std::vector<std::string>& log) : sig_(sig), log_(log) {
    on("note", [this](const aise::message& m) {
      sig_.update([&] { log_.push_back(m.payload.get<std::string>()); });
    });
  }
  void on_start() override {
    sig_.update([&] { log_.emplace_back("start"); });
  }
  void on_stop() override {
    sig_.update([&] { log_.emplace_back("stop"); });
  }

 private:
  notifier& sig_;
  std::vector<std::string>& log_;
};
}  // namespace

TEST_CASE("runtime: drain shutdown handles queued messages before on_stop") {
  std::vector<std::string> log;
  notifier sig;
  aise::runtime rt(opts(1));
  REQUIRE(rt.spawn<lifecycle_agent>({.name = "l"}, sig, log).ok());
  for (int i = 0; i < 5; ++i) REQUIRE(rt.send("l", "note", std::to_string(i)).ok());
  REQUIRE(rt.shutdown(aise::shutdown_mode::drain, 5s).ok());
  std::lock_guard lock(sig.mutex());
  CHECK(log == std::vector<std::string>{"start", "0", "1", "2", "3", "4", "stop"});
  auto late = rt.send("l", "note", "late");
  CHECK_FALSE(late.ok());
}

TEST_CASE("runtime: stop runs on_stop and tells exit listeners") {
  std::vector<std::string> log;
  notifier sig;
  std::optional<aise::agent_exit> exit;
  aise::runtime rt(opts(1));
  rt.on_agent_exit([&](const aise::agent_exit& ex) { sig.update([&] { exit = ex; }); });
  REQUIRE(rt.spawn<lifecycle_agent>({.name = "l", .kind = "lifecycle"}, sig, log).ok());
  REQUIRE(rt.stop("l").ok());
  REQUIRE(sig.wait([&] { return exit.has_value(); }));
  CHECK_FALSE(exit->failed);
  CHECK(exit->kind == "lifecycle");
  std::lock_guard lock(sig.mutex());
  CHECK(log.back() == "stop");
  CHECK(rt.stop("nobody").error().code() == aise::errc::not_found);
}
