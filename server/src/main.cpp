// aise-server: the REST front end of libaise (server/README.md).
//
// Wiring only: configuration, the store, a runtime and an orchestrator on
// it (recovering what a previous run left), the API and the HTTP server;
// then it waits for SIGTERM or SIGINT and stops gracefully.
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>
#include <aise/version.hpp>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fmt/core.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include "api.hpp"
#include "config.hpp"
#include "http_server.hpp"

namespace {

int serve(const aise::server::config& cfg, const sigset_t& signals) {
  if (cfg.db.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(cfg.data_dir, ec);
    if (ec) {
      fmt::print(stderr, "aise-server: cannot create {}: {}\n", cfg.data_dir, ec.message());
      return 1;
    }
  }
  aise::sql::store_options store_options;
  store_options.url = cfg.database_url();
  store_options.pool_size = cfg.db_pool;
  auto store = aise::sql::open_store(store_options);
  if (!store) {
    fmt::print(stderr, "aise-server: cannot open the database: {}\n", store.error().describe());
    return 1;
  }

  aise::runtime rt;
  {
    aise::orchestrator_options orch_options;
    orch_options.store = *store;
    aise::orchestrator orch(rt, orch_options);
    auto recovered = orch.recover();
    if (!recovered) {
      rt.logger().error("recovery failed: {}", recovered.error().describe());
      return 1;
    }
    rt.logger().info("recovered {} unfinished tasks ({} lost attempts), {} agents",
                     recovered->tasks, recovered->lost_attempts, recovered->agents);

    aise::server::api api(orch);
    aise::server::http_server_options http_options;
    http_options.host = cfg.host;
    http_options.port = cfg.port;
    http_options.body_limit = cfg.body_limit;
    http_options.read_timeout = cfg.read_timeout;
    http_options.io_threads = cfg.io_threads;
    http_options.handler_threads = cfg.handler_threads;
    http_options.websocket.events = &orch;  // /api/v1/ws (no authentication yet)
    aise::server::http_server server(
        [&api](const aise::server::request& req) { return api.handle(req); }, http_options);
    if (auto started = server.start(); !started) {
      rt.logger().error("{}", started.error().describe());
      return 1;
    }
    rt.logger().info("aise-server {} listening on http://{}:{} (store: {})", AISE_VERSION_STRING,
                     cfg.host, server.port(), (*store)->backend());

    int sig = 0;
    sigwait(&signals, &sig);
    rt.logger().info("signal {}: stopping (in-flight requests get {} s)", sig,
                     cfg.shutdown_timeout.count());
    server.stop();
    if (!server.wait(cfg.shutdown_timeout)) {
      rt.logger().warn("closed connections still busy after the grace period");
    }
  }
  if (auto stopped = rt.shutdown(); !stopped) {
    rt.logger().warn("runtime shutdown: {}", stopped.error().describe());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto cfg = aise::server::parse_config(args, [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): before any thread
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
  if (!cfg) {
    fmt::print(stderr, "aise-server: {}\n", cfg.error().message());
    return 2;
  }
  if (cfg->help) {
    fmt::print("{}", aise::server::usage());
    return 0;
  }
  if (cfg->version) {
    fmt::print("aise-server {}\n", AISE_VERSION_STRING);
    return 0;
  }
  // Blocked before any thread starts, so every thread inherits the mask and
  // only sigwait() in serve() receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return serve(*cfg, signals);
}
