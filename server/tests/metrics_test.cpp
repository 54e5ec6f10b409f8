// /metrics, request ids and access logs: the observer around the API, as
// plain function calls and through the real HTTP server (with promtool
// checking a real scrape).
#include <aise/metrics.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "api.hpp"
#include "http_server.hpp"
#include "observe.hpp"
#include "test_auth.hpp"

namespace {

using json = nlohmann::json;
using aise::server::request;
using aise::server::response;

// The API with metrics, behind an observer logging into a string.
struct observed {
  explicit observed(aise::server::log_format format = aise::server::log_format::json)
      : orch(rt),
        sink(std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text)),
        logger(std::make_shared<spdlog::logger>("access", sink)),
        observer(reg, logger, format),
        api(orch, *auth.auth, options(reg)) {
    aise::server::set_log_format(*logger, format);
    aise::metrics::add_orchestrator_metrics(reg, orch, {.cache_for = std::chrono::seconds(0)});
  }
  static aise::server::api_options options(const aise::metrics::registry& r) {
    aise::server::api_options o = aise::server::test::unlimited();
    o.metrics = &r;
    return o;
  }

  response call(std::string method, std::string target, std::string body = {},
                std::vector<std::pair<std::string, std::string>> headers = {}) {
    bool has_auth = false;
    for (const auto& [k, v] : headers) has_auth = has_auth || k == "Authorization";
    if (!has_auth) headers.emplace_back("authorization", auth.admin);
    request req{std::move(method), std::move(target), std::move(body), "", std::move(headers)};
    return observer.handle(req, [this](const request& r) { return api.handle(r); });
  }

  std::string scrape() {
    auto res = call("GET", "/metrics");
    REQUIRE(res.status == 200);
    CHECK(res.content_type == "text/plain; version=0.0.4; charset=utf-8");
    return res.body;
  }

  std::vector<json> log_lines() {
    std::vector<json> out;
    std::istringstream in(log_text.str());
    for (std::string line; std::getline(in, line);) {
      auto j = json::parse(line, nullptr, false);
      REQUIRE_MESSAGE(!j.is_discarded(), "not JSON: " << line);
      out.push_back(std::move(j));
    }
    return out;
  }

  aise::server::test::test_auth auth;
  aise::runtime rt;
  aise::orchestrator orch;
  aise::metrics::registry reg;
  std::ostringstream log_text;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink;
  std::shared_ptr<spdlog::logger> logger;
  aise::server::observer observer;
  aise::server::api api;
};

// The value of the sample `series` (exact text up to the value), or -1.
double sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return -1;
}

// Every `<name>_bucket{<labels>,le="…"}` value of one series, in order.
std::vector<double> buckets(const std::string& text, const std::string& name,
                            const std::string& labels) {
  std::vector<double> out;
  std::istringstream in(text);
  const std::string head = name + "_bucket{" + labels + ",le=\"";
  for (std::string line; std::getline(in, line);) {
    if (line.compare(0, head.size(), head) == 0) {
      out.push_back(std::stod(line.substr(line.rfind(' ') + 1)));
    }
  }
  return out;
}

std::string header(const response& res, const std::string& name) {
  for (const auto& [n, v] : res.headers) {
    if (n == name) return v;
  }
  return {};
}

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;

struct fetched {
  int status = 0;
  std::string content_type;
  std::string request_id;
  std::string body;
};

fetched http_get(std::uint16_t port, const std::string& target,
                 const std::string& authorization = {}) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  stream.expires_after(std::chrono::seconds(30));
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!authorization.empty()) req.set(http::field::authorization, authorization);
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  beast::error_code ec;
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  return {static_cast<int>(res.result_int()), std::string(res[http::field::content_type]),
          std::string(res["X-Request-Id"]), res.body()};
}

// promtool: $AISE_PROMTOOL, else the first on PATH. Empty when missing.
std::string find_promtool() {
  if (const char* env = std::getenv("AISE_PROMTOOL"); env != nullptr && *env != '\0') return env;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    auto end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    auto candidate = std::filesystem::path(dirs.substr(start, end - start)) / "promtool";
    if (!candidate.parent_path().empty() && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate.string();
    }
    start = end + 1;
  }
  return {};
}

}  // namespace

TEST_CASE("metrics: requests are counted by method and route template and status") {
  observed o;
  o.call("POST", "/api/v1/projects", R"({"id": "p1", "name": "P"})");
  o.call("GET", "/api/v1/tasks/t-a");
  o.call("GET", "/api/v1/tasks/t-b");
  o.call("DELETE", "/api/v1/tasks/t-a");  // 405 on an existing path
  o.call("GET", "/no/such/route");
  o.call("BREW", "/api/v1/projects");  // an unknown method: one label value for all
  auto text = o.scrape();
  const std::string name = "aise_http_requests_total";
  CHECK(sample(text, name + R"({method="POST",route="/api/v1/projects",status="201"})") == 1);
  CHECK(sample(text, name + R"({method="GET",route="/api/v1/tasks/{id}",status="404"})") == 2);
  CHECK(sample(text, name + R"({method="DELETE",route="/api/v1/tasks/{id}",status="405"})") == 1);
  CHECK(sample(text, name + R"({method="GET",route="unmatched",status="404"})") == 1);
  CHECK(sample(text, name + R"({method="other",route="/api/v1/projects",status="405"})") == 1);
  // The raw ids never become label values.
  CHECK(text.find("t-a") == std::string::npos);
  // The scrape itself is counted from the next one on.
  CHECK(sample(o.scrape(), name + R"({method="GET",route="/metrics",status="200"})") == 1);
  CHECK(sample(text, "aise_http_requests_in_flight") == 1);  // the scrape in progress
}

TEST_CASE("metrics: latency histogram buckets are cumulative and count matches") {
  observed o;
  for (int i = 0; i < 7; ++i) o.call("GET", "/healthz");
  o.call("GET", "/api/v1/agents");
  auto text = o.scrape();
  const std::string labels = R"(method="GET",route="/healthz")";
  auto b = buckets(text, "aise_http_request_duration_seconds", labels);
  REQUIRE(b.size() == aise::metrics::default_latency_buckets().size() + 1);
  for (std::size_t i = 1; i < b.size(); ++i) CHECK(b[i] >= b[i - 1]);
  CHECK(b.back() == 7);
  CHECK(sample(text, "aise_http_request_duration_seconds_count{" + labels + "}") == 7);
  CHECK(sample(text, "aise_http_request_duration_seconds_sum{" + labels + "}") >= 0);
  CHECK(text.find("aise_http_request_duration_seconds_bucket{" + labels + R"(,le="+Inf"} 7)") !=
        std::string::npos);
}

TEST_CASE("metrics: task state gauges match the store") {
  observed o;
  o.call("POST", "/api/v1/projects", R"({"id": "p1", "name": "P"})");
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto res = o.call("POST", "/api/v1/projects/p1/tasks", R"({"kind": "nobody"})");
    REQUIRE(res.status == 201);
    ids.push_back(json::parse(res.body)["id"]);
  }
  REQUIRE(o.call("POST", "/api/v1/projects/p1/tasks",
                 R"({"kind": "nobody", "requires_approval": true})")
              .status == 201);
  REQUIRE(o.call("POST", "/api/v1/tasks/" + ids[0] + "/cancel").status == 200);
  REQUIRE(o.call("POST", "/api/v1/tasks/" + ids[1] + "/cancel").status == 200);

  auto text = o.scrape();
  auto counts = o.orch.store().count_tasks("").value();
  for (auto state :
       {aise::task_state::pending, aise::task_state::queued, aise::task_state::running,
        aise::task_state::succeeded, aise::task_state::failed, aise::task_state::cancelled,
        aise::task_state::retrying, aise::task_state::awaiting_approval}) {
    INFO(to_string(state));
    CHECK(sample(text, "aise_tasks{state=\"" + std::string(to_string(state)) + "\"}") ==
          static_cast<double>(counts[state]));
  }
  CHECK(counts[aise::task_state::queued] == 2);
  CHECK(counts[aise::task_state::cancelled] == 2);
  CHECK(counts[aise::task_state::awaiting_approval] == 1);
  CHECK(sample(text, "aise_task_queue_depth") == 2);
  CHECK(sample(text, "aise_store_up") == 1);
}

TEST_CASE("metrics: without a registry /metrics is a 404") {
  aise::runtime rt;
  {
    aise::orchestrator orch(rt);
    aise::server::test::test_auth auth;
    aise::server::api api(orch, *auth.auth);
    auto res = api.handle({"GET", "/metrics", ""});
    CHECK(res.status == 404);
    CHECK(res.route == "/metrics");
  }
  (void)rt.shutdown();
}

TEST_CASE("request ids: echoed when sane and generated otherwise") {
  observed o;
  auto given = o.call("GET", "/healthz", {}, {{"x-request-id", "abc-123.4:5_6"}});
  CHECK(header(given, "X-Request-Id") == "abc-123.4:5_6");

  auto a = header(o.call("GET", "/healthz"), "X-Request-Id");
  auto b = header(o.call("GET", "/healthz"), "X-Request-Id");
  CHECK(a.size() == 32);
  CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(a != b);

  for (const std::string& bad : {std::string("has space"), std::string(129, 'a'), std::string(),
                                 std::string("a\"b"), std::string("line\nbreak")}) {
    auto id = header(o.call("GET", "/healthz", {}, {{"X-Request-Id", bad}}), "X-Request-Id");
    CHECK(id != bad);
    CHECK(id.size() == 32);
  }
  CHECK(aise::server::sane_request_id(std::string(128, 'z')));
  CHECK_FALSE(aise::server::sane_request_id(std::string(129, 'z')));
}

TEST_CASE("logs: one JSON access line per request with its fields") {
  observed o;
  auto res = o.call("POST", "/api/v1/projects", R"({"id": "p1", "name": "secret-body-text"})",
                    {{"Authorization", o.auth.admin}, {"X-Request-Id", "req-1"}});
  REQUIRE(res.status == 201);
  o.call("GET", "/api/v1/tasks/t-9?cursor=secret-query");
  auto lines = o.log_lines();
  REQUIRE(lines.size() == 2);
  const auto& first = lines[0];
  CHECK(first["level"] == "info");
  CHECK(first["logger"] == "access");
  CHECK(first["ts"].is_string());
  CHECK(first["msg"] == "request");
  CHECK(first["request_id"] == "req-1");
  CHECK(first["method"] == "POST");
  CHECK(first["route"] == "/api/v1/projects");
  CHECK(first["path"] == "/api/v1/projects");
  CHECK(first["status"] == 201);
  CHECK(first["bytes"] == res.body.size());
  REQUIRE(first["duration_ms"].is_number());
  CHECK(first["duration_ms"].get<double>() >= 0);
  CHECK(lines[1]["route"] == "/api/v1/tasks/{id}");
  CHECK(lines[1]["path"] == "/api/v1/tasks/t-9");
  CHECK(lines[1]["status"] == 404);
  CHECK(lines[1]["request_id"].get<std::string>().size() == 32);
  const auto text = o.log_text.str();
  CHECK(text.find("secret") == std::string::npos);  // no header, body or query
  CHECK(text.find("Authorization") == std::string::npos);
  CHECK(text.find(o.auth.admin.substr(7)) == std::string::npos);  // the token
}

TEST_CASE("logs: the json format escapes other messages and the text format stays text") {
  std::ostringstream out;
  auto logger = std::make_shared<spdlog::logger>(
      "aise", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  aise::server::set_log_format(*logger, aise::server::log_format::json);
  logger->warn("a \"quoted\"\nline {}", 1);
  auto j = json::parse(out.str());
  CHECK(j["msg"] == "a \"quoted\"\nline 1");
  CHECK(j["level"] == "warning");
  CHECK(j["logger"] == "aise");

  observed o(aise::server::log_format::text);
  o.call("GET", "/healthz", {}, {{"X-Request-Id", "r-2"}});
  auto text = o.log_text.str();
  CHECK(text.find("GET /healthz 200") != std::string::npos);
  CHECK(text.find("request_id=r-2") != std::string::npos);
  CHECK(json::parse(text, nullptr, false).is_discarded());
}

TEST_CASE("metrics: promtool accepts a real scrape over HTTP") {
  const std::string promtool = find_promtool();
  REQUIRE_MESSAGE(!promtool.empty(),
                  "promtool not found: install the prometheus package (scripts/setup.sh) or set "
                  "AISE_PROMTOOL");
  observed o;
  aise::server::http_server server(
      o.observer.wrap([&o](const request& r) { return o.api.handle(r); }),
      {.host = "127.0.0.1", .port = 0});
  REQUIRE(server.start());
  REQUIRE(http_get(server.port(), "/healthz").status == 200);
  REQUIRE(http_get(server.port(), "/api/v1/tasks/nope", o.auth.admin).status == 404);
  auto scrape = http_get(server.port(), "/metrics");
  CHECK(scrape.status == 200);
  CHECK(scrape.content_type == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(scrape.request_id.size() == 32);
  CHECK(
      sample(scrape.body,
             R"(aise_http_requests_total{method="GET",route="/api/v1/tasks/{id}",status="404"})") ==
      1);

  auto dir =
      std::filesystem::temp_directory_path() / ("aise-metrics-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "scrape.txt";
  const auto report = dir / "promtool.txt";
  std::ofstream(file) << scrape.body;
  const std::string command =
      "'" + promtool + "' check metrics < '" + file.string() + "' > '" + report.string() + "' 2>&1";
  const int rc = std::system(command.c_str());  // NOLINT(cert-env33-c): a test tool
  std::ifstream in(report);
  std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO("promtool: " << output);
  CHECK(rc == 0);
  CHECK(output.empty());  // no lint complaints either
  std::filesystem::remove_all(dir);

  server.stop();
  CHECK(server.wait(std::chrono::seconds(5)));
}
