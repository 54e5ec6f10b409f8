// The WebSocket endpoint /api/v1/ws on the real server, orchestrator and
// SQLite store, talked to with Beast's WebSocket client on loopback: live
// events, resume without gap or duplicate while events keep coming, error
// messages, the slow-consumer close, the close at stop, authentication.
#include <aise/agent.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <deque>
#include <doctest/doctest.h>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "http_server.hpp"
#include "test_auth.hpp"

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using namespace std::chrono_literals;

class idle_agent : public aise::agent {
 public:
  idle_agent() {
    on_task("idle", [](aise::task_context&) -> aise::result<json> { return json(nullptr); });
  }
};

// A scratch SQLite file, an orchestrator on it and the server with the
// WebSocket endpoint.
struct ws_fixture {
  explicit ws_fixture(aise::server::ws_options ws = {}) : dir(scratch_dir()) {
    aise::sql::store_options o;
    o.url = "sqlite:" + (dir / "ws.db").string();
    o.sqlite_synchronous = "NORMAL";
    auto opened = aise::sql::open_store(o);
    REQUIRE(opened);
    store = *opened;
    aise::orchestrator_options oo;
    oo.store = store;
    orch = std::make_unique<aise::orchestrator>(rt, oo);
    REQUIRE(orch->register_kind("idle", [] { return std::make_unique<idle_agent>(); }));
    api = std::make_unique<aise::server::api>(*orch, *auth.auth, aise::server::test::unlimited());
    ws.events = orch.get();
    aise::server::http_server_options http;
    http.host = "127.0.0.1";
    http.port = 0;
    http.websocket = std::move(ws);
    server = std::make_unique<aise::server::http_server>(
        [this](const aise::server::request& req) { return api->handle(req); }, http);
    REQUIRE(server->start());
  }

  ~ws_fixture() {
    server.reset();
    api.reset();
    orch.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  static std::filesystem::path scratch_dir() {
    static std::atomic<int> n{0};
    auto d = std::filesystem::temp_directory_path() /
             ("aise_ws_test_" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "_" +
              std::to_string(n++));
    std::filesystem::create_directories(d);
    return d;
  }

  void make_project(const std::string& id) {
    aise::project p;
    p.id = id;
    p.name = id;
    REQUIRE(store->create_project(p));
  }

  // `n` tasks in `project`, each announced by events.
  void produce(const std::string& project, int n) {
    for (int i = 0; i < n; ++i) {
      aise::task_spec spec;
      spec.project = project;
      spec.kind = "build";
      REQUIRE(orch->submit(spec));
    }
  }

  std::uint64_t last(const std::string& project) {
    auto r = store->last_sequence(project);
    REQUIRE(r);
    return *r;
  }

  std::filesystem::path dir;
  aise::server::test::test_auth auth;
  aise::runtime rt;
  std::shared_ptr<aise::store> store;
  std::unique_ptr<aise::orchestrator> orch;
  std::unique_ptr<aise::server::api> api;
  std::unique_ptr<aise::server::http_server> server;
};

// A WebSocket client; every operation has a deadline (the TCP stream's
// timeout), so a missing message fails the test instead of hanging it.
struct ws_client {
  net::io_context ioc;
  websocket::stream<beast::tcp_stream> ws{ioc};
  beast::flat_buffer buffer;
  std::deque<json> pending;
  websocket::response_type response;

  // Runs one asynchronous operation to completion (or its deadline).
  template <class Start>
  beast::error_code run(Start start, std::chrono::milliseconds deadline = 10s) {
    beast::error_code result = net::error::would_block;
    beast::get_lowest_layer(ws).expires_after(deadline);
    start([&](beast::error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  // Connects and upgrades; the error of the handshake (the HTTP status of a
  // refusal is in `response`).
  beast::error_code connect(std::uint16_t port, const std::string& target = "/api/v1/ws",
                            const std::string& bearer = {}, int rcvbuf = 0) {
    auto& sock = beast::get_lowest_layer(ws).socket();
    sock.open(tcp::v4());
    if (rcvbuf > 0) sock.set_option(net::socket_base::receive_buffer_size(rcvbuf));
    sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    if (!bearer.empty()) {
      ws.set_option(websocket::stream_base::decorator([bearer](websocket::request_type& req) {
        req.set(http::field::authorization, "Bearer " + bearer);
      }));
    }
    return run([&](auto handler) { ws.async_handshake(response, "127.0.0.1", target, handler); });
  }

  void send(const json& j) { send_text(j.dump()); }

  void send_text(const std::string& text) {
    auto ec = run([&](auto handler) { ws.async_write(net::buffer(text), handler); });
    REQUIRE_MESSAGE(!ec, ec.message());
  }

  // The next message (a frame carries one or more, one per line), or the
  // read's error.
  beast::error_code next(json& out, std::chrono::milliseconds deadline = 10s) {
    while (pending.empty()) {
      auto ec = run([&](auto handler) { ws.async_read(buffer, handler); }, deadline);
      if (ec) return ec;
      std::string text = beast::buffers_to_string(buffer.data());
      buffer.consume(buffer.size());
      std::size_t start = 0;
      while (start <= text.size()) {
        auto nl = text.find('\n', start);
        auto line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        auto j = json::parse(line, nullptr, false);
        REQUIRE_MESSAGE(!j.is_discarded(), line);
        pending.push_back(std::move(j));
        if (nl == std::string::npos) break;
        start = nl + 1;
      }
    }
    out = std::move(pending.front());
    pending.pop_front();
    return {};
  }

  json next() {
    json j;
    auto ec = next(j);
    REQUIRE_MESSAGE(!ec, (ec.message() + " (close code " + std::to_string(ws.reason().code) + ")"));
    return j;
  }

  // The next message that is not an event.
  json next_reply() {
    for (;;) {
      auto j = next();
      if (j["type"] != "event") return j;
    }
  }

  // Reads until the connection closes; the close code (0 if it did not
  // close within the deadline). Counts the events read on the way.
  std::uint16_t read_until_closed(std::size_t* events = nullptr,
                                  std::chrono::milliseconds deadline = 20s) {
    auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      json j;
      auto ec = next(j, 5s);
      // A close frame came (the teardown after it may then fail, when the
      // server closed the socket first).
      if (ec == websocket::error::closed || (ec && ws.reason().code != 0)) return ws.reason().code;
      if (ec) {
        MESSAGE("read ended without a close frame: " << ec.message());
        return 0;
      }
      if (events != nullptr && j["type"] == "event") ++*events;
    }
    return 0;
  }

  void close() {
    run([&](auto handler) { ws.async_close(websocket::close_code::normal, handler); });
  }
};

// Waits for `pred` with a deadline.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds deadline = 10s) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

}  // namespace

TEST_CASE("ws: live events arrive in order with their sequences") {
  ws_fixture f;
  f.make_project("p-1");
  f.produce("p-1", 3);  // before the subscription: not sent (no "after")
  const auto before = f.last("p-1");
  ws_client c;
  REQUIRE_FALSE(c.connect(f.server->port()));
  CHECK(eventually([&] { return f.server->websocket_clients() == 1; }));
  c.send({{"type", "subscribe"}, {"project", "p-1"}, {"id", 7}});
  auto sub = c.next();
  CHECK(sub["type"] == "subscribed");
  CHECK(sub["project"] == "p-1");
  CHECK(sub["after"] == before);
  CHECK(sub["id"] == 7);
  f.produce("p-1", 20);
  const auto end = f.last("p-1");
  for (auto seq = before + 1; seq <= end; ++seq) {
    auto e = c.next();
    REQUIRE(e["type"] == "event");
    CHECK(e["project"] == "p-1");
    CHECK(e["sequence"] == seq);
    CHECK(e["event"]["sequence"] == seq);
    CHECK(e["event"]["type"].get<std::string>().starts_with("task."));
  }
  c.send({{"type", "ping"}});
  CHECK(c.next()["type"] == "pong");  // nothing more than the events came
  c.send({{"type", "unsubscribe"}, {"project", "p-1"}});
  CHECK(c.next()["type"] == "unsubscribed");
  c.close();
  CHECK(eventually([&] { return f.server->websocket_clients() == 0; }));
}

TEST_CASE("ws: a resumed subscription gets exactly the missed events while events keep coming") {
  ws_fixture f;
  f.make_project("p-1");
  f.produce("p-1", 5);
  std::atomic<bool> done{false};
  std::jthread producer([&] {
    for (int i = 0; i < 400; ++i) {
      aise::task_spec spec;
      spec.project = "p-1";
      spec.kind = "build";
      if (!f.orch->submit(spec)) break;
      if (i % 50 == 0) std::this_thread::sleep_for(2ms);
    }
    done = true;
  });
  std::vector<std::uint64_t> seen;
  {
    ws_client c;
    REQUIRE_FALSE(c.connect(f.server->port()));
    c.send({{"type", "subscribe"}, {"project", "p-1"}, {"after", 0}});
    CHECK(c.next()["type"] == "subscribed");
    while (seen.size() < 60) {
      auto e = c.next();
      REQUIRE(e["type"] == "event");
      seen.push_back(e["sequence"].get<std::uint64_t>());
    }
    c.close();
  }
  // Reconnect twice while the producer goes on, each time from the last seen.
  for (int round = 0; round < 2; ++round) {
    ws_client c;
    REQUIRE_FALSE(c.connect(f.server->port()));
    c.send({{"type", "subscribe"}, {"project", "p-1"}, {"after", seen.back()}});
    auto sub = c.next();
    CHECK(sub["type"] == "subscribed");
    CHECK(sub["after"] == seen.back());
    const std::size_t want = seen.size() + 80;
    while (seen.size() < want) {
      auto e = c.next();
      REQUIRE(e["type"] == "event");
      seen.push_back(e["sequence"].get<std::uint64_t>());
    }
  }
  producer.join();
  REQUIRE(done);
  const auto end = f.last("p-1");
  {
    ws_client c;
    REQUIRE_FALSE(c.connect(f.server->port()));
    c.send({{"type", "subscribe"}, {"project", "p-1"}, {"after", seen.back()}});
    CHECK(c.next()["type"] == "subscribed");
    while (seen.back() < end) {
      auto e = c.next();
      REQUIRE(e["type"] == "event");
      seen.push_back(e["sequence"].get<std::uint64_t>());
    }
  }
  REQUIRE(seen.size() == end);
  for (std::size_t i = 0; i < seen.size(); ++i) REQUIRE(seen[i] == i + 1);  // no gap, no duplicate
}

TEST_CASE("ws: bad messages get error messages and the connection stays") {
  aise::server::ws_options o;
  o.max_subscriptions = 2;
  ws_fixture f(o);
  f.make_project("p-1");
  f.make_project("p-2");
  f.make_project("p-3");
  ws_client c;
  REQUIRE_FALSE(c.connect(f.server->port()));
  auto code = [&](const std::string& text) {
    c.send_text(text);
    auto j = c.next_reply();
    CHECK(j["type"] == "error");
    CHECK(j["error"].contains("message"));
    return j["error"]["code"].get<std::string>();
  };
  CHECK(code("{not json") == "bad_json");
  CHECK(code("[1, 2]") == "invalid_argument");
  CHECK(code(R"({"type": 5})") == "invalid_argument");
  CHECK(code(R"({"type": "launch"})") == "unknown_type");
  CHECK(code(R"({"type": "subscribe"})") == "invalid_argument");
  CHECK(code(R"({"type": "subscribe", "project": "p-1", "after": -1})") == "invalid_argument");
  CHECK(code(R"({"type": "subscribe", "project": "p-1", "after": "3"})") == "invalid_argument");
  CHECK(code(R"({"type": "subscribe", "project": "nope"})") == "not_found");
  CHECK(code(R"({"type": "unsubscribe", "project": "p-1"})") == "not_found");
  c.send({{"type", "subscribe"}, {"project", "p-1"}});
  CHECK(c.next_reply()["type"] == "subscribed");
  CHECK(code(R"({"type": "subscribe", "project": "p-1"})") == "already_subscribed");
  c.send({{"type", "subscribe"}, {"project", "p-2"}});
  CHECK(c.next_reply()["type"] == "subscribed");
  CHECK(code(R"({"type": "subscribe", "project": "p-3"})") == "limit_exceeded");
  c.send({{"type", "ping"}});
  CHECK(c.next_reply()["type"] == "pong");

  // Without the upgrade the endpoint answers 426.
  tcp::socket plain(c.ioc);
  plain.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), f.server->port()));
  http::request<http::empty_body> req{http::verb::get, "/api/v1/ws", 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(plain, req);
  beast::flat_buffer b;
  http::response<http::string_body> res;
  http::read(plain, b, res);
  CHECK(res.result_int() == 426);
  CHECK(json::parse(res.body())["error"]["code"] == "upgrade_required");
}

TEST_CASE("ws: a message over the size limit closes with 1009") {
  aise::server::ws_options o;
  o.max_message_size = 1024;
  ws_fixture f(o);
  ws_client c;
  REQUIRE_FALSE(c.connect(f.server->port()));
  c.send_text(R"({"type": "ping", "pad": ")" + std::string(2000, 'x') + "\"}");
  CHECK(c.read_until_closed() == websocket::close_code::too_big);
}

TEST_CASE("ws: a client that does not read is closed as a slow consumer") {
  aise::server::ws_options o;
  o.max_queued_messages = 4096;
  o.max_queued_bytes = 1024 * 1024;
  o.send_buffer_bytes = 16 * 1024;  // else the kernel buffers megabytes for the slow one
  ws_fixture f(o);
  f.make_project("p-1");
  ws_client slow;
  REQUIRE_FALSE(slow.connect(f.server->port(), "/api/v1/ws", {}, 4096));
  ws_client fast;
  REQUIRE_FALSE(fast.connect(f.server->port()));
  slow.send({{"type", "subscribe"}, {"project", "p-1"}});
  fast.send({{"type", "subscribe"}, {"project", "p-1"}});
  CHECK(fast.next()["type"] == "subscribed");
  f.produce("p-1", 1);
  const auto per_task = f.last("p-1");
  for (std::uint64_t i = 0; i < per_task; ++i) CHECK(fast.next()["type"] == "event");
  // The slow client reads nothing while thousands of events are produced;
  // the fast one reads them as they come.
  const std::uint64_t end = per_task * 4001;
  std::atomic<bool> produced{false};
  std::jthread producer([&] {
    for (int i = 0; i < 4000; ++i) {
      aise::task_spec spec;
      spec.project = "p-1";
      spec.kind = "build";
      if (!f.orch->submit(spec)) break;
      // Pacing (2,000 events/s): the reading client keeps up, even under TSan.
      if (i % 5 == 4) std::this_thread::sleep_for(5ms);
    }
    produced = true;
  });
  std::size_t fast_events = per_task;
  while (fast_events < end) {
    INFO("events read by the fast client: " << fast_events);
    auto e = fast.next();
    if (e["type"] != "event" || e["sequence"] != fast_events + 1) {
      FAIL_CHECK("unexpected message " << e.dump());
    }
    ++fast_events;
  }
  producer.join();
  CHECK(produced);
  CHECK(f.last("p-1") == end);
  std::size_t slow_events = 0;
  CHECK(slow.read_until_closed(&slow_events) == 4008);
  CHECK(std::string(slow.ws.reason().reason.data(), slow.ws.reason().reason.size())
            .starts_with("slow consumer"));
  CHECK(slow_events < end);
  CHECK(eventually([&] { return f.server->websocket_clients() == 1; }));  // the fast one stays
}

TEST_CASE("ws: stop closes clients with 1001 going away") {
  ws_fixture f;
  f.make_project("p-1");
  ws_client c;
  REQUIRE_FALSE(c.connect(f.server->port()));
  c.send({{"type", "subscribe"}, {"project", "p-1"}});
  CHECK(c.next()["type"] == "subscribed");
  f.server->stop();
  CHECK(c.read_until_closed() == websocket::close_code::going_away);
  CHECK(f.server->wait(5s));
  CHECK(f.server->websocket_clients() == 0);
}

TEST_CASE("ws: agent events for an agents subscription") {
  ws_fixture f;
  f.make_project("p-1");
  ws_client c;
  REQUIRE_FALSE(c.connect(f.server->port()));
  c.send({{"type", "subscribe"}, {"agents", true}});
  CHECK(c.next()["type"] == "subscribed");
  f.produce("p-1", 2);  // task events: not for this subscription
  aise::agent_spawn spec;
  spec.kind = "idle";
  spec.name = "idle-1";
  spec.project = "p-1";
  REQUIRE(f.orch->spawn(spec));
  auto e = c.next();
  CHECK(e["type"] == "event");
  CHECK(e["event"]["type"] == "agent.started");
  CHECK(e["event"]["subject"] == "idle-1");
  CHECK(e["project"] == "p-1");
  REQUIRE(f.orch->stop_agent("idle-1"));
  CHECK(c.next()["event"]["type"] == "agent.stopped");
}

TEST_CASE("ws: the access hook refuses bad tokens and unreadable projects") {
  aise::server::ws_options o;
  o.auth_timeout = 300ms;
  o.access.authenticate = [](std::string_view token) -> aise::result<std::string> {
    if (token == "good") return std::string("alice");
    return aise::fail(aise::errc::invalid_argument, "bad token");
  };
  o.access.may_read = [](const std::string& subject, const std::string& project) {
    return subject == "alice" && project == "p-1";
  };
  ws_fixture f(o);
  f.make_project("p-1");
  f.make_project("p-2");
  const auto port = f.server->port();

  SUBCASE("a bad bearer header is refused with 401") {
    ws_client c;
    CHECK(c.connect(port, "/api/v1/ws", "bad") == websocket::error::upgrade_declined);
    CHECK(c.response.result_int() == 401);
  }
  SUBCASE("a bad query token is refused with 401") {
    ws_client c;
    CHECK(c.connect(port, "/api/v1/ws?access_token=bad") == websocket::error::upgrade_declined);
    CHECK(c.response.result_int() == 401);
  }
  SUBCASE("a good token may read its project only") {
    ws_client c;
    REQUIRE_FALSE(c.connect(port, "/api/v1/ws?x=1&access_token=go%6Fd"));
    c.send({{"type", "subscribe"}, {"project", "p-2"}});
    auto j = c.next_reply();
    CHECK(j["type"] == "error");
    CHECK(j["error"]["code"] == "forbidden");
    c.send({{"type", "subscribe"}, {"project", "p-1"}});
    CHECK(c.next_reply()["type"] == "subscribed");
    f.produce("p-1", 1);
    CHECK(c.next()["type"] == "event");
  }
  SUBCASE("the bearer header") {
    ws_client c;
    REQUIRE_FALSE(c.connect(port, "/api/v1/ws", "good"));
    c.send({{"type", "subscribe"}, {"project", "p-1"}});
    CHECK(c.next_reply()["type"] == "subscribed");
  }
  SUBCASE("without a token, an auth message") {
    ws_client c;
    REQUIRE_FALSE(c.connect(port));
    c.send({{"type", "subscribe"}, {"project", "p-1"}});
    CHECK(c.next_reply()["error"]["code"] == "unauthorized");
    c.send({{"type", "auth"}, {"token", "good"}});
    auto j = c.next_reply();
    CHECK(j["type"] == "authenticated");
    CHECK(j["subject"] == "alice");
    c.send({{"type", "subscribe"}, {"project", "p-1"}});
    CHECK(c.next_reply()["type"] == "subscribed");
  }
  SUBCASE("a bad auth message closes with 4001") {
    ws_client c;
    REQUIRE_FALSE(c.connect(port));
    c.send({{"type", "auth"}, {"token", "bad"}});
    CHECK(c.read_until_closed() == 4001);
  }
  SUBCASE("no auth message in time closes with 4001") {
    ws_client c;
    REQUIRE_FALSE(c.connect(port));
    CHECK(c.read_until_closed() == 4001);
  }
}
