// WebSocket fan-out of aise-server (bench/run_ws.sh): C clients subscribed
// to one project on /api/v1/ws, events produced at R per second for S
// seconds; per event and client, the delivery latency (production to
// receipt), and whether every client got every event exactly once.
//
// Usage: aise_ws_bench [--clients C] [--rate R] [--seconds S]
//                      [--io-threads N] [--client-threads N] [--batch-ms M]
//
// Everything runs in this one process (the server, the clients, the
// producer), so the machine's cores are shared by the server and the
// clients; the JSON line says how many there are.
//
// Production goes through the path the server's events take in
// production: `orchestrator::submit_all` of tasks (no agents: each task is
// stored with its events, task.pending and task.queued, in one store call)
// on the in-memory store, whose listener hands them to the server's fan-out.
// The in-memory store keeps the store's cost out of the figure (the SQL
// store's throughput is bench/run_sql.sh's subject). Every M ms (default 1)
// the producer submits the tasks due by then; it knows which sequences a
// submission will take (it is the only writer of the project), records the
// production time of each in a table before submitting, and checks the
// sequences afterwards. A client takes an event's production time from that
// table by the event's sequence (client and producer share the process).
//
// Output: one JSON line: delivered/expected (over every client), lost,
// duplicates, out of order, p50/p99/p999/max delivery latency in ms, the
// achieved event rate, CPU of this process and of the others.
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/store.hpp>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fmt/core.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <string>
#include <thread>
#include <vector>

#include "bench_cpu.hpp"
#include "http_server.hpp"

namespace {

namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
      .count();
}

struct options {
  std::size_t clients = 1000;
  std::size_t rate = 10'000;  // events per second
  double seconds = 10;
  std::size_t io_threads = 1;
  std::size_t client_threads = 1;
  int batch_ms = 1;
};

// Latencies in microseconds, 0 … 10 s, one counter per microsecond.
struct histogram {
  static constexpr std::size_t size = 10'000'000;
  std::vector<std::uint32_t> counts = std::vector<std::uint32_t>(size + 1, 0);
  std::uint64_t total = 0;
  std::int64_t max_us = 0;
  void add(std::int64_t us) {
    us = std::max<std::int64_t>(us, 0);
    max_us = std::max(max_us, us);
    ++counts[std::min<std::size_t>(static_cast<std::size_t>(us), size)];
    ++total;
  }
  void merge(const histogram& o) {
    for (std::size_t i = 0; i <= size; ++i) counts[i] += o.counts[i];
    total += o.total;
    max_us = std::max(max_us, o.max_us);
  }
  [[nodiscard]] double percentile_ms(double p) const {
    if (total == 0) return 0;
    auto want = static_cast<std::uint64_t>(p * static_cast<double>(total));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i <= size; ++i) {
      seen += counts[i];
      if (seen > want) return static_cast<double>(i) / 1000.0;
    }
    return static_cast<double>(size) / 1000.0;
  }
};

// What the clients of one thread share.
struct client_group {
  net::io_context ioc{1};
  histogram latencies;
  std::atomic<std::uint64_t> received{0};
  std::uint64_t duplicates = 0;  // a sequence at or below the last one
  std::uint64_t gaps = 0;        // a sequence beyond the next one
};

// One subscribed client; it reads forever and checks the sequences.
class bench_client : public std::enable_shared_from_this<bench_client> {
 public:
  bench_client(client_group& group, const std::vector<std::atomic<std::int64_t>>& produced_at)
      : group_(group), produced_at_(produced_at), ws_(group.ioc) {}

  // Synchronous set-up (before the io thread runs): connect, upgrade,
  // subscribe; the "subscribed" reply gives the first sequence.
  bool start(std::uint16_t port, const std::string& project) {
    beast::error_code ec;
    beast::get_lowest_layer(ws_).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port),
                                         ec);
    if (ec) return false;
    ws_.handshake("127.0.0.1", "/api/v1/ws", ec);
    if (ec) return false;
    std::string sub = json{{"type", "subscribe"}, {"project", project}}.dump();
    ws_.write(net::buffer(sub), ec);
    if (ec) return false;
    ws_.read(buffer_, ec);
    if (ec) return false;
    auto reply = json::parse(beast::buffers_to_string(buffer_.data()), nullptr, false);
    buffer_.consume(buffer_.size());
    if (reply.is_discarded() || reply["type"] != "subscribed") return false;
    next_ = reply["after"].get<std::uint64_t>() + 1;
    return true;
  }

  void read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) {
        self->closed_ = true;
        self->close_code_ = self->ws_.reason().code;
        return;
      }
      self->on_frame();
      self->read();
    });
  }

  [[nodiscard]] std::uint64_t next() const { return next_; }
  [[nodiscard]] bool closed() const { return closed_; }
  [[nodiscard]] int close_code() const { return close_code_; }
  void close() {
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().close(ec);
  }

 private:
  // One JSON object per line; the top-level "sequence" is the last one in
  // the line (keys are sorted: "event" with its own sequence comes first).
  void on_frame() {
    const auto now = now_ns();
    std::string_view text(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    while (!text.empty()) {
      auto nl = text.find('\n');
      auto line = text.substr(0, nl);
      text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
      constexpr std::string_view key = "\"sequence\":";
      auto at = line.rfind(key);
      if (at == std::string_view::npos) continue;
      std::uint64_t seq = std::strtoull(line.data() + at + key.size(), nullptr, 10);
      if (seq < next_) {
        ++group_.duplicates;
        continue;
      }
      if (seq > next_) ++group_.gaps;
      next_ = seq + 1;
      group_.received.fetch_add(1, std::memory_order_relaxed);
      if (seq < produced_at_.size()) {
        auto t0 = produced_at_[seq].load(std::memory_order_acquire);
        if (t0 != 0) group_.latencies.add((now - t0) / 1000);
      }
    }
    buffer_.consume(buffer_.size());
  }

  client_group& group_;
  const std::vector<std::atomic<std::int64_t>>& produced_at_;
  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
  std::uint64_t next_ = 0;
  bool closed_ = false;
  int close_code_ = 0;
};

bool parse_args(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = value();
    if (v == nullptr) return false;
    if (a == "--clients") {
      o.clients = std::strtoull(v, nullptr, 10);
    } else if (a == "--rate") {
      o.rate = std::strtoull(v, nullptr, 10);
    } else if (a == "--seconds") {
      o.seconds = std::strtod(v, nullptr);
    } else if (a == "--io-threads") {
      o.io_threads = std::strtoull(v, nullptr, 10);
    } else if (a == "--client-threads") {
      o.client_threads = std::strtoull(v, nullptr, 10);
    } else if (a == "--batch-ms") {
      o.batch_ms = std::atoi(v);
    } else {
      return false;
    }
  }
  return o.clients > 0 && o.rate > 0 && o.seconds > 0 && o.io_threads > 0 && o.client_threads > 0 &&
         o.batch_ms > 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  if (!parse_args(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: aise_ws_bench [--clients C] [--rate EVENTS_PER_S] [--seconds S] "
                 "[--io-threads N] [--client-threads N] [--batch-ms M]\n");
    return 2;
  }
  const std::string project = "bench";

  aise::runtime_options rto;
  rto.threads = 1;
  rto.logger = spdlog::null_logger_mt("ws_bench");
  aise::runtime rt(rto);
  aise::memory_store_options mso;
  mso.retention = {};  // keep every event: clients could resume
  aise::orchestrator_options oo;
  oo.store = aise::make_memory_store(mso);
  aise::orchestrator orch(rt, oo);
  aise::project p;
  p.id = project;
  p.name = project;
  if (!orch.store().create_project(p)) return 1;

  aise::server::http_server_options http;
  http.host = "127.0.0.1";
  http.port = 0;
  http.io_threads = o.io_threads;
  http.handler_threads = 2;
  http.websocket.events = &orch;
  aise::server::http_server server(
      [](const aise::server::request&) {
        return aise::server::response{404, "{}", {}};
      },
      http);
  if (auto started = server.start(); !started) {
    std::fprintf(stderr, "%s\n", started.error().describe().c_str());
    return 1;
  }

  // Events per task (pending + queued), measured once.
  auto submit = [&](std::size_t n) {
    std::vector<aise::task_spec> specs(n);
    for (auto& s : specs) {
      s.project = project;
      s.kind = "noop";
    }
    return orch.submit_all(std::move(specs));
  };
  if (!submit(1)) return 1;
  const std::uint64_t per_task = *orch.store().last_sequence(project);

  const auto total_events =
      static_cast<std::uint64_t>(static_cast<double>(o.rate) * o.seconds) + 16 * per_task;
  std::vector<std::atomic<std::int64_t>> produced_at(total_events + 64 * per_task + 1);

  // Clients, spread over the client threads.
  std::vector<std::unique_ptr<client_group>> groups;
  for (std::size_t t = 0; t < o.client_threads; ++t)
    groups.push_back(std::make_unique<client_group>());
  std::vector<std::shared_ptr<bench_client>> clients;
  for (std::size_t i = 0; i < o.clients; ++i) {
    auto c = std::make_shared<bench_client>(*groups[i % o.client_threads], produced_at);
    if (!c->start(server.port(), project)) {
      std::fprintf(stderr, "client %zu could not subscribe\n", i);
      return 1;
    }
    c->read();
    clients.push_back(std::move(c));
  }
  std::vector<std::thread> client_threads;
  for (auto& g : groups) {
    client_threads.emplace_back([&g] { g->ioc.run(); });
  }
  const std::uint64_t first = *orch.store().last_sequence(project) + 1;

  // Produce: every batch_ms, the tasks due by then.
  aise::bench::system_ticks sys0{};
  aise::bench::read_system_ticks(sys0);
  const double cpu0 = aise::bench::process_cpu_seconds(false);
  const auto tasks_per_s = static_cast<double>(o.rate) / static_cast<double>(per_task);
  const auto total_tasks = static_cast<std::uint64_t>(tasks_per_s * o.seconds);
  std::uint64_t next_seq = first;
  std::uint64_t submitted = 0;
  bool failed = false;
  const auto start = clock_type::now();
  while (submitted < total_tasks && !failed) {
    auto due = std::min<std::uint64_t>(
        total_tasks,
        static_cast<std::uint64_t>(
            tasks_per_s * std::chrono::duration<double>(clock_type::now() - start).count()));
    if (due > submitted) {
      const auto n = due - submitted;
      const auto t0 = now_ns();
      for (std::uint64_t s = next_seq; s < next_seq + n * per_task && s < produced_at.size(); ++s) {
        produced_at[s].store(t0, std::memory_order_release);
      }
      if (!submit(n)) failed = true;
      next_seq += n * per_task;
      submitted = due;
    }
    std::this_thread::sleep_until(clock_type::now() + std::chrono::milliseconds(o.batch_ms));
  }
  const double produce_s = std::chrono::duration<double>(clock_type::now() - start).count();
  const std::uint64_t last = *orch.store().last_sequence(project);
  if (failed || last + 1 != next_seq) {
    std::fprintf(stderr, "production failed or sequences differ: last %llu, expected %llu\n",
                 static_cast<unsigned long long>(last),
                 static_cast<unsigned long long>(next_seq - 1));
    return 1;
  }
  const std::uint64_t expected_each = last - first + 1;
  const std::uint64_t expected = expected_each * o.clients;

  // Wait for delivery (at most 30 s after production ended).
  const auto drain_deadline = clock_type::now() + std::chrono::seconds(30);
  auto delivered = [&] {
    std::uint64_t n = 0;
    for (auto& g : groups) n += g->received.load();
    return n;
  };
  while (delivered() < expected && clock_type::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const double cpu1 = aise::bench::process_cpu_seconds(false);
  aise::bench::system_ticks sys1{};
  aise::bench::read_system_ticks(sys1);
  const double wall_s = std::chrono::duration<double>(clock_type::now() - start).count();

  // Clients the server closed while measuring (4008: slow consumer).
  std::size_t closed_early = 0;
  int a_close_code = 0;
  for (auto& g : groups) g->ioc.stop();
  for (auto& t : client_threads) t.join();
  for (auto& c : clients) {
    if (c->closed()) {
      ++closed_early;
      a_close_code = c->close_code();
    }
  }
  server.stop();
  server.wait(std::chrono::seconds(5));
  for (auto& c : clients) c->close();

  histogram all;
  std::uint64_t duplicates = 0;
  std::uint64_t gaps = 0;
  for (auto& g : groups) {
    all.merge(g->latencies);
    duplicates += g->duplicates;
    gaps += g->gaps;
  }
  const std::uint64_t got = delivered();
  const double ticks = aise::bench::ticks_per_second();
  const double machine_busy_s = static_cast<double>(sys1.busy - sys0.busy) / ticks;
  const double machine_s = static_cast<double>(sys1.total - sys0.total) / ticks;
  const double own_s = cpu1 - cpu0;
  json out{
      {"bench", "ws_fanout"},
      {"clients", o.clients},
      {"target_events_per_s", o.rate},
      {"events_per_s", std::round(static_cast<double>(expected_each) / produce_s)},
      {"events", expected_each},
      {"seconds", std::round(produce_s * 100) / 100},
      {"deliveries_per_s", std::round(static_cast<double>(got) / wall_s)},
      {"delivered", got},
      {"expected", expected},
      {"lost", expected > got ? expected - got : 0},
      {"duplicates", duplicates},
      {"gaps", gaps},
      {"closed_clients", closed_early},
      {"close_code", a_close_code},
      {"p50_ms", all.percentile_ms(0.50)},
      {"p99_ms", all.percentile_ms(0.99)},
      {"p999_ms", all.percentile_ms(0.999)},
      {"max_ms", static_cast<double>(all.max_us) / 1000.0},
      {"io_threads", o.io_threads},
      {"client_threads", o.client_threads},
      {"cores", std::thread::hardware_concurrency()},
      {"cpu_pct", std::round(100 * own_s / wall_s)},
      {"other_cpu_pct",
       machine_s > 0 ? std::round(100 * std::max(0.0, machine_busy_s - own_s) / wall_s) : 0.0},
  };
  std::printf("%s\n", out.dump().c_str());
  (void)rt.shutdown();
  return got == expected && duplicates == 0 && gaps == 0 ? 0 : 3;
}
