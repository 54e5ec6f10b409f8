// The real HTTP server on an ephemeral loopback port, talked to with
// Beast's client: keep-alive, 413, a malformed request, graceful stop.
#include "http_server.hpp"

#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <doctest/doctest.h>
#include <future>
#include <nlohmann/json.hpp>
#include <string>

#include "api.hpp"
#include "test_auth.hpp"

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;

// The API behind a real server, plus a route "/slow" whose handler waits
// until the test releases it (a request in flight).
struct server_fixture {
  explicit server_fixture(std::chrono::seconds read_timeout = std::chrono::seconds(30))
      : orch(rt),
        api(orch, *users.auth, aise::server::test::unlimited()),
        server(
            [this](const aise::server::request& req) {
              if (req.target == "/slow") {
                entered.set_value();
                // A deadline, not a timing assertion: the test releases it.
                if (release_future.wait_for(std::chrono::seconds(60)) !=
                    std::future_status::ready) {
                  return aise::server::error_response(503, "timeout", "never released");
                }
                return aise::server::response{200, R"({"slow": true})", {}};
              }
              return api.handle(req);
            },
            {.host = "127.0.0.1", .port = 0, .body_limit = 1024, .read_timeout = read_timeout}) {
    REQUIRE(server.start());
    REQUIRE(server.port() != 0);
  }

  aise::server::test::test_auth users;
  aise::runtime rt;
  aise::orchestrator orch;
  aise::server::api api;
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> release_future = release.get_future().share();
  aise::server::http_server server;
};

// One client connection.
struct client {
  explicit client(std::uint16_t port, std::string authorization = {})
      : socket(ioc), authorization(std::move(authorization)) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  void send(http::verb method, const std::string& target, const std::string& body = {}) {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!authorization.empty()) req.set(http::field::authorization, authorization);
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    http::write(socket, req);
  }

  http::response<http::string_body> receive() {
    http::response<http::string_body> res;
    http::read(socket, buffer, res);
    return res;
  }

  http::response<http::string_body> call(http::verb method, const std::string& target,
                                         const std::string& body = {}) {
    send(method, target, body);
    return receive();
  }

  net::io_context ioc;
  tcp::socket socket;
  std::string authorization;
  beast::flat_buffer buffer;
};

std::string error_code_of(const http::response<http::string_body>& res) {
  return json::parse(res.body())["error"]["code"].get<std::string>();
}

}  // namespace

TEST_CASE("http: keep-alive serves several requests on one connection") {
  server_fixture f;
  client c(f.server.port(), f.users.admin);
  auto created = c.call(http::verb::post, "/api/v1/projects", R"({"id": "p", "name": "P"})");
  CHECK(created.result_int() == 201);
  CHECK(created.keep_alive());
  CHECK(created[http::field::content_type] == "application/json");
  auto got = c.call(http::verb::get, "/api/v1/projects/p");
  CHECK(got.result_int() == 200);
  CHECK(json::parse(got.body())["name"] == "P");
  auto missing = c.call(http::verb::get, "/api/v1/tasks/t-nope");
  CHECK(missing.result_int() == 404);
  CHECK(error_code_of(missing) == "not_found");
  auto wrong = c.call(http::verb::delete_, "/api/v1/projects/p");
  CHECK(wrong.result_int() == 405);
  CHECK(wrong[http::field::allow] == "GET, PATCH");
  CHECK(c.call(http::verb::get, "/healthz").result_int() == 200);
}

TEST_CASE("http: an oversized body gets 413 and the server keeps serving") {
  server_fixture f;
  {
    client c(f.server.port());
    json big = {{"name", std::string(4096, 'x')}};
    auto res = c.call(http::verb::post, "/api/v1/projects", big.dump());
    CHECK(res.result_int() == 413);
    CHECK(error_code_of(res) == "payload_too_large");
    CHECK_FALSE(res.keep_alive());
  }
  client again(f.server.port());
  CHECK(again.call(http::verb::get, "/healthz").result_int() == 200);
}

TEST_CASE("http: a malformed request line gets 400 and the server keeps serving") {
  server_fixture f;
  {
    client c(f.server.port());
    net::write(c.socket, net::buffer(std::string("this is not http\r\n\r\n")));
    auto res = c.receive();
    CHECK(res.result_int() == 400);
    CHECK(error_code_of(res) == "bad_request");
    CHECK_FALSE(res.keep_alive());
  }
  client again(f.server.port());
  CHECK(again.call(http::verb::get, "/healthz").result_int() == 200);
}

TEST_CASE("http: stop finishes the request in flight, closes idle connections, then refuses") {
  server_fixture f;
  client idle(f.server.port());
  CHECK(idle.call(http::verb::get, "/healthz").result_int() == 200);

  client busy(f.server.port());
  busy.send(http::verb::get, "/slow");
  f.entered.get_future().wait();  // the handler runs

  f.server.stop();
  // The idle keep-alive connection is closed by the server.
  http::response<http::string_body> none;
  beast::error_code ec;
  http::read(idle.socket, idle.buffer, none, ec);
  CHECK(ec == http::error::end_of_stream);

  f.release.set_value();
  auto res = busy.receive();
  CHECK(res.result_int() == 200);
  CHECK(json::parse(res.body())["slow"] == true);
  CHECK_FALSE(res.keep_alive());
  busy.socket.close();
  idle.socket.close();

  CHECK(f.server.wait(std::chrono::seconds(30)));
  net::io_context ioc;
  tcp::socket late(ioc);
  late.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), f.server.port()), ec);
  CHECK(ec);
}

TEST_CASE("http: oversized headers get 431") {
  server_fixture f;
  client c(f.server.port());
  http::request<http::string_body> req{http::verb::get, "/healthz", 11};
  req.set(http::field::host, "127.0.0.1");
  req.set("X-Flood", std::string(32 * 1024, 'h'));
  http::write(c.socket, req);
  auto res = c.receive();
  CHECK(res.result_int() == 431);
  CHECK(error_code_of(res) == "header_too_large");
  client again(f.server.port());
  CHECK(again.call(http::verb::get, "/healthz").result_int() == 200);
}

TEST_CASE("http: a client that stalls mid-request is disconnected") {
  server_fixture f(std::chrono::seconds(1));
  client c(f.server.port());
  net::write(c.socket, net::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\n")));
  // No timing assertion: the read ends when the server gives up on us.
  http::response<http::string_body> none;
  beast::error_code ec;
  http::read(c.socket, c.buffer, none, ec);
  CHECK(ec);
  client again(f.server.port());
  CHECK(again.call(http::verb::get, "/healthz").result_int() == 200);
}

TEST_CASE("http: Expect: 100-continue gets a 100 before the body is sent") {
  server_fixture f;
  client c(f.server.port());
  std::string body = R"({"id": "c", "name": "continued"})";
  std::string head =
      "POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Authorization: " +
      f.users.admin + "\r\nExpect: 100-continue\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n";
  net::write(c.socket, net::buffer(head));
  net::streambuf interim;
  net::read_until(c.socket, interim, "\r\n\r\n");
  std::string first(net::buffers_begin(interim.data()), net::buffers_end(interim.data()));
  CHECK(first.rfind("HTTP/1.1 100", 0) == 0);
  interim.consume(first.find("\r\n\r\n") + 4);
  net::write(c.socket, net::buffer(body));
  // Anything read past the 100 belongs to the final response.
  c.buffer.commit(net::buffer_copy(c.buffer.prepare(interim.size()), interim.data()));
  auto res = c.receive();
  CHECK(res.result_int() == 201);
  CHECK(json::parse(res.body())["name"] == "continued");
}

TEST_CASE("http: stop lets a request whose body is still arriving finish") {
  server_fixture f;
  client c(f.server.port());
  std::string body = R"({"id": "late", "name": "arriving"})";
  std::string head =
      "POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: " + f.users.admin +
      "\r\nExpect: 100-continue\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  net::write(c.socket, net::buffer(head));
  net::streambuf interim;
  net::read_until(c.socket, interim, "\r\n\r\n");  // the 100: the server has the headers
  std::string first(net::buffers_begin(interim.data()), net::buffers_end(interim.data()));
  REQUIRE(first.rfind("HTTP/1.1 100", 0) == 0);
  interim.consume(first.find("\r\n\r\n") + 4);

  f.server.stop();
  net::write(c.socket, net::buffer(body));
  c.buffer.commit(net::buffer_copy(c.buffer.prepare(interim.size()), interim.data()));
  auto res = c.receive();
  CHECK(res.result_int() == 201);
  CHECK_FALSE(res.keep_alive());
  c.socket.close();
  CHECK(f.server.wait(std::chrono::seconds(30)));
}

TEST_CASE("http: the bearer token and the client address reach the api, with security headers") {
  server_fixture f;
  client anonymous(f.server.port());
  auto refused = anonymous.call(http::verb::get, "/api/v1/me");
  CHECK(refused.result_int() == 401);
  CHECK(refused[http::field::www_authenticate] == R"(Bearer realm="aise")");
  CHECK(refused["X-Content-Type-Options"] == "nosniff");
  CHECK(refused["X-Frame-Options"] == "DENY");
  CHECK(refused["Referrer-Policy"] == "no-referrer");
  CHECK_FALSE(refused["Content-Security-Policy"].empty());
  CHECK(refused[http::field::cache_control] == "no-store");
  CHECK(refused["Strict-Transport-Security"].empty());  // no TLS yet

  auto login = anonymous.call(http::verb::post, "/api/v1/auth/login",
                              R"({"username": "root", "password": "root-password"})");
  REQUIRE(login.result_int() == 200);
  auto tokens = json::parse(login.body());
  client c(f.server.port(), "Bearer " + tokens["access_token"].get<std::string>());
  auto me = c.call(http::verb::get, "/api/v1/me");
  CHECK(me.result_int() == 200);
  CHECK(json::parse(me.body())["username"] == "root");
  auto audit = f.users.store->read_audit(0, 100);
  REQUIRE(audit);
  REQUIRE_FALSE(audit->empty());
  CHECK(audit->back().action == "login");
  CHECK(audit->back().ip == "127.0.0.1");

  // Responses the server makes itself (here a 413) carry the headers too.
  json big = {{"name", std::string(4096, 'x')}};
  client oversized(f.server.port());
  auto res = oversized.call(http::verb::post, "/api/v1/projects", big.dump());
  CHECK(res.result_int() == 413);
  CHECK(res["X-Content-Type-Options"] == "nosniff");
}
