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

pid_t start_server(std::uint16_t port, const std::string& data_dir,
                   std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {AISE_SERVER_EXE, "--listen", "127.0.0.1:" + std::to_string(port),
                                   "--data-dir", data_dir};
  args.insert(args.end(), extra.begin(), extra.end());
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

namespace {

// The status of task `id`, or "" when it cannot be read.
std::string task_status(std::uint16_t port, const std::string& id) {
  auto res = call(port, http::verb::get, "/api/v1/tasks/" + id);
  if (!res || res->result_int() != 200) return {};
  return nlohmann::json::parse(res->body())["status"].get<std::string>();
}

bool wait_for_status(std::uint16_t port, const std::string& id, const std::string& status) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (task_status(port, id) == status) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace

TEST_CASE("process: --demo runs the team on the sample project, waits for approval, resumes") {
  auto dir = std::filesystem::temp_directory_path() /
             ("aise_server_demo_" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  const std::string data_dir = (dir / "data").string();

  auto port = free_port();
  pid_t first = start_server(port, data_dir, {"--demo"});
  REQUIRE(wait_until_serving(port));
  REQUIRE(wait_for_status(port, "demo-merge", "awaiting_approval"));
  CHECK(task_status(port, "demo-plan") == "succeeded");
  auto agents = call(port, http::verb::get, "/api/v1/agents?project=demo");
  REQUIRE(agents);
  CHECK(nlohmann::json::parse(agents->body())["items"].size() == 5);
  CHECK(stop_server(first) == 0);

  // A restart finds the merge still waiting; approving it merges.
  port = free_port();
  pid_t second = start_server(port, data_dir, {"--demo"});
  REQUIRE(wait_until_serving(port));
  CHECK(task_status(port, "demo-merge") == "awaiting_approval");
  auto approved = call(port, http::verb::post, "/api/v1/tasks/demo-merge/approve");
  REQUIRE(approved);
  CHECK(approved->result_int() == 200);
  REQUIRE(wait_for_status(port, "demo-merge", "succeeded"));
  CHECK(std::filesystem::exists(dir / "data" / "demo-work" / "main" / "fib.cpp"));
  auto tasks = call(port, http::verb::get, "/api/v1/projects/demo/tasks");
  REQUIRE(tasks);
  auto count = nlohmann::json::parse(tasks->body())["items"].size();
  CHECK(stop_server(second) == 0);

  // A third run submits nothing again.
  port = free_port();
  pid_t third = start_server(port, data_dir, {"--demo"});
  REQUIRE(wait_until_serving(port));
  auto again = call(port, http::verb::get, "/api/v1/projects/demo/tasks");
  REQUIRE(again);
  CHECK(nlohmann::json::parse(again->body())["items"].size() == count);
  CHECK(task_status(port, "demo-merge") == "succeeded");
  CHECK(stop_server(third) == 0);

  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
