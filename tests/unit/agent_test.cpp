#include <aise/runtime.hpp>

#include <doctest/doctest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>

#include "test_util.hpp"

using namespace std::chrono_literals;
using aise::test::notifier;

namespace {

aise::runtime_options opts(std::shared_ptr<aise::clock> clock = nullptr) {
  return aise::test::quiet_options(2, std::move(clock));
}

class server_agent : public aise::agent {
 public:
  server_agent() {
    on_request("echo",
               [](const aise::message& m) -> aise::result<nlohmann::json> { return m.payload; });
    on_request("refuse", [](const aise::message&) -> aise::result<nlohmann::json> {
      return aise::error(aise::errc::rejected, "not today");
    });
    on_request("throw", [](const aise::message&) -> aise::result<nlohmann::json> {
      throw std::runtime_error("bad request handler");
    });
    on("silent", [](const aise::message&) {});
  }
};

// Sends one request when told to and records what came back.
class client_agent : public aise::agent {
 public:
  client_agent(notifier& sig, std::optional<aise::result<aise::message>>& out)
      : sig_(sig), out_(out) {
    on("go", [this](const aise::message& m) {
      request(m.payload.at("to"), m.payload.at("type"), m.payload.at("body"),
              std::chrono::milliseconds(m.payload.at("timeout_ms").get<int>()),
              [this](aise::result<aise::message> r) { sig_.update([&] { out_ = std::move(r); }); });
    });
  }

 private:
  notifier& sig_;
  std::optional<aise::result<aise::message>>& out_;
};

nlohmann::json go(const std::string& to, const std::string& type, int timeout_ms = 5000) {
  return {{"to", to}, {"type", type}, {"body", {{"n", 41}}}, {"timeout_ms", timeout_ms}};
}

}  // namespace

TEST_CASE("agent: request/reply between agents") {
  notifier sig;
  std::optional<aise::result<aise::message>> out;
  aise::runtime rt(opts());
  REQUIRE(rt.spawn<server_agent>({.name = "server"}).ok());
  REQUIRE(rt.spawn<client_agent>({.name = "client"}, sig, out).ok());

  SUBCASE("a reply carries the handler's value") {
    REQUIRE(rt.send("client", "go", go("server", "echo")).ok());
    REQUIRE(sig.wait([&] { return out.has_value(); }));
    REQUIRE(out->ok());
    CHECK(out->value().payload == nlohmann::json{{"n", 41}});
    CHECK(out->value().sender == "server");
  }
  SUBCASE("a handler's error comes back as that error") {
    REQUIRE(rt.send("client", "go", go("server", "refuse")).ok());
    REQUIRE(sig.wait([&] { return out.has_value(); }));
    REQUIRE_FALSE(out->ok());
    CHECK(out->error().code() == aise::errc::rejected);
    CHECK(out->error().message() == "not today");
  }
  SUBCASE("a throwing request handler becomes an error reply, the server lives") {
    REQUIRE(rt.send("client", "go", go("server", "throw")).ok());
    REQUIRE(sig.wait([&] { return out.has_value(); }));
    REQUIRE_FALSE(out->ok());
    CHECK(out->error().code() == aise::errc::handler_failed);
    CHECK(rt.has_agent("server"));
  }
  SUBCASE("an unknown type gets no_handler") {
    REQUIRE(rt.send("client", "go", go("server", "what")).ok());
    REQUIRE(sig.wait([&] { return out.has_value(); }));
    REQUIRE_FALSE(out->ok());
    CHECK(out->error().code() == aise::errc::no_handler);
  }
  SUBCASE("an unknown address fails at once") {
    REQUIRE(rt.send("client", "go", go("nobody", "echo")).ok());
    REQUIRE(sig.wait([&] { return out.has_value(); }));
    REQUIRE_FALSE(out->ok());
    CHECK(out->error().code() == aise::errc::not_found);
  }
}

TEST_CASE("agent: a request times out by the manual clock, not by sleeping") {
  auto clock = std::make_shared<aise::manual_clock>();
  notifier sig;
  std::optional<aise::result<aise::message>> out;
  aise::runtime rt(opts(clock));
  REQUIRE(rt.spawn<server_agent>({.name = "server"}).ok());
  REQUIRE(rt.spawn<client_agent>({.name = "client"}, sig, out).ok());
  REQUIRE(rt.send("client", "go", go("server", "silent", 1000)).ok());
  CHECK_FALSE(sig.wait([&] { return out.has_value(); }, 50ms));
  clock->advance(999ms);
  CHECK_FALSE(sig.wait([&] { return out.has_value(); }, 50ms));
  clock->advance(1ms);
  REQUIRE(sig.wait([&] { return out.has_value(); }));
  REQUIRE_FALSE(out->ok());
  CHECK(out->error().code() == aise::errc::timeout);
}

TEST_CASE("agent: blocking call from outside the runtime") {
  aise::runtime rt(opts());
  REQUIRE(rt.spawn<server_agent>({.name = "server"}).ok());
  auto r = rt.call("server", "echo", {{"x", 1}}, 5s);
  REQUIRE(r.ok());
  CHECK(r->payload == nlohmann::json{{"x", 1}});
  auto none = rt.call("nobody", "echo", nullptr, 5s);
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code() == aise::errc::not_found);
}

namespace {
class listener_agent : public aise::agent {
 public:
  listener_agent(notifier& sig, std::vector<std::string>& got) : sig_(sig), got_(got) {
    on("news", [this](const aise::message& m) {
      sig_.update([&] { got_.push_back(name() + ":" + m.payload.get<std::string>()); });
    });
    on("leave", [this](const aise::message&) {
      REQUIRE(unsubscribe("topic.a").ok());
      sig_.update([&] { got_.push_back(name() + ":left"); });
    });
  }
  void on_start() override { REQUIRE(subscribe("topic.a").ok()); }

 private:
  notifier& sig_;
  std::vector<std::string>& got_;
};
}  // namespace

TEST_CASE("agent: publish reaches every subscriber and unsubscribe stops delivery") {
  notifier sig;
  std::vector<std::string> got;
  aise::runtime rt(opts());
  for (const char* n : {"l1", "l2", "l3"}) {
    REQUIRE(rt.spawn<listener_agent>({.name = n}, sig, got).ok());
  }
  // Subscriptions happen in on_start: wait until all three hear a probe.
  auto publish = [&](const std::string& text) {
    aise::message m;
    m.topic = "topic.a";
    m.type = "news";
    m.payload = text;
    return rt.publish(m);
  };
  // on_start runs before any message, and publish needs the subscriptions:
  // a request to each agent proves its on_start has run.
  for (const char* n : {"l1", "l2", "l3"}) {
    auto r = rt.call(n, "ping", nullptr, 5s);  // no handler → error reply, after on_start
    CHECK(r.error().code() == aise::errc::no_handler);
  }
  REQUIRE(publish("one").ok());
  REQUIRE(sig.wait([&] { return got.size() == 3; }));
  REQUIRE(rt.send("l2", "leave").ok());
  REQUIRE(sig.wait([&] { return got.size() == 4; }));
  REQUIRE(publish("two").ok());
  REQUIRE(sig.wait([&] { return got.size() == 6; }));
  std::lock_guard lock(sig.mutex());
  CHECK(std::count(got.begin(), got.end(), "l2:two") == 0);
  CHECK(std::count(got.begin(), got.end(), "l1:two") == 1);
  CHECK(std::count(got.begin(), got.end(), "l3:two") == 1);
}

namespace {
class worker_agent : public aise::agent {
 public:
  worker_agent(notifier& sig, std::vector<std::string>& log) : sig_(sig), log_(log) {
    on("later", [this](const aise::message&) {
      after(5s, [this] { sig_.update([&] { log_.emplace_back("timer"); }); });
    });
    on("blocking", [this](const aise::message&) {
      run_blocking([] { return nlohmann::json(6 * 7); },
                   [this](aise::result<nlohmann::json> r) {
                     sig_.update([&] { log_.push_back("blocking:" + r.value().dump()); });
                   });
    });
    on("blocking-throws", [this](const aise::message&) {
      run_blocking([]() -> nlohmann::json { throw std::runtime_error("disk on fire"); },
                   [this](aise::result<nlohmann::json> r) {
                     sig_.update([&] {
                       log_.push_back("error:" + std::string(aise::to_string(r.error().code())));
                     });
                   });
    });
  }

 private:
  notifier& sig_;
  std::vector<std::string>& log_;
};
}  // namespace

TEST_CASE("agent: timers and blocking work come back to the strand") {
  auto clock = std::make_shared<aise::manual_clock>();
  notifier sig;
  std::vector<std::string> log;
  aise::runtime rt(opts(clock));
  REQUIRE(rt.spawn<worker_agent>({.name = "w"}, sig, log).ok());
  REQUIRE(rt.send("w", "later").ok());
  REQUIRE(rt.send("w", "blocking").ok());
  REQUIRE(rt.send("w", "blocking-throws").ok());
  REQUIRE(sig.wait([&] { return log.size() == 2; }));
  clock->advance(5s);
  REQUIRE(sig.wait([&] { return log.size() == 3; }));
  std::lock_guard lock(sig.mutex());
  CHECK(std::count(log.begin(), log.end(), "blocking:42") == 1);
  CHECK(std::count(log.begin(), log.end(), "error:handler_failed") == 1);
  CHECK(log.back() == "timer");
}
