// aise-worker: runs task attempts handed over by orchestrators through
// RabbitMQ, with leases in a shared SQL store (docs/distribution.md).
//
//   aise-worker --db <url> --amqp <url> [--agents echo:4,sleep:2] [options]
//
// Built-in kinds (tasks of the same kind name):
//   echo   returns {"echo": <payload>, "worker": <worker id>}
//   sleep  waits payload.ms milliseconds (cancellable), returns {"slept_ms": n}
//   fail   fails with payload.message (retryable unless payload.final is true)
// Your own kinds: build a main around aise::worker (include/aise/worker.hpp);
// docs/distribution.md shows one in twenty lines.
//
// SIGTERM or SIGINT: stops taking tasks, lets running ones finish for
// --grace-ms, releases the rest (they are retried elsewhere at once), exits
// 0. Exit status 1: the database or broker was unreachable at start; 2: a
// usage error.

#include <aise/rabbitmq.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>
#include <aise/version.hpp>
#include <aise/worker.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <map>
#include <spdlog/spdlog.h>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

void usage(std::FILE* out) {
  std::fputs(
      "usage: aise-worker --db <url> --amqp <url> [options]\n"
      "\n"
      "  --db <url>          the orchestrator's store: postgresql://... (or sqlite:<path> on one\n"
      "                      machine); default: AISE_DB\n"
      "  --amqp <url>        amqp://user:password@host:port/vhost; default: AISE_AMQP\n"
      "  --prefix <p>        RabbitMQ name prefix shared with the orchestrator (default aise.)\n"
      "  --agents <list>     kind:count[:concurrency],... of the built-in kinds echo, sleep,\n"
      "                      fail (default echo:2)\n"
      "  --id <id>           lease owner name, unique among live workers (default host-pid)\n"
      "  --lease-ttl-ms <n>  lease lifetime without a heartbeat (default 30000)\n"
      "  --heartbeat-ms <n>  lease renewal period, below ttl/2 (default 10000)\n"
      "  --grace-ms <n>      on SIGTERM, how long running attempts may finish (default 30000)\n"
      "  --prefetch <n>      unacknowledged deliveries (default: twice the agent slots)\n"
      "  --store-threads <n> threads writing leases and reporting outcomes (default 8)\n"
      "  --help, --version\n",
      out);
}

std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
  g_signal.store(sig);
}

class echo_agent : public aise::agent {
 public:
  explicit echo_agent(std::string worker) {
    on_task("echo",
            [worker = std::move(worker)](aise::task_context& ctx) -> aise::result<nlohmann::json> {
              return nlohmann::json{{"echo", ctx.payload()}, {"worker", worker}};
            });
  }
};

class sleep_agent : public aise::agent {
 public:
  sleep_agent() {
    on_task("sleep", [](aise::task_context& ctx) -> aise::result<nlohmann::json> {
      const auto ms = ctx.payload().value("ms", 0LL);
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
      while (std::chrono::steady_clock::now() < until) {
        if (ctx.cancelled()) return aise::error(aise::errc::cancelled, "sleep cancelled");
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return nlohmann::json{{"slept_ms", ms}};
    });
  }
};

class fail_agent : public aise::agent {
 public:
  fail_agent() {
    on_task("fail", [](aise::task_context& ctx) -> aise::result<nlohmann::json> {
      const std::string message = ctx.payload().value("message", std::string("asked to fail"));
      (void)ctx.fail(aise::error(aise::errc::handler_failed, message),
                     !ctx.payload().value("final", false));
      return nlohmann::json(nullptr);
    });
  }
};

struct agents_spec {
  std::string kind;
  std::size_t count = 1;
  std::size_t concurrency = 1;
};

bool parse_agents(std::string_view text, std::vector<agents_spec>& out) {
  while (!text.empty()) {
    const auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    agents_spec s;
    std::vector<std::string> parts;
    while (!item.empty()) {
      const auto colon = item.find(':');
      parts.emplace_back(item.substr(0, colon));
      item = colon == std::string_view::npos ? std::string_view() : item.substr(colon + 1);
    }
    if (parts.empty() || parts.size() > 3) return false;
    s.kind = parts[0];
    try {
      if (parts.size() > 1) s.count = std::stoul(parts[1]);
      if (parts.size() > 2) s.concurrency = std::stoul(parts[2]);
    } catch (const std::exception&) {
      return false;
    }
    if (s.count == 0 || s.concurrency == 0) return false;
    out.push_back(std::move(s));
  }
  return !out.empty();
}

}  // namespace

int main(int argc, char** argv) {
  std::string db = std::getenv("AISE_DB") != nullptr ? std::getenv("AISE_DB") : "";
  std::string amqp = std::getenv("AISE_AMQP") != nullptr ? std::getenv("AISE_AMQP") : "";
  std::string prefix = "aise.";
  std::string agents_text = "echo:2";
  std::string id;
  long long ttl_ms = 30000;
  long long heartbeat_ms = 10000;
  long long grace_ms = 30000;
  long long prefetch = 0;
  long long store_threads = 8;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    }
    if (arg == "--version") {
      fmt::print("aise-worker {}\n", AISE_VERSION_STRING);
      return 0;
    }
    if (i + 1 >= argc) {
      fmt::print(stderr, "aise-worker: {} needs a value (or is unknown)\n", arg);
      usage(stderr);
      return 2;
    }
    const std::string value = argv[++i];
    try {
      if (arg == "--db") {
        db = value;
      } else if (arg == "--amqp") {
        amqp = value;
      } else if (arg == "--prefix") {
        prefix = value;
      } else if (arg == "--agents") {
        agents_text = value;
      } else if (arg == "--id") {
        id = value;
      } else if (arg == "--lease-ttl-ms") {
        ttl_ms = std::stoll(value);
      } else if (arg == "--heartbeat-ms") {
        heartbeat_ms = std::stoll(value);
      } else if (arg == "--grace-ms") {
        grace_ms = std::stoll(value);
      } else if (arg == "--prefetch") {
        prefetch = std::stoll(value);
      } else if (arg == "--store-threads") {
        store_threads = std::stoll(value);
      } else {
        fmt::print(stderr, "aise-worker: unknown option '{}'\n", arg);
        usage(stderr);
        return 2;
      }
    } catch (const std::exception&) {
      fmt::print(stderr, "aise-worker: {} needs a number, not '{}'\n", arg, value);
      return 2;
    }
  }
  if (db.empty() || amqp.empty()) {
    std::fputs("aise-worker: --db and --amqp are required (or AISE_DB and AISE_AMQP)\n", stderr);
    return 2;
  }
  std::vector<agents_spec> specs;
  if (!parse_agents(agents_text, specs)) {
    fmt::print(stderr, "aise-worker: --agents '{}': expected kind:count[:concurrency],...\n",
               agents_text);
    return 2;
  }
  if (ttl_ms <= 0 || heartbeat_ms <= 0 || heartbeat_ms * 2 >= ttl_ms || grace_ms < 0 ||
      prefetch < 0 || store_threads < 1 || store_threads > 256) {
    std::fputs(
        "aise-worker: need 0 < --heartbeat-ms < --lease-ttl-ms / 2, --grace-ms >= 0, "
        "--prefetch >= 0, 1 <= --store-threads <= 256\n",
        stderr);
    return 2;
  }

  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);

  aise::sql::store_options so;
  so.url = db;
  so.pool_size = static_cast<std::size_t>(store_threads) + 2;
  auto store = aise::sql::open_store(so);
  if (!store) {
    fmt::print(stderr, "aise-worker: database: {}\n", store.error().message());
    return 1;
  }
  aise::rabbitmq_task_options to;
  to.connection.url = amqp;
  to.connection.prefix = prefix;
  to.connection.connection_name = "aise-worker";
  auto source = aise::make_rabbitmq_task_source(to);
  if (!source) {
    fmt::print(stderr, "aise-worker: broker: {}\n", source.error().message());
    return 1;
  }

  aise::runtime rt;
  aise::worker_options wo;
  wo.id = id;
  wo.store = *store;
  wo.source = *source;
  wo.lease_ttl = std::chrono::milliseconds(ttl_ms);
  wo.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  wo.prefetch = static_cast<std::size_t>(prefetch);
  wo.store_threads = static_cast<std::size_t>(store_threads);
  aise::worker w(rt, wo);
  const std::string worker_id = w.id();
  const std::map<std::string, aise::agent_factory> builtin = {
      {"echo", [worker_id] { return std::make_unique<echo_agent>(worker_id); }},
      {"sleep", [] { return std::make_unique<sleep_agent>(); }},
      {"fail", [] { return std::make_unique<fail_agent>(); }},
  };
  for (const auto& s : specs) {
    auto f = builtin.find(s.kind);
    if (f == builtin.end()) {
      fmt::print(stderr, "aise-worker: no built-in kind '{}' (echo, sleep, fail)\n", s.kind);
      return 2;
    }
    if (auto r = w.add_agents(s.kind, f->second, s.count, s.concurrency); !r) {
      fmt::print(stderr, "aise-worker: {}\n", r.error().message());
      return 2;
    }
  }
  if (auto r = w.start(); !r) {
    fmt::print(stderr, "aise-worker: {}\n", r.error().message());
    return 1;
  }
  spdlog::info("aise-worker {} consuming {} (db {}, broker {})", worker_id,
               fmt::join(w.capabilities(), ","), db.substr(0, db.find(':')), prefix);
  while (g_signal.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  spdlog::info("aise-worker {}: signal {}, stopping (grace {} ms)", worker_id, g_signal.load(),
               grace_ms);
  w.stop(std::chrono::milliseconds(grace_ms));
  const auto s = w.stats();
  spdlog::info("aise-worker {}: leased {}, succeeded {}, failed {}, lost {}, released {}",
               worker_id, s.leased, s.succeeded, s.failed, s.lost, s.released);
  return 0;
}
