// libaise engine benchmarks, defined to match the CAF peer
// (shared/peers/caf/caf_pingpong.cpp) and the NeoGraph peer workloads, so
// both sides can run in the same run on the same machine (bench/run.sh).
//
// Usage: aise_bench [--threads N] <workload> [args]
//   pingpong <pairs> [total_round_trips=2000000]
//       P pairs of agents; ping sends int 0, pong answers n with n + 1, ping
//       sends n again while n < N = total/P. Each message is a full libaise
//       message (type, sender, recipient, id, created_at, JSON payload)
//       through the in-process transport into a bounded mailbox.
//       Metric: msgs_per_s = 2 N P / seconds.
//   request_reply_latency [requests=200000] [warmup=20000]
//       One client agent, one server agent answering requests (agent::request
//       with a deadline → on_request handler → reply). Closed loop, one
//       outstanding request. Metrics: p50_us, p99_us, p999_us, mean_us.
//   fanout_fanin [rounds=200000] [warmup=10000] [workers=5]
//       A coordinator sends the round number to K workers and counts K
//       replies; metric us_per_round (mean), p50_us, p99_us.
//   chain3 [runs=100000] [warmup=2000]
//       Orchestrator engine overhead: a DAG a → b → c of three tasks, each
//       handled by an agent that returns its input + 1 from the dependency's
//       result, submitted with submit_all and run to completion, one run at a
//       time, on a runtime driven by this thread (host io_context, in-memory
//       store keeping the last 1,000 finished tasks and 10,000 events, every
//       state change stored and numbered). Metric: us_per_run.
//   chain3_keep_all [runs=100000] [warmup=2000]
//       The same with a store that keeps everything (memory grows per run).
//   fanout5 [runs=50000] [warmup=1000]
//       The same with five independent tasks and a join task depending on all
//       five (the NeoGraph "par" shape). Metric: us_per_run.
// Prints one JSON line on stdout. Every wait has a deadline (120 s).

#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <mutex>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bench_cpu.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
constexpr auto wait_deadline = std::chrono::seconds(120);

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "aise_bench: %s\n", what.c_str());
  std::exit(1);
}

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU used by other processes while a workload ran, as a percent of all
// cores (the same measure as the peers' other_cpu_pct).
struct cpu_snapshot {
  long long busy = 0;
  long long total = 0;
  double own = 0;
};

cpu_snapshot take_cpu() {
  cpu_snapshot s;
  aise::bench::system_ticks ticks;
  if (!aise::bench::read_system_ticks(ticks)) fail("cannot read /proc/stat");
  s.busy = ticks.busy;
  s.total = ticks.total;
  s.own = aise::bench::process_cpu_seconds(false);
  return s;
}

double other_cpu_pct(const cpu_snapshot& a, const cpu_snapshot& b) {
  const double tick = aise::bench::ticks_per_second();
  const double total = static_cast<double>(b.total - a.total) / tick;
  const double others = static_cast<double>(b.busy - a.busy) / tick - (b.own - a.own);
  return total > 0 ? std::max(0.0, 100.0 * others / total) : 0.0;
}

double percentile_us(const std::vector<std::int64_t>& sorted, double q) {
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::max<std::size_t>(rank, 1) - 1]) / 1000.0;
}

double mean_us(const std::vector<std::int64_t>& v) {
  double sum = 0;
  for (auto x : v) sum += static_cast<double>(x);
  return sum / static_cast<double>(v.size()) / 1000.0;
}

std::shared_ptr<spdlog::logger> quiet_logger() {
  return std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
}

// The main thread blocks here until `count` agents reported done.
class done_latch {
 public:
  explicit done_latch(int count) : remaining_(count) {}
  void count_down() {
    std::lock_guard lock(mutex_);
    if (--remaining_ == 0) cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, wait_deadline, [&] { return remaining_ == 0; })) {
      fail("timed out waiting for agents");
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int remaining_;
};

// ---- message workloads -------------------------------------------------------

class pong_agent : public aise::agent {
 public:
  pong_agent() {
    on("n",
       [this](const aise::message& m) { (void)send(m.sender, "n", m.payload.get<int>() + 1); });
  }
};

class ping_agent : public aise::agent {
 public:
  ping_agent(std::string pong, int round_trips, done_latch& done)
      : pong_(std::move(pong)), round_trips_(round_trips), done_(done) {
    on("start", [this](const aise::message&) { (void)send(pong_, "n", 0); });
    on("n", [this](const aise::message& m) {
      const int n = m.payload.get<int>();
      if (n < round_trips_) {
        (void)send(pong_, "n", n);
      } else {
        done_.count_down();
      }
    });
  }

 private:
  std::string pong_;
  int round_trips_;
  done_latch& done_;
};

aise::runtime_options options(std::size_t threads) {
  aise::runtime_options o;
  o.threads = threads;
  o.logger = quiet_logger();
  return o;
}

std::string run_pingpong(std::size_t threads, int pairs, long total) {
  const int round_trips = static_cast<int>(total / pairs);
  aise::runtime rt(options(threads));
  done_latch done(pairs);
  for (int i = 0; i < pairs; ++i) {
    const std::string pong = fmt::format("pong-{}", i);
    if (!rt.spawn<pong_agent>({.name = pong})) fail("spawn pong");
    if (!rt.spawn<ping_agent>({.name = fmt::format("ping-{}", i)}, pong, round_trips, done)) {
      fail("spawn ping");
    }
  }
  // Let every agent run on_start before the clock starts.
  for (int i = 0; i < pairs; ++i)
    (void)rt.call(fmt::format("ping-{}", i), "warm", nullptr, wait_deadline);
  const auto cpu0 = take_cpu();
  const auto t0 = clock_type::now();
  for (int i = 0; i < pairs; ++i) {
    if (!rt.send(fmt::format("ping-{}", i), "start")) fail("start");
  }
  done.wait();
  const double secs = seconds_between(t0, clock_type::now());
  const auto cpu1 = take_cpu();
  const double messages = 2.0 * round_trips * pairs;
  (void)rt.shutdown(aise::shutdown_mode::cancel, std::chrono::seconds(10));
  return fmt::format(
      R"("workload":"pingpong","pairs":{},"round_trips_per_pair":{},"messages":{:.0f},)"
      R"("metrics":{{"msgs_per_s":{:.0f},"seconds":{:.3f},"other_cpu_pct":{:.1f}}})",
      pairs, round_trips, messages, messages / secs, secs, other_cpu_pct(cpu0, cpu1));
}

// Starts a measured workload by sending "start" to `agent`, waits for the
// agents' "done", stops the runtime, and returns other_cpu_pct of that span.
double run_to_done(aise::runtime& rt, const std::string& agent, done_latch& done) {
  const auto cpu0 = take_cpu();
  if (!rt.send(agent, "start")) fail("start " + agent);
  done.wait();
  const auto cpu1 = take_cpu();
  (void)rt.shutdown(aise::shutdown_mode::cancel, std::chrono::seconds(10));
  return other_cpu_pct(cpu0, cpu1);
}

class server_agent : public aise::agent {
 public:
  server_agent() {
    on_request("inc", [](const aise::message& m) -> aise::result<nlohmann::json> {
      return m.payload.get<int>() + 1;
    });
  }
};

class latency_client : public aise::agent {
 public:
  latency_client(int warmup, int total, std::vector<std::int64_t>& samples, done_latch& done)
      : warmup_(warmup), total_(total), samples_(samples), done_(done) {
    on("start", [this](const aise::message&) { next(0); });
  }

 private:
  void next(int index) {
    const auto sent = clock_type::now();
    request(
        "server", "inc", index, std::chrono::seconds(60),
        [this, index, sent](aise::result<aise::message> r) {
          const auto rtt = clock_type::now() - sent;
          if (!r) fail("request failed: " + r.error().describe());
          if (index >= warmup_) {
            samples_.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(rtt).count());
          }
          if (index + 1 < total_) {
            next(index + 1);
          } else {
            done_.count_down();
          }
        });
  }
  int warmup_;
  int total_;
  std::vector<std::int64_t>& samples_;
  done_latch& done_;
};

std::string run_request_reply(std::size_t threads, int requests, int warmup) {
  aise::runtime rt(options(threads));
  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(requests));
  done_latch done(1);
  if (!rt.spawn<server_agent>({.name = "server"})) fail("spawn server");
  if (!rt.spawn<latency_client>({.name = "client"}, warmup, warmup + requests, samples, done)) {
    fail("spawn client");
  }
  const double other_cpu = run_to_done(rt, "client", done);
  std::sort(samples.begin(), samples.end());
  return fmt::format(
      R"("workload":"request_reply_latency","requests":{},"warmup":{},)"
      R"("metrics":{{"p50_us":{:.3f},"p99_us":{:.3f},"p999_us":{:.3f},"mean_us":{:.3f},"other_cpu_pct":{:.1f}}})",
      requests, warmup, percentile_us(samples, 0.5), percentile_us(samples, 0.99),
      percentile_us(samples, 0.999), mean_us(samples), other_cpu);
}

class fan_worker : public aise::agent {
 public:
  fan_worker() {
    on("n",
       [this](const aise::message& m) { (void)send(m.sender, "r", m.payload.get<int>() + 1); });
  }
};

class coordinator : public aise::agent {
 public:
  coordinator(int workers, int warmup, int total, std::vector<std::int64_t>& samples,
              done_latch& done)
      : workers_(workers), warmup_(warmup), total_(total), samples_(samples), done_(done) {
    on("start", [this](const aise::message&) { start_round(clock_type::now()); });
    on("r", [this](const aise::message&) {
      if (--pending_ > 0) return;
      const auto now = clock_type::now();
      if (round_ >= warmup_) {
        samples_.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - round_start_).count());
      }
      if (++round_ < total_) {
        start_round(now);
      } else {
        done_.count_down();
      }
    });
  }

 private:
  void start_round(clock_type::time_point now) {
    round_start_ = now;
    pending_ = workers_;
    for (int i = 0; i < workers_; ++i) (void)send(fmt::format("worker-{}", i), "n", round_);
  }
  int workers_;
  int warmup_;
  int total_;
  int round_ = 0;
  int pending_ = 0;
  clock_type::time_point round_start_;
  std::vector<std::int64_t>& samples_;
  done_latch& done_;
};

std::string run_fanout_fanin(std::size_t threads, int rounds, int warmup, int workers) {
  aise::runtime rt(options(threads));
  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(rounds));
  done_latch done(1);
  for (int i = 0; i < workers; ++i) {
    if (!rt.spawn<fan_worker>({.name = fmt::format("worker-{}", i)})) fail("spawn worker");
  }
  if (!rt.spawn<coordinator>({.name = "coordinator"}, workers, warmup, warmup + rounds, samples,
                             done)) {
    fail("spawn coordinator");
  }
  const double other_cpu = run_to_done(rt, "coordinator", done);
  const double us = mean_us(samples);
  std::sort(samples.begin(), samples.end());
  return fmt::format(
      R"("workload":"fanout_fanin","workers":{},"rounds":{},"warmup":{},)"
      R"("metrics":{{"us_per_round":{:.3f},"p50_us":{:.3f},"p99_us":{:.3f},"other_cpu_pct":{:.1f}}})",
      workers, rounds, warmup, us, percentile_us(samples, 0.5), percentile_us(samples, 0.99),
      other_cpu);
}

// ---- orchestrator workloads ----------------------------------------------------

// Returns 1 + the sum of its dependencies' results (so a → b → c gives 3,
// and five workers + join gives 5 + 1 = 6).
class step_agent : public aise::agent {
 public:
  step_agent() {
    on_task("step", [](aise::task_context& ctx) -> aise::result<nlohmann::json> {
      int sum = 0;
      for (const auto& [id, r] : ctx.dependency_results()) sum += r.get<int>();
      return sum + 1;
    });
  }
};

// History the in-memory store keeps in the DAG workloads: the last 1,000
// finished tasks and 10,000 events (bounded, so the store's working set
// stays in cache, as in a long-running process with retention), or
// everything ("keep_all": memory grows by about 4.5 KB per chain3 run).
constexpr std::uint64_t kept_tasks = 1000;
constexpr std::uint64_t kept_events = 10000;

std::string run_dag(const char* name, int runs, int warmup, bool fan, bool keep_all) {
  boost::asio::io_context io(1);
  // The host keeps its io_context from running out of work between runs.
  auto guard = boost::asio::make_work_guard(io);
  auto opts = options(1);
  aise::runtime rt(io, opts);
  aise::memory_store_options store_options;
  store_options.retention = {};
  if (!keep_all) {
    store_options.retention.max_finished_tasks = kept_tasks;
    store_options.retention.max_events_per_project = kept_events;
  }
  aise::orchestrator_options orch_options;
  orch_options.store = aise::make_memory_store(store_options);
  aise::orchestrator orch(rt, orch_options);
  if (!orch.register_kind("step", [] { return std::make_unique<step_agent>(); })) fail("register");
  if (!orch.spawn({.kind = "step", .name = "stepper", .concurrency = 8})) fail("spawn");
  while (!rt.has_agent("stepper")) io.run_one();
  io.poll();

  const int expected = fan ? 6 : 3;
  auto one_run = [&](int i) {
    std::vector<aise::task_spec> specs;
    const std::string prefix = fmt::format("r{}-", i);
    if (fan) {
      specs.resize(6);
      for (int w = 0; w < 5; ++w) {
        specs[w].id = prefix + static_cast<char>('a' + w);
        specs[w].kind = "step";
        specs[5].depends_on.push_back(specs[w].id);
      }
      specs[5].id = prefix + "join";
      specs[5].kind = "step";
    } else {
      specs.resize(3);
      for (int s = 0; s < 3; ++s) {
        specs[s].id = prefix + static_cast<char>('a' + s);
        specs[s].kind = "step";
        if (s > 0) specs[s].depends_on.push_back(specs[s - 1].id);
      }
    }
    const std::string last = specs.back().id;
    auto ids = orch.submit_all(std::move(specs));
    if (!ids) fail("submit: " + ids.error().describe());
    bool finished = false;
    int result = 0;
    if (!orch.when_done(last, [&](const aise::task& t) {
          finished = true;
          result = t.result.value_or(nullptr).is_number() ? t.result->get<int>() : -1;
        })) {
      fail("when_done");
    }
    const auto limit = clock_type::now() + wait_deadline;
    while (!finished) {
      io.run_one_for(std::chrono::milliseconds(100));
      if (clock_type::now() > limit) fail("timed out waiting for a DAG run");
    }
    if (result != expected) fail(fmt::format("wrong result {} (expected {})", result, expected));
  };
  for (int i = 0; i < warmup; ++i) one_run(-1 - i);
  const auto cpu0 = take_cpu();
  const auto t0 = clock_type::now();
  for (int i = 0; i < runs; ++i) one_run(i);
  const double secs = seconds_between(t0, clock_type::now());
  const auto cpu1 = take_cpu();
  return fmt::format(
      R"("workload":"{}","runs":{},"warmup":{},"tasks_per_run":{},"store":"memory",)"
      R"("kept_finished_tasks":{},"kept_events":{},)"
      R"("metrics":{{"us_per_run":{:.3f},"runs_per_s":{:.0f},"other_cpu_pct":{:.1f}}})",
      name, runs, warmup, fan ? 6 : 3,
      keep_all ? std::string("\"all\"") : std::to_string(kept_tasks),
      keep_all ? std::string("\"all\"") : std::to_string(kept_events), secs * 1e6 / runs,
      runs / secs, other_cpu_pct(cpu0, cpu1));
}

int arg_or(int argc, char** argv, int index, int fallback) {
  return index < argc ? std::atoi(argv[index]) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t threads = std::max(1U, std::thread::hardware_concurrency());
  int i = 1;
  if (i + 1 < argc && std::string(argv[i]) == "--threads") {
    threads = static_cast<std::size_t>(std::atoi(argv[i + 1]));
    i += 2;
  }
  if (i >= argc) {
    std::fprintf(stderr,
                 "usage: aise_bench [--threads N] pingpong <pairs> [total] | request_reply_latency "
                 "[requests] [warmup] | fanout_fanin [rounds] [warmup] [workers] | chain3 [runs] "
                 "[warmup] | chain3_keep_all [runs] [warmup] | fanout5 [runs] [warmup]\n");
    return 2;
  }
  const std::string workload = argv[i];
  std::string body;
  if (workload == "pingpong") {
    body = run_pingpong(threads, arg_or(argc, argv, i + 1, 1), arg_or(argc, argv, i + 2, 2000000));
  } else if (workload == "request_reply_latency") {
    body = run_request_reply(threads, arg_or(argc, argv, i + 1, 200000),
                             arg_or(argc, argv, i + 2, 20000));
  } else if (workload == "fanout_fanin") {
    body = run_fanout_fanin(threads, arg_or(argc, argv, i + 1, 200000),
                            arg_or(argc, argv, i + 2, 10000), arg_or(argc, argv, i + 3, 5));
  } else if (workload == "chain3") {
    body = run_dag("chain3", arg_or(argc, argv, i + 1, 100000), arg_or(argc, argv, i + 2, 2000),
                   false, false);
  } else if (workload == "chain3_keep_all") {
    body = run_dag("chain3_keep_all", arg_or(argc, argv, i + 1, 100000),
                   arg_or(argc, argv, i + 2, 2000), false, true);
  } else if (workload == "fanout5") {
    body = run_dag("fanout5", arg_or(argc, argv, i + 1, 50000), arg_or(argc, argv, i + 2, 1000),
                   true, false);
  } else {
    std::fprintf(stderr, "aise_bench: unknown workload '%s'\n", workload.c_str());
    return 2;
  }
  std::printf("{\"peer\":\"aise\",\"version\":\"%s\",%s,\"threads\":%zu,\"cores\":%u}\n", "0.1.0",
              body.c_str(), threads, std::thread::hardware_concurrency());
  return 0;
}
