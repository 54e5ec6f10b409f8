// The OpenAI-compatible client against a loopback HTTP server inside the
// test that speaks the protocol: plain and streamed (server-sent events)
// answers, tool calls, 429 with Retry-After, 5xx, malformed JSON, dropped
// connections, oversized answers, timeouts and refused credentials; and
// HTTPS against a TLS server with a self-signed certificate.
#include <aise/llm.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <doctest/doctest.h>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unistd.h>

using namespace aise;
using namespace aise::llm;
using nlohmann::json;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

using request_t = http::request<http::string_body>;
using action = std::function<void(tcp::socket&, const request_t&)>;

/// Serves one scripted action per connection, in order; records requests.
class fake_server {
 public:
  fake_server() : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~fake_server() {
    stop_ = true;
    beast::error_code ec;
    // Wake the accept with a connection of our own.
    tcp::socket poke(ioc_);
    poke.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  fake_server(const fake_server&) = delete;
  fake_server& operator=(const fake_server&) = delete;

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/v1";
  }
  void then(action a) {
    std::lock_guard lock(mutex_);
    script_.push_back(std::move(a));
  }
  std::vector<request_t> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  std::vector<std::chrono::steady_clock::time_point> times() {
    std::lock_guard lock(mutex_);
    return times_;
  }

 private:
  void serve() {
    for (;;) {
      tcp::socket s(ioc_);
      beast::error_code ec;
      acceptor_.accept(s, ec);
      if (stop_ || ec) return;
      beast::flat_buffer buffer;
      request_t req;
      http::read(s, buffer, req, ec);
      if (ec) continue;
      action a;
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(req);
        times_.push_back(std::chrono::steady_clock::now());
        if (!script_.empty()) {
          a = std::move(script_.front());
          script_.pop_front();
        }
      }
      if (a) a(s, req);
      s.shutdown(tcp::socket::shutdown_both, ec);
      s.close(ec);
    }
  }

  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::deque<action> script_;
  std::vector<request_t> requests_;
  std::vector<std::chrono::steady_clock::time_point> times_;
};

action reply(unsigned status, std::string body,
             std::vector<std::pair<std::string, std::string>> headers = {}) {
  return [=](tcp::socket& s, const request_t&) {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, "application/json");
    for (const auto& [k, v] : headers) res.set(k, v);
    res.body() = body;
    res.prepare_payload();
    beast::error_code ec;
    http::write(s, res, ec);
  };
}

/// Server-sent events, one write per event; `cut_after` events then drop.
action stream_events(std::vector<std::string> events, int cut_after = -1) {
  return [=](tcp::socket& s, const request_t&) {
    std::string head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    beast::error_code ec;
    net::write(s, net::buffer(head), ec);
    int n = 0;
    for (const auto& e : events) {
      if (cut_after >= 0 && n++ == cut_after) return;  // dropped mid-stream
      std::string data = "data: " + e + "\n\n";
      std::string chunk = fmt::format("{:x}\r\n{}\r\n", data.size(), data);
      net::write(s, net::buffer(chunk), ec);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    net::write(s, net::buffer(std::string("0\r\n\r\n")), ec);
  };
}

action drop() {
  return [](tcp::socket&, const request_t&) {};  // closes without answering
}

std::string completion(const std::string& content) {
  return json{{"id", "c1"},
              {"model", "test-model"},
              {"choices",
               {{{"index", 0},
                 {"message", {{"role", "assistant"}, {"content", content}}},
                 {"finish_reason", "stop"}}}},
              {"usage", {{"prompt_tokens", 12}, {"completion_tokens", 5}}}}
      .dump();
}

std::shared_ptr<provider> client(const fake_server& srv, openai_options o = {}) {
  o.base_url = srv.url();
  if (o.model.empty()) o.model = "test-model";
  if (o.api_key.empty()) o.api_key = "sk-secret-key";
  o.backoff = std::chrono::milliseconds(10);
  auto p = make_openai_provider(o);
  REQUIRE(p);
  return *p;
}

chat_request hello() {
  chat_request r;
  r.messages.push_back({.role = "system", .content = "You review code."});
  r.messages.push_back({.role = "user", .content = "Is this diff safe?"});
  return r;
}

}  // namespace

TEST_CASE("llm: a chat completion round trip with usage") {
  fake_server srv;
  srv.then(reply(200, completion("Looks safe.")));
  auto p = client(srv);
  auto r = p->chat(hello());
  REQUIRE_MESSAGE(r, r.error().describe());
  CHECK(r->reply.role == "assistant");
  CHECK(r->reply.content == "Looks safe.");
  CHECK(r->finish_reason == "stop");
  CHECK(r->used.prompt_tokens == 12);
  CHECK(r->used.completion_tokens == 5);
  CHECK(r->used.total() == 17);
  CHECK(r->model == "test-model");
  CHECK(r->attempts == 1);
  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].target() == "/v1/chat/completions");
  CHECK(reqs[0][http::field::authorization] == "Bearer sk-secret-key");
  auto sent = json::parse(reqs[0].body());
  CHECK(sent["model"] == "test-model");
  CHECK(sent["messages"].size() == 2);
  CHECK(sent["messages"][1]["content"] == "Is this diff safe?");
  CHECK_FALSE(sent.contains("stream"));
}

TEST_CASE("llm: streamed tokens arrive in order and tool calls are assembled") {
  fake_server srv;
  srv.then(stream_events({
      R"({"model":"test-model","choices":[{"index":0,"delta":{"role":"assistant","content":"Run"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":" the"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":" tests"}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"run_tests","arguments":"{\"pa"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\":\"src\"}"}}]},"finish_reason":"tool_calls"}]})",
      R"({"choices":[],"usage":{"prompt_tokens":30,"completion_tokens":9}})",
      "[DONE]",
  }));
  auto p = client(srv);
  chat_request req = hello();
  req.tools.push_back(
      {.name = "run_tests",
       .description = "Runs the test suite",
       .parameters = {{"type", "object"}, {"properties", {{"path", {{"type", "string"}}}}}}});
  std::vector<std::string> pieces;
  auto r = p->chat(req, [&](std::string_view d) { pieces.emplace_back(d); });
  REQUIRE_MESSAGE(r, r.error().describe());
  CHECK(pieces == std::vector<std::string>{"Run", " the", " tests"});
  CHECK(r->reply.content == "Run the tests");
  REQUIRE(r->reply.tool_calls.size() == 1);
  CHECK(r->reply.tool_calls[0].id == "call_1");
  CHECK(r->reply.tool_calls[0].name == "run_tests");
  CHECK(json::parse(r->reply.tool_calls[0].arguments)["path"] == "src");
  CHECK(r->finish_reason == "tool_calls");
  CHECK(r->used.total() == 39);
  auto sent = json::parse(srv.requests().at(0).body());
  CHECK(sent["stream"] == true);
  CHECK(sent["tools"][0]["function"]["name"] == "run_tests");
}

TEST_CASE("llm: 429 with Retry-After is waited out, 5xx is retried") {
  fake_server srv;
  srv.then(reply(429, R"({"error":{"message":"rate limited"}})", {{"Retry-After", "1"}}));
  srv.then(reply(503, R"({"error":{"message":"overloaded"}})"));
  srv.then(reply(200, completion("ok")));
  auto p = client(srv);
  auto r = p->chat(hello());
  REQUIRE_MESSAGE(r, r.error().describe());
  CHECK(r->reply.content == "ok");
  CHECK(r->attempts == 3);
  auto t = srv.times();
  REQUIRE(t.size() == 3);
  CHECK(t[1] - t[0] >= std::chrono::milliseconds(990));  // Retry-After: 1 honoured

  fake_server busy;
  for (int i = 0; i < 3; ++i) busy.then(reply(429, R"({"error":{"message":"slow down"}})"));
  auto q = client(busy, {.max_retries = 2});
  auto gave_up = q->chat(hello());
  REQUIRE_FALSE(gave_up);
  CHECK(gave_up.error().code() == errc::unavailable);
  CHECK(gave_up.error().message().find("3 attempts") != std::string::npos);
  CHECK(gave_up.error().message().find("slow down") != std::string::npos);

  fake_server patient;
  patient.then(reply(429, "{}", {{"Retry-After", "3600"}}));
  auto too_long = client(patient)->chat(hello());
  REQUIRE_FALSE(too_long);
  CHECK(too_long.error().message().find("Retry-After") != std::string::npos);
}

TEST_CASE("llm: malformed answers, refused keys and bad requests fail clearly without retries") {
  fake_server srv;
  srv.then(reply(200, "{not json"));
  srv.then(reply(200, R"({"choices":[]})"));
  srv.then(reply(401, R"({"error":{"message":"invalid api key"}})"));
  srv.then(reply(400, R"({"error":{"message":"model not found"}})"));
  srv.then(stream_events({R"({"choices":[{"delta":{"content":"a"}}]})", "{broken"}));
  auto p = client(srv);
  auto bad_json = p->chat(hello());
  REQUIRE_FALSE(bad_json);
  CHECK(bad_json.error().code() == errc::invalid_argument);
  CHECK(bad_json.error().message().find("not JSON") != std::string::npos);
  auto no_choice = p->chat(hello());
  REQUIRE_FALSE(no_choice);
  CHECK(no_choice.error().code() == errc::invalid_argument);
  auto refused = p->chat(hello());
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == errc::rejected);
  CHECK(refused.error().message().find("invalid api key") != std::string::npos);
  CHECK(refused.error().message().find("sk-secret-key") == std::string::npos);  // never leaked
  auto bad_request = p->chat(hello());
  REQUIRE_FALSE(bad_request);
  CHECK(bad_request.error().code() == errc::invalid_argument);
  auto bad_chunk = p->chat(hello(), [](std::string_view) {});
  REQUIRE_FALSE(bad_chunk);
  CHECK(bad_chunk.error().message().find("not JSON") != std::string::npos);
  CHECK(srv.requests().size() == 5);  // none retried

  CHECK_FALSE(make_openai_provider({.base_url = "ftp://x"}));
  CHECK_FALSE(make_openai_provider({.base_url = "http://user:key@host/v1"}));
  CHECK_FALSE(p->chat(chat_request{}));
}

TEST_CASE("llm: dropped connections are retried until the stream has delivered text") {
  fake_server srv;
  srv.then(drop());
  srv.then(reply(200, completion("second time lucky")));
  auto p = client(srv);
  auto r = p->chat(hello());
  REQUIRE_MESSAGE(r, r.error().describe());
  CHECK(r->reply.content == "second time lucky");
  CHECK(r->attempts == 2);

  // Cut after two events: text was already delivered, so no retry.
  fake_server cut;
  cut.then(stream_events({R"({"choices":[{"delta":{"content":"half"}}]})",
                          R"({"choices":[{"delta":{"content":" an"}}]})",
                          R"({"choices":[{"delta":{"content":" answer"}}]})", "[DONE]"},
                         2));
  std::string got;
  auto broken = client(cut)->chat(hello(), [&](std::string_view d) { got += d; });
  REQUIRE_FALSE(broken);
  CHECK(broken.error().code() == errc::unavailable);
  CHECK(broken.error().message().find("not retried") != std::string::npos);
  CHECK(got == "half an");
  CHECK(cut.requests().size() == 1);

  // Nobody listening: unavailable after the retries.
  std::string dead_url;
  {
    fake_server gone;
    dead_url = gone.url();
  }
  auto dead = make_openai_provider(
      {.base_url = dead_url, .max_retries = 1, .backoff = std::chrono::milliseconds(5)});
  REQUIRE(dead);
  auto down = (*dead)->chat(hello());
  REQUIRE_FALSE(down);
  CHECK(down.error().code() == errc::unavailable);
}

TEST_CASE("llm: answers beyond the size limit and slow servers are cut off") {
  fake_server srv;
  srv.then(reply(200, completion(std::string(5000, 'x'))));
  srv.then([](tcp::socket&, const request_t&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
  });
  auto big = client(srv, {.max_response_bytes = 1000});
  auto r = big->chat(hello());
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == errc::limit_exceeded);
  auto slow = client(srv, {.request_timeout = std::chrono::milliseconds(200), .max_retries = 0});
  const auto t0 = std::chrono::steady_clock::now();
  auto late = slow->chat(hello());
  REQUIRE_FALSE(late);
  CHECK(late.error().code() == errc::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(700));
}

// ------------------------------------------------------------------ TLS --

namespace {

/// A self-signed certificate for 127.0.0.1, made with the openssl CLI.
struct self_signed {
  std::filesystem::path dir;
  std::string cert, key;
  self_signed() {
    dir = std::filesystem::temp_directory_path() / ("aise-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    cert = (dir / "cert.pem").string();
    key = (dir / "key.pem").string();
    const std::string cmd =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
        "subjectAltName=IP:127.0.0.1 -keyout " +
        key + " -out " + cert + " >/dev/null 2>&1";
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "openssl could not make a certificate");
  }
  ~self_signed() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  self_signed(const self_signed&) = delete;
  self_signed& operator=(const self_signed&) = delete;
};

/// Answers each TLS connection with one completion (handshake failures are
/// counted and the connection dropped).
class tls_server {
 public:
  explicit tls_server(const self_signed& c)
      : ctx_(net::ssl::context::tls_server),
        acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    ctx_.use_certificate_chain_file(c.cert);
    ctx_.use_private_key_file(c.key, net::ssl::context::pem);
    thread_ = std::thread([this] { serve(); });
  }
  ~tls_server() {
    stop_ = true;
    beast::error_code ec;
    tcp::socket poke(ioc_);
    poke.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  tls_server(const tls_server&) = delete;
  tls_server& operator=(const tls_server&) = delete;
  std::string url() const {
    return "https://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/v1";
  }
  std::atomic<int> served{0}, failed_handshakes{0};

 private:
  void serve() {
    for (;;) {
      tcp::socket s(ioc_);
      beast::error_code ec;
      acceptor_.accept(s, ec);
      if (stop_ || ec) return;
      net::ssl::stream<tcp::socket> tls(std::move(s), ctx_);
      tls.handshake(net::ssl::stream_base::server, ec);
      if (ec) {
        ++failed_handshakes;
        continue;
      }
      beast::flat_buffer buffer;
      request_t req;
      http::read(tls, buffer, req, ec);
      if (ec) continue;
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      res.body() = completion("over TLS");
      res.prepare_payload();
      http::write(tls, res, ec);
      ++served;
      tls.shutdown(ec);
    }
  }

  net::io_context ioc_;
  net::ssl::context ctx_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace

TEST_CASE("llm: HTTPS with certificate verification") {
  self_signed cert;
  tls_server srv(cert);
  // Trusting the certificate: verified, host name (an IP here) checked.
  auto trusted = make_openai_provider(
      {.base_url = srv.url(), .model = "m", .max_retries = 0, .ca_file = cert.cert});
  REQUIRE(trusted);
  auto r = (*trusted)->chat(hello());
  REQUIRE_MESSAGE(r, r.error().describe());
  CHECK(r->reply.content == "over TLS");

  // Not trusting it: the handshake fails with a clear error, no retry.
  auto strict = make_openai_provider({.base_url = srv.url(), .model = "m", .max_retries = 2});
  REQUIRE(strict);
  auto refused = (*strict)->chat(hello());
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == errc::unavailable);
  CHECK(refused.error().message().find("TLS handshake") != std::string::npos);

  // Verification off (a development server): accepted.
  auto lax = make_openai_provider(
      {.base_url = srv.url(), .model = "m", .max_retries = 0, .verify_tls = false});
  REQUIRE(lax);
  CHECK((*lax)->chat(hello()));
  CHECK(srv.served == 2);
  CHECK(srv.failed_handshakes == 1);
}
