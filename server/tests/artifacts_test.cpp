// Artifact routes: as plain functions (upload given whole, versions,
// listing, metadata, downloads with Range) and through the real HTTP
// server, where uploads and downloads are streamed: a large artifact
// round trip, the size limit (by Content-Length and mid-body), a client
// that disappears mid-upload, and the agent routes (spawn, stop, restart).
#include <aise/agent.hpp>
#include <aise/artifacts.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sha256.hpp>
#include <aise/sql.hpp>
#include <aise/task_context.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>

#include "../../tests/unit/artifact_test_util.hpp"
#include "api.hpp"
#include "http_server.hpp"
#include "test_auth.hpp"

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using aise::server::request;
using aise::server::response;

class idle_agent : public aise::agent {
 public:
  idle_agent() {
    on_task("noop", [](aise::task_context&) -> aise::result<json> { return json::object(); });
  }
};

// A SQLite store, an artifact store beside it, the API and (on demand) the
// HTTP server with streamed uploads.
struct fixture {
  explicit fixture(std::uint64_t max_size = 0)
      : store(open_sql(dir)),
        orch(rt, options(store)),
        artifacts(open_artifacts(max_size)),
        api(orch, *auth.auth, aise::server::test::unlimited(), artifacts) {
    REQUIRE(orch.register_kind("idle", [] { return std::make_unique<idle_agent>(); }));
  }

  static std::shared_ptr<aise::store> open_sql(const aise::test::scratch_dir& d) {
    aise::sql::store_options o;
    o.url = "sqlite:" + (d.path() / "aise.db").string();
    auto s = aise::sql::open_store(o);
    REQUIRE(s);
    return *s;
  }

  static aise::orchestrator_options options(std::shared_ptr<aise::store> s) {
    aise::orchestrator_options o;
    o.store = std::move(s);
    return o;
  }

  std::shared_ptr<aise::artifact_store> open_artifacts(std::uint64_t max_size) {
    aise::artifact_store_options o;
    o.root = dir.path() / "artifacts";
    o.metadata = store;
    o.max_size = max_size;
    o.gc_grace = {};
    auto a = aise::open_artifact_store(o);
    REQUIRE(a);
    return *a;
  }

  response call(std::string method, std::string target, std::string body = {},
                std::vector<std::pair<std::string, std::string>> headers = {}) const {
    headers.emplace_back("authorization", auth.admin);
    request r{std::move(method), std::move(target), std::move(body), "", std::move(headers)};
    return api.handle(r);
  }

  json expect(int status, std::string method, std::string target, std::string body = {},
              std::vector<std::pair<std::string, std::string>> headers = {}) const {
    auto res = call(std::move(method), std::move(target), std::move(body), std::move(headers));
    INFO(res.body);
    CHECK(res.status == status);
    json j = json::parse(res.body, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    return j;
  }

  void make_project(const std::string& id) const {
    expect(201, "POST", "/api/v1/projects", json{{"id", id}, {"name", id}}.dump());
  }

  // Starts the HTTP server with the upload hooks; returns its port.
  std::uint16_t serve(std::uint64_t upload_limit = 0) {
    aise::server::http_server_options o;
    o.port = 0;
    o.uploads.upload_limit = upload_limit;
    o.uploads.streams_body = [this](const request& head) { return api.streams_body(head); };
    o.uploads.begin_upload = [this](const request& head) { return api.begin_upload(head); };
    server = std::make_unique<aise::server::http_server>(
        [this](const request& req) { return api.handle(req); }, o);
    REQUIRE(server->start());
    return server->port();
  }

  aise::test::scratch_dir dir;
  aise::server::test::test_auth auth;
  std::shared_ptr<aise::store> store;
  aise::runtime rt;
  aise::orchestrator orch;
  std::shared_ptr<aise::artifact_store> artifacts;
  aise::server::api api;
  std::unique_ptr<aise::server::http_server> server;
};

// The whole body of a streamed response.
std::string drain(const response& res) {
  REQUIRE(res.stream);
  std::string out;
  char buf[4096];
  for (;;) {
    auto n = res.stream->read(buf, sizeof buf);
    REQUIRE(n);
    if (*n == 0) break;
    out.append(buf, *n);
  }
  CHECK(out.size() == res.stream_size);
  return out;
}

std::string header_of(const response& res, std::string_view name) {
  for (const auto& [k, v] : res.headers) {
    if (k == name) return v;
  }
  return {};
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    auto v = gen();
    for (std::size_t k = 0; k < 8 && i + k < n; ++k) s[i + k] = static_cast<char>(v >> (8 * k));
  }
  return s;
}

std::size_t count_artifacts(const fixture& f, const std::string& project) {
  auto all = f.artifacts->list(project);
  REQUIRE(all);
  return all->size();
}

TEST_CASE("artifacts: upload, versions, listing, metadata and download as plain calls") {
  fixture f;
  f.make_project("p1");
  auto v1 = f.expect(201, "PUT", "/api/v1/projects/p1/artifacts/report.md", "# one",
                     {{"content-type", "text/markdown"}});
  CHECK(v1["version"] == 1);
  CHECK(v1["size"] == 5);
  CHECK(v1["media_type"] == "text/markdown");
  CHECK(v1["sha256"] == aise::sha256_hex("# one"));
  auto v2 = f.expect(201, "PUT", "/api/v1/projects/p1/artifacts/report.md", "# two!");
  CHECK(v2["version"] == 2);
  CHECK(v2["media_type"] == "application/octet-stream");
  // A name that looks like a path is only a name (percent-encoded '/').
  auto odd = f.expect(201, "PUT", "/api/v1/projects/p1/artifacts/..%2F..%2Fetc%2Fpasswd", "x");
  CHECK(odd["name"] == "../../etc/passwd");

  auto versions = f.expect(200, "GET", "/api/v1/projects/p1/artifacts/report.md/versions");
  REQUIRE(versions["items"].size() == 2);
  CHECK(versions["items"][0]["version"] == 1);
  CHECK(versions["items"][1]["version"] == 2);

  auto list = f.expect(200, "GET", "/api/v1/projects/p1/artifacts");
  REQUIRE(list["items"].size() == 2);  // latest version of each name, by name
  CHECK(list["items"][0]["name"] == "../../etc/passwd");
  CHECK(list["items"][1]["version"] == 2);
  auto page1 = f.expect(200, "GET", "/api/v1/projects/p1/artifacts?limit=1");
  REQUIRE(page1["items"].size() == 1);
  REQUIRE(page1["next"].is_string());
  auto page2 = f.expect(
      200, "GET",
      "/api/v1/projects/p1/artifacts?limit=1&cursor=" + std::string("..%2F..%2Fetc%2Fpasswd"));
  REQUIRE(page2["items"].size() == 1);
  CHECK(page2["items"][0]["name"] == "report.md");
  CHECK(page2["next"].is_null());

  auto id1 = v1["id"].get<std::string>();
  CHECK(f.expect(200, "GET", "/api/v1/artifacts/" + id1)["version"] == 1);
  auto whole = f.call("GET", "/api/v1/artifacts/" + id1 + "/content");
  CHECK(whole.status == 200);
  CHECK(whole.content_type == "text/markdown");
  CHECK(drain(whole) == "# one");
  CHECK(header_of(whole, "ETag") == "\"" + aise::sha256_hex("# one") + "\"");
  CHECK(header_of(whole, "Accept-Ranges") == "bytes");
  CHECK(header_of(whole, "Content-Disposition") == "attachment; filename*=UTF-8''report.md");

  // Old versions stay readable.
  auto id2 = v2["id"].get<std::string>();
  CHECK(drain(f.call("GET", "/api/v1/artifacts/" + id2 + "/content")) == "# two!");
}

TEST_CASE("artifacts: Range, If-Range and If-None-Match") {
  fixture f;
  f.make_project("p1");
  std::string content = "0123456789abcdefghij";
  auto meta = f.expect(201, "PUT", "/api/v1/projects/p1/artifacts/data", content);
  auto url = "/api/v1/artifacts/" + meta["id"].get<std::string>() + "/content";
  auto etag = "\"" + aise::sha256_hex(content) + "\"";

  auto range = [&](const std::string& spec) { return f.call("GET", url, {}, {{"range", spec}}); };
  auto mid = range("bytes=5-9");
  CHECK(mid.status == 206);
  CHECK(drain(mid) == "56789");
  CHECK(header_of(mid, "Content-Range") == "bytes 5-9/20");
  auto tail = range("bytes=15-");
  CHECK(tail.status == 206);
  CHECK(drain(tail) == "fghij");
  auto suffix = range("bytes=-3");
  CHECK(drain(suffix) == "hij");
  CHECK(header_of(suffix, "Content-Range") == "bytes 17-19/20");
  auto past_end = range("bytes=18-1000");
  CHECK(drain(past_end) == "ij");
  auto huge_suffix = range("bytes=-1000");
  CHECK(huge_suffix.status == 206);
  CHECK(drain(huge_suffix) == content);

  auto outside = range("bytes=20-");
  CHECK(outside.status == 416);
  CHECK(header_of(outside, "Content-Range") == "bytes */20");
  CHECK(json::parse(outside.body)["error"]["code"] == "range_not_satisfiable");
  CHECK(range("bytes=-0").status == 416);

  // Ignored (RFC 9110 allows it): several ranges, other units, bad syntax.
  for (const char* ignored : {"bytes=0-1,4-5", "items=0-1", "bytes=x-y", "bytes=9-2"}) {
    auto whole = range(ignored);
    CHECK(whole.status == 200);
    CHECK(drain(whole) == content);
  }

  auto same = f.call("GET", url, {}, {{"range", "bytes=0-0"}, {"if-range", etag}});
  CHECK(same.status == 206);
  auto changed = f.call("GET", url, {}, {{"range", "bytes=0-0"}, {"if-range", "\"other\""}});
  CHECK(changed.status == 200);
  CHECK(drain(changed) == content);

  auto cached = f.call("GET", url, {}, {{"if-none-match", etag}});
  CHECK(cached.status == 304);
  CHECK_FALSE(cached.stream);
}

TEST_CASE("artifacts: unknown ids, archived projects, foreign tasks and no store") {
  fixture f;
  f.make_project("p1");
  f.make_project("p2");
  CHECK(f.expect(404, "GET", "/api/v1/artifacts/a-nope")["error"]["code"] == "not_found");
  CHECK(f.expect(404, "GET", "/api/v1/artifacts/a-nope/content")["error"]["code"] == "not_found");
  CHECK(f.expect(404, "PUT", "/api/v1/projects/nope/artifacts/x", "x")["error"]["code"] ==
        "not_found");
  CHECK(f.expect(404, "GET", "/api/v1/projects/p1/artifacts/x/versions")["error"]["code"] ==
        "not_found");
  CHECK(f.expect(405, "DELETE", "/api/v1/artifacts/a-nope")["error"]["code"] ==
        "method_not_allowed");

  auto task = f.expect(201, "POST", "/api/v1/projects/p2/tasks", R"({"kind":"noop"})");
  auto tid = task["id"].get<std::string>();
  CHECK(f.expect(400, "PUT", "/api/v1/projects/p1/artifacts/x?task=" + tid, "x")["error"]["code"] ==
        "invalid_argument");
  auto linked = f.expect(201, "PUT", "/api/v1/projects/p2/artifacts/x?task=" + tid, "x");
  CHECK(linked["task"] == tid);
  CHECK(f.expect(404, "PUT", "/api/v1/projects/p2/artifacts/x?task=t-nope", "x")["error"]["code"] ==
        "not_found");
  CHECK(f.expect(400, "PUT", "/api/v1/projects/p2/artifacts/x", "x",
                 {{"content-type", "text/plain\x01"}})["error"]["code"] == "invalid_argument");

  f.expect(200, "POST", "/api/v1/projects/p1/archive");
  CHECK(f.expect(409, "PUT", "/api/v1/projects/p1/artifacts/x", "x")["error"]["code"] ==
        "conflict");
  CHECK(count_artifacts(f, "p1") == 0);

  // An API without an artifact store says so.
  aise::server::api bare(f.orch, *f.auth.auth, aise::server::test::unlimited());
  auto res = bare.handle(
      request{"GET", "/api/v1/projects/p2/artifacts", {}, "", {{"authorization", f.auth.admin}}});
  CHECK(res.status == 503);
}

TEST_CASE("artifacts: the size limit refuses an upload and stores nothing") {
  fixture f(/*max_size=*/100);
  f.make_project("p1");
  auto over = f.expect(413, "PUT", "/api/v1/projects/p1/artifacts/big", std::string(101, 'x'));
  CHECK(over["error"]["code"] == "payload_too_large");
  CHECK(count_artifacts(f, "p1") == 0);
  // Told by Content-Length: refused before any body (begin_upload gives no sink).
  auto start =
      f.api.begin_upload(request{"PUT",
                                 "/api/v1/projects/p1/artifacts/big",
                                 {},
                                 "",
                                 {{"content-length", "101"}, {"authorization", f.auth.admin}}});
  CHECK_FALSE(start.sink);
  CHECK(start.refused.status == 413);
  CHECK(f.expect(201, "PUT", "/api/v1/projects/p1/artifacts/ok", std::string(100, 'x'))["size"] ==
        100);
}

// ---- through the HTTP server ----

struct raw_client {
  explicit raw_client(std::uint16_t port) : socket(ioc) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }
  http::response<http::string_body> receive() {
    http::response_parser<http::string_body> p;
    p.body_limit(std::numeric_limits<std::uint64_t>::max());
    http::read(socket, buffer, p);
    return p.release();
  }
  net::io_context ioc;
  tcp::socket socket;
  beast::flat_buffer buffer;
};

TEST_CASE("artifacts over HTTP: a 64 MiB upload and download stream, with a Range") {
  fixture f;
  f.make_project("p1");
  auto port = f.serve();
  const std::string content = random_bytes(64 * 1024 * 1024 + 123, 7);

  raw_client c(port);
  http::request<http::string_body> put{http::verb::put, "/api/v1/projects/p1/artifacts/blob.bin",
                                       11};
  put.set(http::field::host, "127.0.0.1");
  put.set(http::field::content_type, "application/x-test");
  put.set(http::field::authorization, f.auth.admin);
  put.body() = content;
  put.prepare_payload();
  http::write(c.socket, put);
  auto created = c.receive();
  INFO(created.body());
  REQUIRE(created.result_int() == 201);
  auto meta = json::parse(created.body());
  CHECK(meta["size"] == content.size());
  CHECK(meta["sha256"] == aise::sha256_hex(content));
  CHECK(created[http::field::location] == "/api/v1/artifacts/" + meta["id"].get<std::string>());

  // Same connection (keep-alive): download whole, then a range.
  auto url = "/api/v1/artifacts/" + meta["id"].get<std::string>() + "/content";
  http::request<http::empty_body> get{http::verb::get, url, 11};
  get.set(http::field::host, "127.0.0.1");
  get.set(http::field::authorization, f.auth.admin);
  http::write(c.socket, get);
  auto whole = c.receive();
  REQUIRE(whole.result_int() == 200);
  CHECK(whole[http::field::content_type] == "application/x-test");
  CHECK(whole.body().size() == content.size());
  CHECK(whole.body() == content);

  get.set(http::field::range, "bytes=1000000-1000009");
  http::write(c.socket, get);
  auto part = c.receive();
  CHECK(part.result_int() == 206);
  CHECK(part.body() == content.substr(1000000, 10));

  // Chunked upload (no Content-Length) of a second version.
  http::request<http::string_body> chunked{http::verb::put,
                                           "/api/v1/projects/p1/artifacts/blob.bin", 11};
  chunked.set(http::field::host, "127.0.0.1");
  chunked.set(http::field::authorization, f.auth.admin);
  chunked.chunked(true);
  chunked.body() = content.substr(0, 300000);
  http::write(c.socket, chunked);
  auto second = c.receive();
  REQUIRE(second.result_int() == 201);
  CHECK(json::parse(second.body())["version"] == 2);
  CHECK(json::parse(second.body())["size"] == 300000);
}

TEST_CASE(
    "artifacts over HTTP: over the limit gets 413 and leaves nothing; so does a cut-off upload") {
  fixture f;
  f.make_project("p1");
  auto port = f.serve(/*upload_limit=*/1024 * 1024);

  SUBCASE("Content-Length over the limit: refused before the body") {
    raw_client c(port);
    std::string head =
        "PUT /api/v1/projects/p1/artifacts/big HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 2000000\r\nExpect: 100-continue\r\nAuthorization: " +
        f.auth.admin + "\r\n\r\n";
    net::write(c.socket, net::buffer(head));
    auto res = c.receive();
    CHECK(res.result_int() == 413);
    CHECK(json::parse(res.body())["error"]["code"] == "payload_too_large");
  }
  SUBCASE("chunked past the limit: refused mid-body") {
    raw_client c(port);
    http::request<http::string_body> req{http::verb::put, "/api/v1/projects/p1/artifacts/big", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, f.auth.admin);
    req.chunked(true);
    req.body() = std::string(1024 * 1024 + 1, 'z');
    beast::error_code ec;
    http::write(c.socket, req, ec);  // the server may close before it all arrives
    auto res = c.receive();
    CHECK(res.result_int() == 413);
  }
  SUBCASE("the client disappears mid-body") {
    {
      raw_client c(port);
      std::string head =
          "PUT /api/v1/projects/p1/artifacts/cut HTTP/1.1\r\nHost: x\r\n"
          "Content-Length: 500000\r\nAuthorization: " +
          f.auth.admin + "\r\n\r\n" + std::string(200000, 'y');
      net::write(c.socket, net::buffer(head));
    }  // closed with 300,000 bytes missing
    // The server notices the end of stream, drops the writer, answers others.
    raw_client next(port);
    http::request<http::empty_body> get{http::verb::get, "/api/v1/projects/p1/artifacts", 11};
    get.set(http::field::host, "127.0.0.1");
    get.set(http::field::authorization, f.auth.admin);
    http::write(next.socket, get);
    CHECK(next.receive().result_int() == 200);
  }
  // Whatever happened, nothing became visible and no temporary file stays
  // behind for long (the writer is aborted off the socket thread).
  CHECK(count_artifacts(f, "p1") == 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!aise::test::files_under(f.dir.path() / "artifacts").empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(aise::test::files_under(f.dir.path() / "artifacts").empty());
}

// ---- agents ----

TEST_CASE("agents: spawn, get with snapshot, stop and restart") {
  fixture f;
  f.make_project("p1");
  auto spawned = f.expect(201, "POST", "/api/v1/agents",
                          R"({"kind":"idle","name":"worker-1","project":"p1","concurrency":2})");
  CHECK(spawned["name"] == "worker-1");
  CHECK(spawned["status"] == "running");
  CHECK(spawned["concurrency"] == 2);
  auto got = f.expect(200, "GET", "/api/v1/agents/worker-1");
  CHECK(got["kind"] == "idle");
  CHECK(got.contains("snapshot"));

  CHECK(f.expect(409, "POST", "/api/v1/agents",
                 R"({"kind":"idle","name":"worker-1"})")["error"]["code"] == "already_exists");
  CHECK(f.expect(400, "POST", "/api/v1/agents", R"({"kind":"nope"})")["error"]["code"] ==
        "invalid_argument");
  CHECK(f.expect(400, "POST", "/api/v1/agents", R"({"name":"x"})")["error"]["code"] ==
        "invalid_argument");
  CHECK(f.expect(400, "POST", "/api/v1/agents",
                 R"({"kind":"idle","concurrency":-1})")["error"]["code"] == "invalid_argument");
  CHECK(f.expect(404, "POST", "/api/v1/agents",
                 R"({"kind":"idle","project":"nope"})")["error"]["code"] == "not_found");

  auto restarted = f.expect(200, "POST", "/api/v1/agents/worker-1/restart");
  CHECK(restarted["name"] == "worker-1");
  // A restart completes asynchronously; stop it once it runs again (a stop
  // in between can find no agent: noted in server/README.md).
  auto running_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (f.call("GET", "/api/v1/agents/worker-1").status != 200 ||
         f.expect(200, "GET", "/api/v1/agents/worker-1")["status"] != "running") {
    if (std::chrono::steady_clock::now() > running_by) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto stopped = f.expect(200, "POST", "/api/v1/agents/worker-1/stop");
  CHECK((stopped["status"] == "stopping" || stopped["status"] == "stopped"));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (f.expect(200, "GET", "/api/v1/agents/worker-1")["status"] != "stopped" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(f.expect(200, "GET", "/api/v1/agents/worker-1")["status"] == "stopped");
  CHECK(f.expect(404, "POST", "/api/v1/agents/nope/stop")["error"]["code"] == "not_found");
  // Known but stopped: stopping again is no 404 (200, or 409 while no instance exists).
  auto again = f.call("POST", "/api/v1/agents/worker-1/stop");
  CHECK((again.status == 200 || again.status == 409));
  CHECK(f.expect(404, "POST", "/api/v1/agents/nope/restart")["error"]["code"] == "not_found");
}

}  // namespace
