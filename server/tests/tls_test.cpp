// HTTPS and WSS: the real server with a self-signed certificate (made with
// the openssl command), talked to by Beast clients that verify it against
// that certificate and the host name: REST over TLS with keep-alive, a
// WebSocket over TLS receiving live events, a plain-HTTP client refused
// without harm, and unusable certificate files refused at start.
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <chrono>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "../../tests/unit/artifact_test_util.hpp"
#include "http_server.hpp"
#include "test_auth.hpp"

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using json = nlohmann::json;

// A self-signed certificate for localhost / 127.0.0.1 in `dir`.
void make_certificate(const std::filesystem::path& dir) {
  std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '" +
      (dir / "key.pem").string() + "' -out '" + (dir / "cert.pem").string() + "' > /dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);  // NOLINT(concurrency-mt-unsafe,cert-env33-c)
}

struct tls_fixture {
  tls_fixture() {
    make_certificate(dir.path());
    aise::sql::store_options o;
    o.url = "sqlite:" + (dir.path() / "tls.db").string();
    auto opened = aise::sql::open_store(o);
    REQUIRE(opened);
    store = *opened;
    aise::orchestrator_options oo;
    oo.store = store;
    orch = std::make_unique<aise::orchestrator>(rt, oo);
    api = std::make_unique<aise::server::api>(*orch, *auth.auth, aise::server::test::unlimited());
    aise::server::http_server_options http;
    http.port = 0;
    http.tls_cert_file = (dir.path() / "cert.pem").string();
    http.tls_key_file = (dir.path() / "key.pem").string();
    http.websocket.events = orch.get();
    server = std::make_unique<aise::server::http_server>(
        [this](const aise::server::request& req) { return api->handle(req); }, http);
    REQUIRE(server->start());
  }
  ~tls_fixture() {
    server.reset();
    api.reset();
    orch.reset();
  }

  // A client context that trusts only the test certificate.
  [[nodiscard]] ssl::context client_context() const {
    ssl::context ctx(ssl::context::tls_client);
    ctx.load_verify_file((dir.path() / "cert.pem").string());
    ctx.set_verify_mode(ssl::verify_peer);
    return ctx;
  }

  aise::test::scratch_dir dir;
  aise::server::test::test_auth auth;
  aise::runtime rt;
  std::shared_ptr<aise::store> store;
  std::unique_ptr<aise::orchestrator> orch;
  std::unique_ptr<aise::server::api> api;
  std::unique_ptr<aise::server::http_server> server;
};

TEST_CASE("tls: HTTPS requests on one verified keep-alive connection") {
  tls_fixture f;
  auto ctx = f.client_context();
  net::io_context ioc;
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  stream.set_verify_callback(ssl::host_name_verification("localhost"));
  REQUIRE(SSL_set_tlsext_host_name(stream.native_handle(), "localhost"));
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(stream).connect(
      tcp::endpoint(net::ip::make_address("127.0.0.1"), f.server->port()));
  stream.handshake(ssl::stream_base::client);
  CHECK(SSL_version(stream.native_handle()) >= TLS1_2_VERSION);

  http::request<http::string_body> create{http::verb::post, "/api/v1/projects", 11};
  create.set(http::field::host, "localhost");
  create.set(http::field::authorization, f.auth.admin);
  create.body() = R"({"id": "secure", "name": "S"})";
  create.prepare_payload();
  http::write(stream, create);
  beast::flat_buffer buffer;
  http::response<http::string_body> created;
  http::read(stream, buffer, created);
  CHECK(created.result_int() == 201);
  CHECK(created.keep_alive());

  http::request<http::empty_body> get{http::verb::get, "/api/v1/projects/secure", 11};
  get.set(http::field::host, "localhost");
  get.set(http::field::authorization, f.auth.admin);
  http::write(stream, get);
  http::response<http::string_body> got;
  http::read(stream, buffer, got);
  CHECK(got.result_int() == 200);
  CHECK(json::parse(got.body())["name"] == "S");
  CHECK(got[http::field::strict_transport_security] == "max-age=31536000");

  beast::error_code ec;
  stream.shutdown(ec);  // close_notify both ways (or a truncation error we ignore)
}

TEST_CASE("tls: a WebSocket over TLS receives live events") {
  tls_fixture f;
  aise::project p;
  p.id = "wss";
  p.name = "W";
  REQUIRE(f.store->create_project(p));

  auto ctx = f.client_context();
  net::io_context ioc;
  websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws(ioc, ctx);
  ws.next_layer().set_verify_callback(ssl::host_name_verification("localhost"));
  REQUIRE(SSL_set_tlsext_host_name(ws.next_layer().native_handle(), "localhost"));
  beast::get_lowest_layer(ws).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(ws).connect(
      tcp::endpoint(net::ip::make_address("127.0.0.1"), f.server->port()));
  ws.next_layer().handshake(ssl::stream_base::client);
  ws.handshake("localhost", "/api/v1/ws");
  ws.write(net::buffer(std::string(R"({"type":"subscribe","project":"wss","after":0})")));

  aise::task_spec spec;
  spec.project = "wss";
  spec.kind = "build";
  REQUIRE(f.orch->submit(spec));

  // Until an event of the task arrives (other messages, e.g. the
  // subscription's confirmation, come first).
  bool got_event = false;
  for (int i = 0; i < 20 && !got_event; ++i) {
    beast::flat_buffer buffer;
    ws.read(buffer);
    // A frame carries one or more messages, one JSON object per line.
    std::istringstream lines(beast::buffers_to_string(buffer.data()));
    for (std::string line; std::getline(lines, line);) {
      if (line.empty()) continue;
      auto msg = json::parse(line);
      if (msg.value("type", "") == "event") {
        CHECK(msg["project"] == "wss");
        CHECK(msg["sequence"].get<std::uint64_t>() >= 1);
        got_event = true;
      }
    }
  }
  CHECK(got_event);
  beast::error_code ec;
  ws.close(websocket::close_code::normal, ec);
}

TEST_CASE("tls: a plain-HTTP client is dropped and the server keeps serving") {
  tls_fixture f;
  {
    net::io_context ioc;
    beast::tcp_stream plain(ioc);
    plain.expires_after(std::chrono::seconds(10));
    plain.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), f.server->port()));
    http::request<http::empty_body> req{http::verb::get, "/healthz", 11};
    req.set(http::field::host, "localhost");
    beast::error_code ec;
    http::write(plain, req, ec);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(plain, buffer, res, ec);
    CHECK(ec);  // no HTTP answer: the TLS handshake failed and the server closed
  }
  auto ctx = f.client_context();
  net::io_context ioc;
  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  REQUIRE(SSL_set_tlsext_host_name(stream.native_handle(), "localhost"));
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(stream).connect(
      tcp::endpoint(net::ip::make_address("127.0.0.1"), f.server->port()));
  stream.handshake(ssl::stream_base::client);
  http::request<http::empty_body> req{http::verb::get, "/healthz", 11};
  req.set(http::field::host, "localhost");
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  CHECK(res.result_int() == 200);
}

TEST_CASE("tls: unusable certificate or key files are refused at start, naming the file") {
  aise::test::scratch_dir dir;
  make_certificate(dir.path());
  aise::runtime rt;
  aise::orchestrator orch(rt);
  aise::server::test::test_auth auth;
  aise::server::api api(orch, *auth.auth, aise::server::test::unlimited());
  auto handler = [&api](const aise::server::request& r) { return api.handle(r); };

  aise::server::http_server_options o;
  o.port = 0;
  o.tls_cert_file = (dir.path() / "missing.pem").string();
  o.tls_key_file = (dir.path() / "key.pem").string();
  aise::server::http_server missing(handler, o);
  auto r1 = missing.start();
  REQUIRE_FALSE(r1);
  CHECK(r1.error().code() == aise::errc::invalid_argument);
  CHECK(r1.error().message().find("missing.pem") != std::string::npos);

  std::ofstream(dir.path() / "garbage.pem") << "not a key";
  o.tls_cert_file = (dir.path() / "cert.pem").string();
  o.tls_key_file = (dir.path() / "garbage.pem").string();
  aise::server::http_server garbage(handler, o);
  auto r2 = garbage.start();
  REQUIRE_FALSE(r2);
  CHECK(r2.error().message().find("garbage.pem") != std::string::npos);

  o.tls_key_file.clear();
  aise::server::http_server half(handler, o);
  auto r3 = half.start();
  REQUIRE_FALSE(r3);
  CHECK(r3.error().message().find("both") != std::string::npos);
}

}  // namespace
