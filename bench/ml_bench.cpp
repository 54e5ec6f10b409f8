// ML hook benchmarks (bench/run_ml.sh), each side by side with its
// reference in the same process run:
//
//   overhead   one batch-1 call through ml::model::run against the same
//              TorchScript module's forward() called directly with a
//              torch::Tensor already made (what a LibTorch user writes);
//              prints both latencies and overhead_pct = hook / direct - 1.
//   batching   C caller threads each making batch-1 calls: through
//              ml::make_batched against the same model called unbatched
//              from the same threads; prints calls/s of both and the ratio.
//   tokenizer  the WordPiece tokenizer over a generated English corpus
//              (ASCII plus accented words and punctuation); prints MB/s.
//
// The model is a transformer-sized feed-forward block, 768 -> 3072 (GELU)
// -> 768, with fixed random weights, saved as TorchScript in a temporary
// directory before the clock starts.
//
// usage: aise_ml_bench overhead|batching|tokenizer [--calls N] [--callers C]
#include <aise/ml.hpp>
#include <aise/torch.hpp>
#include <aise/wordpiece.hpp>

#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <torch/script.h>
#include <unistd.h>
#include <vector>

#include "bench_cpu.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "aise_ml_bench: %s\n", what.c_str());
  std::exit(1);
}

struct config {
  std::string workload;
  long calls = 0;
  int callers = 16;
};

constexpr std::int64_t width = 768;

fs::path save_block(const fs::path& dir) {
  ::torch::manual_seed(1);
  ::torch::jit::Module m("FeedForward");
  m.register_parameter("w1", ::torch::randn({width, 4 * width}) * 0.02, false);
  m.register_parameter("b1", ::torch::zeros({4 * width}), false);
  m.register_parameter("w2", ::torch::randn({4 * width, width}) * 0.02, false);
  m.register_parameter("b2", ::torch::zeros({width}), false);
  m.define(R"(
def forward(self, x):
    h = torch.gelu(torch.matmul(x, self.w1) + self.b1)
    return torch.matmul(h, self.w2) + self.b2
)");
  const fs::path file = dir / "block.pt";
  m.save(file.string());
  return file;
}

std::vector<float> input_row(int seed) {
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::normal_distribution<float> d;
  std::vector<float> v(width);
  for (auto& x : v) x = d(rng);
  return v;
}

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

struct cpu_window {
  aise::bench::system_ticks sys0;
  double self0 = 0;
  clock_type::time_point t0;
  void start() {
    aise::bench::read_system_ticks(sys0);
    self0 = aise::bench::process_cpu_seconds(false);
    t0 = clock_type::now();
  }
  double other_pct() const {
    aise::bench::system_ticks sys1;
    aise::bench::read_system_ticks(sys1);
    const double self = aise::bench::process_cpu_seconds(false) - self0;
    const double ticks = static_cast<double>(sys1.total - sys0.total);
    if (ticks <= 0) return 0;
    const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double busy = static_cast<double>(sys1.busy - sys0.busy) / hz - self;
    return std::max(0.0, 100.0 * busy / (ticks / hz));
  }
};

void overhead(const config& c, const fs::path& file) {
  auto backend = aise::torch::make_torchscript_backend();
  auto hooked = backend->load(file, {});
  if (!hooked) fail(hooked.error().describe());
  auto direct = ::torch::jit::load(file.string());
  direct.eval();
  const auto row = input_row(1);
  const aise::ml::tensors in{*aise::ml::tensor::of({1, width}, std::vector<float>(row))};
  const ::torch::Tensor t = ::torch::from_blob(const_cast<float*>(row.data()), {1, width}).clone();
  const long n = c.calls > 0 ? c.calls : 2000;
  // Warm both (the profiling executor optimises after a few runs), then
  // alternate blocks of calls so drifts hit both sides alike.
  for (int i = 0; i < 50; ++i) {
    (void)(*hooked)->run(in);
    c10::InferenceMode g;
    (void)direct.forward({t});
  }
  std::vector<double> hook_us, direct_us;
  hook_us.reserve(static_cast<std::size_t>(n));
  direct_us.reserve(static_cast<std::size_t>(n));
  cpu_window w;
  w.start();
  constexpr long block = 50;
  for (long done = 0; done < n; done += block) {
    for (long i = 0; i < block; ++i) {
      const auto t0 = clock_type::now();
      auto out = (*hooked)->run(in);
      hook_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
      if (!out) fail(out.error().describe());
    }
    for (long i = 0; i < block; ++i) {
      const auto t0 = clock_type::now();
      c10::InferenceMode g;
      auto out = direct.forward({t}).toTensor();
      direct_us.push_back(
          std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
      if (out.numel() != width) fail("direct forward: unexpected output");
    }
  }
  const double other = w.other_pct();
  const double h50 = pct(hook_us, 0.5), d50 = pct(direct_us, 0.5);
  std::printf(
      "{\"workload\":\"overhead\",\"model\":\"ffn_768_3072\",\"batch\":1,\"calls\":%ld,"
      "\"hook_p50_us\":%.2f,\"direct_p50_us\":%.2f,\"hook_p90_us\":%.2f,\"direct_p90_us\":%.2f,"
      "\"overhead_pct\":%.2f,\"torch_threads\":%d,\"other_cpu_pct\":%.1f}\n",
      n, h50, d50, pct(hook_us, 0.9), pct(direct_us, 0.9), 100.0 * (h50 / d50 - 1.0),
      at::get_num_threads(), other);
}

void batching(const config& c, const fs::path& file) {
  auto backend = aise::torch::make_torchscript_backend();
  auto plain = backend->load(file, {});
  if (!plain) fail(plain.error().describe());
  auto batched = aise::ml::make_batched(*plain, {.max_batch = static_cast<std::size_t>(c.callers),
                                                 .max_wait = std::chrono::microseconds(2000)});
  if (!batched) fail(batched.error().describe());
  const long per_caller = c.calls > 0 ? c.calls : 100;
  auto run_side = [&](aise::ml::model& m) {
    std::vector<std::thread> threads;
    std::atomic<long> failures{0};
    const auto t0 = clock_type::now();
    for (int k = 0; k < c.callers; ++k) {
      threads.emplace_back([&, k] {
        const aise::ml::tensors in{*aise::ml::tensor::of({1, width}, input_row(k))};
        for (long i = 0; i < per_caller; ++i) {
          if (!m.run(in)) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    if (failures.load() != 0) fail("calls failed");
    return static_cast<double>(per_caller * c.callers) /
           std::chrono::duration<double>(clock_type::now() - t0).count();
  };
  run_side(**plain);  // warm-up
  run_side(**batched);
  cpu_window w;
  w.start();
  const double unbatched = run_side(**plain);
  const double merged = run_side(**batched);
  const double other = w.other_pct();
  const auto s = (*batched)->stats();
  std::printf(
      "{\"workload\":\"batching\",\"model\":\"ffn_768_3072\",\"callers\":%d,\"calls\":%ld,"
      "\"unbatched_calls_per_s\":%.0f,\"batched_calls_per_s\":%.0f,\"speedup\":%.2f,"
      "\"mean_batch\":%.2f,\"torch_threads\":%d,\"other_cpu_pct\":%.1f}\n",
      c.callers, per_caller * c.callers, unbatched, merged, merged / unbatched,
      static_cast<double>(s.rows) / static_cast<double>(std::max<std::uint64_t>(1, s.batches)),
      at::get_num_threads(), other);
}

void tokenizer(const config& c) {
  // A corpus of issue-tracker English with some accents and punctuation.
  const std::vector<std::string> words{
      "the",     "agent",    "fixed",   "a",      "bug",     "in",       "parser",  "when",
      "input",   "contains", "unicode", "café",   "naïve",   "résumé",   "tests",   "pass",
      "now",     "review",   "request", "merge",  "branch",  "Main",     "Build",   "failed",
      "because", "of",       "timeout", "(30s)",  "retry:",  "done.",    "See",     "#1234,",
      "deploy",  "to",       "staging", "Zürich", "server;", "rollback", "if",      "errors",
      "occur!",  "Refactor", "module",  "x86_64", "uses",    "SIMD",     "faster?", "yes"};
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::size_t> pick(0, words.size() - 1);
  std::vector<std::string> lines;
  std::size_t bytes = 0;
  const std::size_t want = c.calls > 0 ? static_cast<std::size_t>(c.calls) : 8u << 20;
  while (bytes < want) {
    std::string line;
    for (int i = 0; i < 24; ++i) line += (i ? " " : "") + words[pick(rng)];
    bytes += line.size();
    lines.push_back(std::move(line));
  }
  // Vocabulary: special tokens, punctuation, every lower-cased, unaccented
  // word and its pieces, so the greedy matching does real work.
  std::set<std::string> v{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "(",      ")",
                          ":",     ";",     ".",     ",",     "#",      "!",
                          "?",     "_",     "cafe",  "naive", "resume", "zurich"};
  for (std::string w : words) {
    std::string clean;
    for (char ch : w) {
      if (std::isalnum(static_cast<unsigned char>(ch)) != 0)
        clean += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    if (clean.size() > 3) {
      v.insert(clean.substr(0, 3));
      v.insert("##" + clean.substr(3));
    } else if (!clean.empty()) {
      v.insert(clean);
    }
  }
  auto tok = aise::ml::wordpiece_tokenizer::from_tokens({v.begin(), v.end()});
  if (!tok) fail(tok.error().describe());
  std::size_t tokens = 0;
  for (int i = 0; i < 200; ++i)
    (void)tok->tokenize(lines[static_cast<std::size_t>(i) % lines.size()]);
  cpu_window w;
  w.start();
  const auto t0 = clock_type::now();
  for (const auto& line : lines) {
    auto t = tok->tokenize(line);
    if (!t) fail(t.error().describe());
    tokens += t->size();
  }
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::printf(
      "{\"workload\":\"tokenizer\",\"bytes\":%zu,\"lines\":%zu,\"tokens\":%zu,\"mb_per_s\":%.2f,"
      "\"tokens_per_s\":%.0f,\"other_cpu_pct\":%.1f}\n",
      bytes, lines.size(), tokens, static_cast<double>(bytes) / 1e6 / secs,
      static_cast<double>(tokens) / secs, w.other_pct());
}

}  // namespace

int main(int argc, char** argv) {
  config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--calls" && i + 1 < argc) {
      c.calls = std::atol(argv[++i]);
    } else if (a == "--callers" && i + 1 < argc) {
      c.callers = std::atoi(argv[++i]);
    } else if (a.rfind("--", 0) != 0 && c.workload.empty()) {
      c.workload = a;
    } else {
      fail("usage: aise_ml_bench overhead|batching|tokenizer [--calls N] [--callers C]");
    }
  }
  if (c.workload == "tokenizer") {
    tokenizer(c);
    return 0;
  }
  if (c.workload != "overhead" && c.workload != "batching")
    fail("usage: aise_ml_bench overhead|batching|tokenizer [--calls N] [--callers C]");
  char tmpl[] = "/tmp/aise-ml-bench-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) fail("mkdtemp");
  const fs::path file = save_block(dir);
  if (c.workload == "overhead") {
    overhead(c, file);
  } else {
    batching(c, file);
  }
  fs::remove_all(dir);
  return 0;
}
