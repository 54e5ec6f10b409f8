// The aise-server executable itself: it starts on a SQLite file, serves,
// exits with status 0 on SIGTERM, and a restart on the same data directory
// finds what the first run stored.
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <csignal>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::uint16_t free_port() {
  net::io_context ioc;
  tcp::acceptor a(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

pid_t start_server(std::uint16_t port, const std::string& data_dir) {
  std::vector<std::string> args = {AISE_SERVER_EXE, "--listen", "127.0.0.1:" + std::to_string(port),
                                   "--data-dir", data_dir};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, AISE_SERVER_EXE, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  return pid;
}

// One request on a fresh connection; nullopt while nobody listens.
std::optional<http::response<http::string_body>> call(std::uint16_t port, http::verb method,
                                                      const std::string& target,
                                                      const std::string& body = {}) {
  net::io_context ioc;
  tcp::socket socket(ioc);
  boost::system::error_code ec;
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return std::nullopt;
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.body() = body;
  req.prepare_payload();
  http::write(socket, req);
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(socket, buffer, res);
  return res;
}

// Waits (with a deadline, polling) until the server answers /healthz.
bool wait_until_serving(std::uint16_t port) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto res = call(port, http::verb::get, "/healthz"); res && res->result_int() == 200) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

int stop_server(pid_t pid) {
  REQUIRE(kill(pid, SIGTERM) == 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("process: aise-server serves, exits 0 on SIGTERM, and keeps its state") {
  auto dir = std::filesystem::temp_directory_path() /
             ("aise_server_process_" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  const std::string data_dir = (dir / "data").string();

  auto port = free_port();
  pid_t first = start_server(port, data_dir);
  REQUIRE(wait_until_serving(port));
  auto created = call(port, http::verb::post, "/api/v1/projects", R"({"id": "keep", "name": "K"})");
  REQUIRE(created);
  CHECK(created->result_int() == 201);
  auto task = call(port, http::verb::post, "/api/v1/projects/keep/tasks", R"({"kind": "later"})");
  REQUIRE(task);
  CHECK(task->result_int() == 201);
  auto ready = call(port, http::verb::get, "/readyz");
  REQUIRE(ready);
  CHECK(nlohmann::json::parse(ready->body())["store"] == "sqlite");
  // The wiring of main.cpp: store, orchestrator and SQL pool metrics; the docs page.
  auto metrics = call(port, http::verb::get, "/metrics");
  REQUIRE(metrics);
  CHECK(metrics->result_int() == 200);
  CHECK(metrics->body().find("\naise_db_pool_size 4\n") != std::string::npos);
  CHECK(metrics->body().find("\naise_tasks{state=\"queued\"} 1\n") != std::string::npos);
  CHECK(metrics->body().find("\naise_store_up 1\n") != std::string::npos);
  CHECK(metrics->body().find(
            R"(aise_http_requests_total{method="POST",route="/api/v1/projects",status="201"} 1)") !=
        std::string::npos);
  CHECK((*metrics)["X-Request-Id"].size() == 32);
  auto docs = call(port, http::verb::get, "/docs");
  REQUIRE(docs);
  CHECK(docs->result_int() == 200);
  CHECK((*docs)[http::field::content_type] == "text/html; charset=utf-8");
  CHECK(stop_server(first) == 0);

  port = free_port();
  pid_t second = start_server(port, data_dir);
  REQUIRE(wait_until_serving(port));
  auto tasks = call(port, http::verb::get, "/api/v1/projects/keep/tasks");
  REQUIRE(tasks);
  CHECK(tasks->result_int() == 200);
  auto items = nlohmann::json::parse(tasks->body())["items"];
  REQUIRE(items.size() == 1);
  CHECK(items[0]["kind"] == "later");
  CHECK(items[0]["status"] == "queued");  // recovered: still waiting for an agent
  CHECK(stop_server(second) == 0);

  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
