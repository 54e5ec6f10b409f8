#pragma once
/// @file
/// A small metrics registry: counters, gauges and histograms (fixed
/// buckets) with labels, and gauges or counters computed at scrape time;
/// `registry::expose` writes them in the Prometheus text format (version
/// 0.0.4). aise-server serves it at /metrics; a host application or an
/// aise-worker can expose the same registry through its own endpoint.
///
/// Contract:
/// - Thread safety: every member may be called from any thread at once.
///   Updating a series (`inc`, `set`, `observe`) is a few relaxed atomic
///   operations; finding a series by its label values (`family::with`)
///   takes a shared lock (an exclusive one only the first time a label set
///   is seen). Keep a reference to a series you update often.
/// - Ownership: the registry owns its families and their series; references
///   returned by `counter`, `gauge`, `histogram` and `with` stay valid as
///   long as the registry lives. Scrape-time functions (`gauge_fn`,
///   `collect`) are kept and called by `expose` (on the calling thread,
///   without the registry's lock held); whatever they capture must outlive
///   the registry or at least its last `expose`.
/// - Errors: a malformed metric or label name, a name registered twice with
///   another type, labels or buckets, or a label set of the wrong size are
///   programming errors: they throw `std::invalid_argument`. A scrape-time
///   function that throws is skipped in that scrape (its samples are
///   missing), `expose` itself never throws but for out of memory.
/// - Cardinality: a family keeps at most `max_series` label sets (1,000 by
///   default); further label sets all land in one series whose label values
///   are "_overflow_", so a bug cannot grow memory without bound.

#include <aise/clock.hpp>
#include <aise/core_export.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace aise {
class orchestrator;
}

namespace aise::metrics {

/// Label values, in the order of the family's label names.
using label_values = std::vector<std::string>;

/// A monotonically increasing count.
class AISE_CORE_EXPORT counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<std::uint64_t> value_{0};
};

/// A value that goes up and down.
class AISE_CORE_EXPORT gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double d) noexcept;
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

/// Observations counted in fixed buckets (upper bounds, ascending), with
/// their sum and count. Exposed cumulatively, as Prometheus wants.
class AISE_CORE_EXPORT histogram {
 public:
  /// `bounds` ascending and finite; an implicit +Inf bucket follows.
  explicit histogram(std::vector<double> bounds);
  void observe(double v) noexcept;

  /// A consistent-enough reading: per-bucket counts (not cumulative, the
  /// +Inf one last), their total, and the sum.
  struct snapshot {
    std::vector<std::uint64_t> buckets;
    std::uint64_t count = 0;
    double sum = 0;
  };
  [[nodiscard]] snapshot read() const;
  [[nodiscard]] const std::vector<double>& bounds() const noexcept { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

/// Default latency buckets in seconds: 1 ms … 10 s.
AISE_CORE_EXPORT std::vector<double> default_latency_buckets();

/// The series of one metric name, one per label set.
template <class Series>
class family {
 public:
  family(std::vector<std::string> label_names, std::size_t max_series,
         std::function<std::unique_ptr<Series>()> make)
      : label_names_(std::move(label_names)), max_series_(max_series), make_(std::move(make)) {}

  /// The series for `values` (as many as the family has label names, else
  /// std::invalid_argument), created at 0 when new.
  Series& with(const label_values& values);
  /// The series without labels (a family with no label names).
  Series& get() { return with({}); }

  [[nodiscard]] const std::vector<std::string>& label_names() const noexcept {
    return label_names_;
  }
  /// Calls `fn(values, series)` for each series, ordered by label values,
  /// under the family's shared lock.
  template <class Fn>
  void for_each(Fn&& fn) const {
    std::shared_lock lock(mutex_);
    for (const auto& [values, series] : series_) fn(values, *series);
  }

 private:
  std::vector<std::string> label_names_;
  std::size_t max_series_;
  std::function<std::unique_ptr<Series>()> make_;
  mutable std::shared_mutex mutex_;
  std::map<label_values, std::unique_ptr<Series>> series_;
};

/// One sample of a scrape-time metric: label values and value.
struct AISE_CORE_EXPORT sample {
  label_values labels;
  double value = 0;
};

/// The kinds of metric `collect` can produce at scrape time.
enum class kind { counter, gauge };

/// The registry. Non-copyable.
class AISE_CORE_EXPORT registry {
 public:
  /// `max_series`: per family (see the file comment).
  explicit registry(std::size_t max_series = 1000);
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  /// A counter family. Registering the same name again with the same type
  /// and labels returns the existing family.
  family<counter>& counter_family(std::string name, std::string help,
                                  std::vector<std::string> label_names = {});
  family<gauge>& gauge_family(std::string name, std::string help,
                              std::vector<std::string> label_names = {});
  family<histogram>& histogram_family(std::string name, std::string help,
                                      std::vector<std::string> label_names,
                                      std::vector<double> bounds = default_latency_buckets());

  /// A gauge without labels whose value `fn` returns at each scrape. A
  /// scrape-time name can be registered once (again: std::invalid_argument).
  void gauge_fn(std::string name, std::string help, std::function<double()> fn);
  /// A metric whose samples `fn` returns at each scrape (label values in
  /// the order of `label_names`). Counters must only grow.
  void collect(std::string name, std::string help, kind k, std::vector<std::string> label_names,
               std::function<std::vector<sample>()> fn);

  /// Every metric in the Prometheus text format, version 0.0.4
  /// (Content-Type `text/plain; version=0.0.4; charset=utf-8`), ordered by name.
  [[nodiscard]] std::string expose() const;

 private:
  struct entry;
  entry& add(std::string name, std::string help, int type, std::vector<std::string> label_names,
             const std::vector<double>* bounds);
  std::size_t max_series_;
  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<entry>, std::less<>> entries_;
};

/// Options of `add_orchestrator_metrics`.
struct AISE_CORE_EXPORT orchestrator_metrics_options {
  /// Store queries (task counts, agent records) are cached this long, so a
  /// scrape costs at most one GROUP BY and one agent listing per interval.
  duration cache_for = std::chrono::seconds(1);
};

/// Registers, on `reg`, the gauges of an orchestrator and its store:
/// - `aise_tasks{state}`: tasks in each state (every state, zeros
///   included), from `store::count_tasks`;
/// - `aise_task_queue_depth`: tasks queued and waiting for an agent;
/// - `aise_agents{status}`: agents supervised here by their status, plus
///   the agents the store knows that are not supervised here (workers'
///   "remote" agents, agents of earlier runs) by their stored status;
/// - `aise_store_up`: 1 when the last store query succeeded, else 0 (the
///   other gauges then show their last known values).
/// `orch` must outlive the registry's last `expose`. Call once per registry.
AISE_CORE_EXPORT void add_orchestrator_metrics(registry& reg, orchestrator& orch,
                                               orchestrator_metrics_options options = {});

// ---- implementation of the family template ----

template <class Series>
Series& family<Series>::with(const label_values& values) {
  if (values.size() != label_names_.size()) {
    throw std::invalid_argument("metrics: " + std::to_string(values.size()) + " label values for " +
                                std::to_string(label_names_.size()) + " label names");
  }
  {
    std::shared_lock lock(mutex_);
    auto it = series_.find(values);
    if (it != series_.end()) return *it->second;
  }
  std::unique_lock lock(mutex_);
  auto it = series_.find(values);
  if (it != series_.end()) return *it->second;
  if (series_.size() >= max_series_) {
    label_values overflow(values.size(), "_overflow_");
    auto& slot = series_[overflow];
    if (!slot) slot = make_();
    return *slot;
  }
  auto& slot = series_[values];
  slot = make_();
  return *slot;
}

}  // namespace aise::metrics
