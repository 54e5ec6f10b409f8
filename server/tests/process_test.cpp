// The aise-server executable itself: it starts on a SQLite file, serves,
// exits with status 0 on SIGTERM, and a restart on the same data directory
// finds what the first run stored (its users and its generated JWT key
// included); `create-admin` makes the first admin from a password on stdin.
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <spawn.h>
#include <string>
#include <sys/stat.h>
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

// The environment of this process plus `extra` ("NAME=value" entries).
std::vector<std::string> environment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    if (entry.rfind("AISE_", 0) == 0) continue;  // only what the test says
    env.push_back(std::move(entry));
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

pid_t start_server(std::uint16_t port, const std::string& data_dir,
                   const std::vector<std::string>& extra_env = {},
                   const std::vector<std::string>& extra_args = {}) {
  std::vector<std::string> args = {AISE_SERVER_EXE, "--listen", "127.0.0.1:" + std::to_string(port),
                                   "--data-dir", data_dir};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  auto argv = pointers(args);
  auto env_strings = environment(extra_env);
  auto envp = pointers(env_strings);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, AISE_SERVER_EXE, &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  return pid;
}

// One request on a fresh connection; nullopt while nobody listens.
std::optional<http::response<http::string_body>> call(std::uint16_t port, http::verb method,
                                                      const std::string& target,
                                                      const std::string& body = {},
                                                      const std::string& authorization = {}) {
  net::io_context ioc;
  tcp::socket socket(ioc);
  boost::system::error_code ec;
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return std::nullopt;
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!authorization.empty()) req.set(http::field::authorization, authorization);
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

// Logs in and returns "Bearer <access token>".
std::string login(std::uint16_t port, const std::string& user, const std::string& password) {
  auto res = call(port, http::verb::post, "/api/v1/auth/login",
                  nlohmann::json{{"username", user}, {"password", password}}.dump());
  REQUIRE(res);
  REQUIRE(res->result_int() == 200);
  return "Bearer " + nlohmann::json::parse(res->body())["access_token"].get<std::string>();
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
  const std::vector<std::string> env = {
      "AISE_ADMIN_USER=root", "AISE_ADMIN_PASSWORD=first-admin-password", "AISE_LOGIN_RATE=0"};

  auto port = free_port();
  pid_t first = start_server(port, data_dir, env);
  REQUIRE(wait_until_serving(port));
  auto anonymous = call(port, http::verb::get, "/api/v1/projects");
  REQUIRE(anonymous);
  CHECK(anonymous->result_int() == 401);
  auto bearer = login(port, "root", "first-admin-password");
  auto created =
      call(port, http::verb::post, "/api/v1/projects", R"({"id": "keep", "name": "K"})", bearer);
  REQUIRE(created);
  CHECK(created->result_int() == 201);
  auto task =
      call(port, http::verb::post, "/api/v1/projects/keep/tasks", R"({"kind": "later"})", bearer);
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

  // The generated key is private to its owner.
  struct stat key_stat {};
  REQUIRE(::stat((dir / "data" / "jwt.key").c_str(), &key_stat) == 0);
  CHECK((key_stat.st_mode & 0777) == 0600);

  // Restarted without the admin settings: the user, and the key (so the
  // token from before the restart), are still there.
  port = free_port();
  pid_t second = start_server(port, data_dir);
  REQUIRE(wait_until_serving(port));
  auto tasks = call(port, http::verb::get, "/api/v1/projects/keep/tasks", {}, bearer);
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

TEST_CASE("process: create-admin makes the first admin once, from a password on stdin") {
  auto dir = std::filesystem::temp_directory_path() /
             ("aise_server_create_admin_" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(dir);
  const std::string data_dir = (dir / "data").string();
  const std::string exe = AISE_SERVER_EXE;
  auto run = [&](const std::string& user, const std::string& password) {
    std::string command = "printf '%s\\n' '" + password + "' | '" + exe + "' create-admin --user " +
                          user + " --data-dir '" + data_dir + "' >/dev/null 2>&1";
    int status = std::system(command.c_str());  // NOLINT(concurrency-mt-unsafe)
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
  };
  CHECK(run("boss", "boss-password-1") == 0);
  CHECK(run("second", "second-password") == 1);  // one time only

  auto port = free_port();
  pid_t pid = start_server(port, data_dir, {"AISE_LOGIN_RATE=0"});
  REQUIRE(wait_until_serving(port));
  auto bearer = login(port, "boss", "boss-password-1");
  auto me = call(port, http::verb::get, "/api/v1/me", {}, bearer);
  REQUIRE(me);
  CHECK(me->result_int() == 200);
  CHECK(nlohmann::json::parse(me->body())["global_admin"] == true);
  auto wrong = call(port, http::verb::post, "/api/v1/auth/login",
                    R"({"username": "second", "password": "second-password"})");
  REQUIRE(wrong);
  CHECK(wrong->result_int() == 401);
  CHECK(stop_server(pid) == 0);

  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

namespace {

// The status of task `id`, or "" when it cannot be read.
std::string task_status(std::uint16_t port, const std::string& id, const std::string& bearer) {
  auto res = call(port, http::verb::get, "/api/v1/tasks/" + id, {}, bearer);
  if (!res || res->result_int() != 200) return {};
  return nlohmann::json::parse(res->body())["status"].get<std::string>();
}

bool wait_for_status(std::uint16_t port, const std::string& id, const std::string& status,
                     const std::string& bearer) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (task_status(port, id, bearer) == status) return true;
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
  const std::vector<std::string> env = {
      "AISE_ADMIN_USER=root", "AISE_ADMIN_PASSWORD=demo-admin-password", "AISE_LOGIN_RATE=0"};

  auto port = free_port();
  pid_t first = start_server(port, data_dir, env, {"--demo"});
  REQUIRE(wait_until_serving(port));
  auto bearer = login(port, "root", "demo-admin-password");
  REQUIRE(wait_for_status(port, "demo-merge", "awaiting_approval", bearer));
  CHECK(task_status(port, "demo-plan", bearer) == "succeeded");
  auto agents = call(port, http::verb::get, "/api/v1/agents?project=demo", {}, bearer);
  REQUIRE(agents);
  CHECK(nlohmann::json::parse(agents->body())["items"].size() == 5);
  CHECK(stop_server(first) == 0);

  // A restart finds the merge still waiting; approving it merges.
  port = free_port();
  pid_t second = start_server(port, data_dir, env, {"--demo"});
  REQUIRE(wait_until_serving(port));
  CHECK(task_status(port, "demo-merge", bearer) == "awaiting_approval");
  auto approved = call(port, http::verb::post, "/api/v1/tasks/demo-merge/approve", {}, bearer);
  REQUIRE(approved);
  CHECK(approved->result_int() == 200);
  REQUIRE(wait_for_status(port, "demo-merge", "succeeded", bearer));
  CHECK(std::filesystem::exists(dir / "data" / "demo-work" / "main" / "fib.cpp"));
  auto tasks = call(port, http::verb::get, "/api/v1/projects/demo/tasks", {}, bearer);
  REQUIRE(tasks);
  auto count = nlohmann::json::parse(tasks->body())["items"].size();
  CHECK(stop_server(second) == 0);

  // A third run submits nothing again.
  port = free_port();
  pid_t third = start_server(port, data_dir, env, {"--demo"});
  REQUIRE(wait_until_serving(port));
  auto again = call(port, http::verb::get, "/api/v1/projects/demo/tasks", {}, bearer);
  REQUIRE(again);
  CHECK(nlohmann::json::parse(again->body())["items"].size() == count);
  CHECK(task_status(port, "demo-merge", bearer) == "succeeded");
  CHECK(stop_server(third) == 0);

  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
