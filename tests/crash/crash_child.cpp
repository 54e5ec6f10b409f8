// The process the crash-recovery test kills: an orchestrator on a SQLite
// store working through a DAG of tasks. Every start calls recover(); the
// first start (an empty store) also submits the work and spawns the agents,
// later starts get the agents back from the store through recover().
//
//   aise_crash_child <db path> <chains> <report file>
//
// Writes "restored <handled>" lines to the report file (what each worker
// agent got back from its snapshot) and exits 0 once every task is finished.

#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>
#include <string>
#include <thread>

namespace {

std::mutex report_mutex;
std::string report_path;

void report(const std::string& line) {
  std::lock_guard lock(report_mutex);
  std::ofstream out(report_path, std::ios::app);
  out << line << "\n";
}

// Doubles its input and adds its dependencies' results; counts what it
// handled in its state (saved after every task by the orchestrator).
class worker : public aise::agent {
 public:
  worker() {
    on_task("step", [this](aise::task_context& ctx) -> aise::result<nlohmann::json> {
      std::this_thread::sleep_for(std::chrono::milliseconds(25 + handled_ % 10));
      long long sum = 2LL * ctx.payload().value("n", 0LL);
      for (const auto& [id, r] : ctx.dependency_results()) sum += r.get<long long>();
      ++handled_;
      return sum;
    });
  }
  [[nodiscard]] nlohmann::json snapshot() const override { return {{"handled", handled_}}; }
  void restore(const nlohmann::json& state) override {
    handled_ = state.value("handled", 0LL);
    report(fmt::format("restored {} {}", name(), handled_));
  }

 private:
  long long handled_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: aise_crash_child <db path> <chains> <report file>\n");
    return 2;
  }
  const std::string db = argv[1];
  const int chains = std::atoi(argv[2]);
  report_path = argv[3];

  aise::sql::store_options so;
  so.url = "sqlite:" + db;
  so.sqlite_synchronous = "NORMAL";  // WAL + NORMAL: durable across process crashes
  auto store = aise::sql::open_store(so);
  if (!store) {
    std::fprintf(stderr, "crash_child: %s\n", store.error().describe().c_str());
    return 1;
  }
  aise::runtime_options ro;
  ro.threads = 2;
  ro.logger =
      std::make_shared<spdlog::logger>("crash", std::make_shared<spdlog::sinks::null_sink_mt>());
  aise::runtime rt(ro);
  aise::orchestrator_options oo;
  oo.store = *store;
  oo.retry_initial_backoff = std::chrono::milliseconds(2);
  oo.retry_max_backoff = std::chrono::milliseconds(20);
  aise::orchestrator orch(rt, oo);
  if (!orch.register_kind("worker", [] { return std::make_unique<worker>(); })) return 1;

  auto recovered = orch.recover();
  if (!recovered) {
    std::fprintf(stderr, "crash_child: recover: %s\n", recovered.error().describe().c_str());
    return 1;
  }
  report(fmt::format("recovered tasks={} lost={} agents={}", recovered->tasks,
                     recovered->lost_attempts, recovered->agents));

  // First start: no tasks yet. Spawn the agents and submit the work.
  auto any = (*store)->list_tasks({.limit = 1});
  if (!any) return 1;
  if (any->items.empty()) {
    for (const char* name : {"w1", "w2"}) {
      if (!orch.spawn({.kind = "worker", .name = name, .concurrency = 2})) return 1;
    }
    std::vector<aise::task_spec> specs;
    for (int c = 0; c < chains; ++c) {
      for (int step = 0; step < 3; ++step) {
        aise::task_spec s;
        s.id = fmt::format("c{:03}-{}", c, step);
        s.kind = "step";
        s.payload = {{"n", c * 10 + step}};
        s.max_attempts = 40;
        if (step > 0) s.depends_on.push_back(fmt::format("c{:03}-{}", c, step - 1));
        specs.push_back(std::move(s));
      }
    }
    if (auto ids = orch.submit_all(std::move(specs)); !ids) {
      std::fprintf(stderr, "crash_child: submit: %s\n", ids.error().describe().c_str());
      return 1;
    }
    report("submitted");
  }
  // Until nothing is unfinished.
  for (;;) {
    aise::task_filter f;
    f.states = {aise::task_state::pending, aise::task_state::queued, aise::task_state::running,
                aise::task_state::retrying, aise::task_state::awaiting_approval};
    f.limit = 1;
    auto open = (*store)->list_tasks(f);
    if (open && open->items.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  report("done");
  return 0;
}
