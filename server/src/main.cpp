// aise-server: the REST front end of libaise (server/README.md).
//
// Wiring only: configuration, the store, the auth store and authenticator
// (with the first admin from the configuration), a runtime and an
// orchestrator (recovering what a previous run left), the API and the HTTP
// server; then it waits for SIGTERM or SIGINT and stops gracefully.
// `aise-server create-admin --user NAME` instead creates the first admin
// with a password read from stdin, and exits.
#include <aise/artifacts.hpp>
#include <aise/auth.hpp>
#include <aise/metrics.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>
#include <aise/version.hpp>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fmt/core.h>
#include <fstream>
#include <iostream>
#include <optional>
#include <pthread.h>
#include <random>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <utility>

#include "api.hpp"
#include "config.hpp"
#include "demo.hpp"
#include "http_server.hpp"
#include "observe.hpp"

namespace {

bool make_data_dir(const aise::server::config& cfg) {
  std::error_code ec;
  std::filesystem::create_directories(cfg.data_dir, ec);
  if (ec) {
    fmt::print(stderr, "aise-server: cannot create {}: {}\n", cfg.data_dir, ec.message());
    return false;
  }
  return true;
}

// The auth store on the same database (a small pool of its own: requests
// read users at most once per second each, see auth_options) and the
// authenticator over it.
std::unique_ptr<aise::authenticator> open_auth(const aise::server::config& cfg) {
  aise::sql::store_options o;
  o.url = cfg.database_url();
  o.pool_size = std::max<std::size_t>(1, cfg.db_pool / 2);
  auto store = aise::sql::open_auth_store(o);
  if (!store) {
    fmt::print(stderr, "aise-server: cannot open the database: {}\n", store.error().describe());
    return nullptr;
  }
  auto secret = aise::server::load_jwt_secret(cfg);
  if (!secret) {
    fmt::print(stderr, "aise-server: {}\n", secret.error().message());
    return nullptr;
  }
  aise::auth_options ao;
  ao.jwt_secret = std::move(*secret);
  ao.issuer = cfg.jwt_issuer;
  ao.audience = cfg.jwt_audience;
  ao.access_ttl = cfg.access_token_ttl;
  ao.refresh_ttl = cfg.refresh_token_ttl;
  auto auth = aise::authenticator::make(*store, std::move(ao));
  if (!auth) {
    fmt::print(stderr, "aise-server: {}\n", auth.error().message());
    return nullptr;
  }
  return std::move(*auth);
}

// `aise-server create-admin --user NAME`: the first global admin, with the
// password on stdin (one line). Refuses when any user exists.
int create_admin(const aise::server::config& cfg) {
  if (cfg.db.empty() && !make_data_dir(cfg)) return 1;
  auto auth = open_auth(cfg);
  if (!auth) return 1;
  std::string password;
  std::getline(std::cin, password);
  while (!password.empty() && (password.back() == '\r' || password.back() == '\n')) {
    password.pop_back();
  }
  if (password.empty()) {
    fmt::print(stderr, "aise-server: create-admin reads the password from stdin; it was empty\n");
    return 1;
  }
  auto created = auth->create_first_admin(cfg.create_admin_user, password, {"", ""});
  if (!created) {
    fmt::print(stderr, "aise-server: {}\n", created.error().message());
    return 1;
  }
  if (!*created) {
    fmt::print(stderr,
               "aise-server: there are users already; create-admin only makes the first admin "
               "(a global admin creates others with POST /api/v1/users)\n");
    return 1;
  }
  fmt::print("created the global admin '{}'\n", cfg.create_admin_user);
  return 0;
}

// aise_db_pool_*: the SQL store's connection pool (nothing for other stores).
void add_pool_metrics(aise::metrics::registry& reg, std::shared_ptr<aise::store> store) {
  using aise::metrics::kind;
  using aise::metrics::sample;
  auto read = [store](auto field) {
    return [store, field]() -> std::vector<sample> {
      auto s = aise::sql::get_pool_stats(*store);
      if (!s) return {};
      return {{{}, field(*s)}};
    };
  };
  using stats = aise::sql::pool_stats;
  reg.collect("aise_db_pool_size", "SQL connections in the pool.", kind::gauge, {},
              read([](const stats& s) { return static_cast<double>(s.size); }));
  reg.collect("aise_db_pool_in_use", "SQL connections leased by a store call now.", kind::gauge, {},
              read([](const stats& s) { return static_cast<double>(s.in_use); }));
  reg.collect("aise_db_pool_waiting", "Store calls waiting for a free SQL connection now.",
              kind::gauge, {}, read([](const stats& s) { return static_cast<double>(s.waiting); }));
  reg.collect("aise_db_pool_acquisitions_total", "SQL connection leases handed out.", kind::counter,
              {}, read([](const stats& s) { return static_cast<double>(s.acquisitions); }));
  reg.collect("aise_db_pool_waits_total", "SQL connection leases that had to wait.", kind::counter,
              {}, read([](const stats& s) { return static_cast<double>(s.waits); }));
  reg.collect("aise_db_pool_wait_seconds_total", "Time spent waiting for SQL connections.",
              kind::counter, {}, read([](const stats& s) { return s.wait_seconds; }));
}

// 20 characters of [A-Za-z0-9] from the system's random source.
std::string random_password() {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::uniform_int_distribution<std::size_t> pick(0, sizeof(alphabet) - 2);
  std::string out;
  for (int i = 0; i < 20; ++i) out.push_back(alphabet[pick(rd)]);
  return out;
}

std::filesystem::path demo_login_file(const aise::server::config& cfg) {
  return std::filesystem::path(cfg.data_dir) / "demo-admin.txt";
}

// Writes `text` to a new file readable by its owner only.
bool write_private_file(const std::filesystem::path& path, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  return ::close(fd) == 0 && ok;
}

// "user password" from the demo's login file, if there is one.
std::optional<std::pair<std::string, std::string>> demo_login(const aise::server::config& cfg) {
  std::ifstream in(demo_login_file(cfg));
  std::string user;
  std::string password;
  if (!(in >> user >> password)) return std::nullopt;
  return std::make_pair(user, password);
}

int serve(const aise::server::config& cfg, const sigset_t& signals) {
  if (cfg.db.empty() && !make_data_dir(cfg)) return 1;
  aise::sql::store_options store_options;
  store_options.url = cfg.database_url();
  store_options.pool_size = cfg.db_pool;
  auto store = aise::sql::open_store(store_options);
  if (!store) {
    fmt::print(stderr, "aise-server: cannot open the database: {}\n", store.error().describe());
    return 1;
  }
  auto auth = open_auth(cfg);
  if (!auth) return 1;
  if (!cfg.admin_user.empty()) {
    auto password = aise::server::load_admin_password(cfg);
    if (!password || password->empty()) {
      fmt::print(stderr,
                 "aise-server: AISE_ADMIN_USER needs AISE_ADMIN_PASSWORD or "
                 "--admin-password-file{}\n",
                 password ? "" : ": " + password.error().message());
      return 1;
    }
    auto created = auth->create_first_admin(cfg.admin_user, *password, {"", ""});
    if (!created) {
      fmt::print(stderr, "aise-server: cannot create the first admin: {}\n",
                 created.error().message());
      return 1;
    }
    if (*created)
      fmt::print(stderr, "aise-server: created the global admin '{}'\n", cfg.admin_user);
  } else if (auto n = auth->store().count_users(); n && *n == 0 && cfg.demo) {
    // The demo on a fresh data directory: a global admin "admin" with a
    // random password, kept in DATA_DIR/demo-admin.txt (mode 0600) so the
    // login line below can show it on every start. Never a fixed password.
    auto password = random_password();
    auto created = auth->create_first_admin("admin", password, {"", ""});
    if (!created || !write_private_file(demo_login_file(cfg), "admin " + password + "\n")) {
      fmt::print(stderr, "aise-server: cannot create the demo admin\n");
      return 1;
    }
  } else if (n && *n == 0) {
    fmt::print(stderr,
               "aise-server: no user exists yet: run `aise-server create-admin --user NAME` or set "
               "AISE_ADMIN_USER and AISE_ADMIN_PASSWORD\n");
  }

  aise::runtime_options rt_options;
  rt_options.logger = aise::server::make_logger("aise", cfg.log);
  aise::runtime rt(rt_options);
  {
    aise::orchestrator_options orch_options;
    orch_options.store = *store;
    aise::orchestrator orch(rt, orch_options);
    if (cfg.demo) {
      if (auto kinds = aise::server::demo::register_kinds(orch); !kinds) {
        rt.logger().error("demo: {}", kinds.error().describe());
        return 1;
      }
    }
    auto recovered = orch.recover();
    if (!recovered) {
      rt.logger().error("recovery failed: {}", recovered.error().describe());
      return 1;
    }
    rt.logger().info("recovered {} unfinished tasks ({} lost attempts), {} agents",
                     recovered->tasks, recovered->lost_attempts, recovered->agents);

    aise::artifact_store_options artifact_options;
    artifact_options.root = cfg.artifact_root();
    artifact_options.metadata = *store;
    artifact_options.max_size = cfg.artifact_limit;
    auto artifacts = aise::open_artifact_store(artifact_options);
    if (!artifacts) {
      rt.logger().error("cannot open the artifact store: {}", artifacts.error().describe());
      return 1;
    }

    // Declared before the api and the server, which use it (destroyed after).
    aise::metrics::registry metrics;
    aise::metrics::add_orchestrator_metrics(metrics, orch);
    add_pool_metrics(metrics, *store);
    // Set below, before the server starts (so before any scrape).
    const aise::server::http_server* http = nullptr;
    metrics.gauge_fn(
        "aise_websocket_clients", "WebSocket clients connected to /api/v1/ws.",
        [&http] { return http ? static_cast<double>(http->websocket_clients()) : 0.0; });
    aise::server::observer observer(metrics, aise::server::make_logger("access", cfg.log), cfg.log);

    aise::server::api_options api_options;
    api_options.metrics = &metrics;
    api_options.ip_limit = {cfg.ip_rate, cfg.ip_burst};
    api_options.user_limit = {cfg.user_rate, cfg.user_burst};
    api_options.login_limit = {cfg.login_rate, cfg.login_burst};
    aise::server::api api(orch, *auth, api_options, *artifacts);
    aise::server::http_server_options http_options;
    http_options.host = cfg.host;
    http_options.port = cfg.port;
    http_options.body_limit = cfg.body_limit;
    http_options.read_timeout = cfg.read_timeout;
    http_options.io_threads = cfg.io_threads;
    http_options.handler_threads = cfg.handler_threads;
    http_options.tls_cert_file = cfg.tls_cert;
    http_options.tls_key_file = cfg.tls_key;
    http_options.uploads.upload_limit = cfg.artifact_limit;
    http_options.uploads.streams_body = [&api](const aise::server::request& head) {
      return api.streams_body(head);
    };
    http_options.uploads.begin_upload = [&api](const aise::server::request& head) {
      return api.begin_upload(head);
    };
    // /api/v1/ws: the same access tokens; a subject (user name) reads the
    // events of the projects where it has a role (all for a global admin).
    http_options.websocket.events = &orch;
    http_options.websocket.access.authenticate =
        [&auth](std::string_view token) -> aise::result<std::string> {
      auto who = auth->authenticate(token);
      if (!who) return who.error();
      return who->user.username;
    };
    http_options.websocket.access.may_read = [&auth](const std::string& username,
                                                     const std::string& project) {
      auto user = auth->store().find_user(username);
      if (!user || user->disabled) return false;
      if (user->global_admin) return true;
      auto roles = auth->store().roles_of(user->id);
      if (!roles) return false;
      auto it = roles->find(project);
      return it != roles->end() && it->second >= aise::project_role::viewer;
    };
    aise::server::http_server server(
        observer.wrap([&api](const aise::server::request& req) { return api.handle(req); }),
        http_options);
    http = &server;
    if (auto started = server.start(); !started) {
      rt.logger().error("{}", started.error().describe());
      return 1;
    }
    const char* scheme = cfg.tls_cert.empty() ? "http" : "https";
    rt.logger().info("aise-server {} listening on {}://{}:{} (store: {})", AISE_VERSION_STRING,
                     scheme, cfg.host, server.port(), (*store)->backend());
    if (cfg.demo) {
      auto demo =
          aise::server::demo::start(orch, std::filesystem::path(cfg.data_dir) / "demo-work");
      if (!demo) {
        rt.logger().error("demo: {}", demo.error().describe());
      } else {
        std::string base = fmt::format("{}://{}:{}", scheme, cfg.host, server.port());
        std::string login = "with your account";
        if (auto l = demo_login(cfg)) {
          login = fmt::format("as '{}' with password '{}' (kept in {})", l->first, l->second,
                              demo_login_file(cfg).string());
        }
        rt.logger().info("demo: {} the sample project '{}' (merge: {})",
                         demo->submitted ? "submitted" : "resumed", aise::server::demo::project_id,
                         demo->merge_state);
        fmt::print(stdout,
                   "\n  aise-server demo: open the dashboard at {}/ and log in {}.\n"
                   "  The team works the project '{}'; its merge waits for your Approve.\n"
                   "  API docs: {}/docs   metrics: {}/metrics   stop: Ctrl-C\n\n",
                   base, login, aise::server::demo::project_id, base, base);
        std::fflush(stdout);
      }
    }

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
  if (cfg->command == "create-admin") return create_admin(*cfg);
  // Blocked before any thread starts, so every thread inherits the mask and
  // only sigwait() in serve() receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return serve(*cfg, signals);
}
